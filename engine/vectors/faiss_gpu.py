"""FAISS on a GPU: move an index to ``cuda:N`` and back, and exact inner-product kNN there.

``--device`` (``engine.devices``) names the device; this module applies it to FAISS. The indexes
are built, written and memory-mapped on the CPU (``engine.vectors.index``): a GPU index cannot be
written or mapped, so ``to_device`` copies one to the GPU for searching and ``to_cpu`` brings it
back. The ``faiss-cpu`` wheel has no GPU code (``faiss-gpu`` builds do): then a CUDA device
searches on the CPU, with one warning per process rather than an error, because the result is
the same and only the speed differs. (The device itself was already checked by
``engine.devices.resolve_device``; what is missing here is FAISS's GPU support.)

Supported on the GPU: flat indexes and IVF indexes (IVF-Flat, IVF-PQ). IVF-PQ uses float16
lookup tables there (``GpuClonerOptions.useFloat16``): with the default 64 sub-quantizers of 8
bits a float32 table needs 64 KiB of shared memory per block, more than a GPU gives, and float16
halves it at a recall cost far below PQ's own error. Flat and IVF-Flat stay float32, so a flat
search on the GPU gives the CPU's top-k. Other index types (HNSW) stay on the CPU with a warning.
"""

from __future__ import annotations

import threading
import warnings

import faiss
import numpy as np

from engine.devices import device_index, is_cuda

GPU_MAX_K = 2048  # the largest k FAISS's GPU k-selection supports; a larger k searches on the CPU

_resources: dict[int, object] = {}  # device number -> faiss.StandardGpuResources, one per process
_resources_lock = threading.Lock()
_warned: set[str] = set()


def gpu_available() -> bool:
    """Whether this faiss was built with GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and getattr(faiss, "get_num_gpus", lambda: 0)() > 0


def _warn_once(message: str) -> None:
    """One warning per message per process: a stage calls these functions for every batch."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


def _no_gpu_message() -> str:
    return "faiss has no GPU support (the faiss-cpu wheel; install a faiss-gpu build): FAISS runs on the CPU"


def gpu_resources(device: str) -> object:
    """The ``faiss.StandardGpuResources`` of ``cuda:N``, made once per process and device.

    Each one reserves GPU scratch memory and a CUDA stream; sharing it keeps repeated moves and
    searches from reserving more. It lives as long as the process, so GPU indexes made with it
    never outlive their resources.
    """
    number = device_index(device)
    with _resources_lock:
        if number not in _resources:
            _resources[number] = faiss.StandardGpuResources()
        return _resources[number]


def is_gpu_index(index: faiss.Index) -> bool:
    """Whether ``index`` lives on a GPU (always False for a faiss without GPU support)."""
    return hasattr(faiss, "GpuIndex") and isinstance(index, faiss.GpuIndex)


def to_device(index: faiss.Index, device: str) -> faiss.Index:
    """``index`` ready to search on ``device`` (``cpu`` or ``cuda:N``).

    On the CPU, or when faiss has no GPU support (a warning, once), the index comes back
    unchanged; so does an index already on a GPU. On ``cuda:N`` a flat or IVF index is copied
    there (``faiss.index_cpu_to_gpu``; IVF-PQ with float16 lookup tables, see the module
    docstring); an index type the GPU does not support stays on the CPU with a warning.
    """
    if not is_cuda(device) or is_gpu_index(index):
        return index
    if not gpu_available():
        _warn_once(_no_gpu_message())
        return index
    options = faiss.GpuClonerOptions()
    ivf = faiss.try_extract_index_ivf(index)  # the IVF inside (an IndexIDMap, say), as IndexIVF
    is_pq = ivf is not None and isinstance(faiss.downcast_index(ivf), faiss.IndexIVFPQ)
    options.useFloat16 = is_pq  # IVF-PQ lookup tables only: flat and IVF-Flat stay float32
    try:
        return faiss.index_cpu_to_gpu(gpu_resources(device), device_index(device), index, options)
    except RuntimeError as e:  # e.g. HNSW: FAISS has no GPU version of it
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        _warn_once(f"faiss cannot move a {type(index).__name__} to {device} ({first}): searching on the CPU")
        return index


def to_cpu(index: faiss.Index) -> faiss.Index:
    """A CPU copy of a GPU index (to write or map it); any other index comes back unchanged."""
    return faiss.index_gpu_to_cpu(index) if is_gpu_index(index) else index


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    array = np.ascontiguousarray(x, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-d (n, dim) array, not shape {array.shape}")
    return array


def knn(
    vectors: np.ndarray, queries: np.ndarray, k: int, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product kNN: the ``k`` vectors with the largest ``query . vector`` per query.

    Returns ``(sims, ids)``, float32 and int64 arrays of shape (len(queries), min(k, len(vectors))),
    each row best first; ids are row numbers of ``vectors``. For L2-normalised vectors sims are
    cosine similarities. No index is built: on ``cuda:N`` with a GPU faiss this is one brute-force
    pass on the GPU (``faiss.knn_gpu``, or a GPU ``IndexFlatIP`` where that is missing), which
    is where the GPU pays most (a dense matrix product plus k-selection); otherwise, and for
    k > ``GPU_MAX_K``, it is ``faiss.knn`` on the CPU. Both are exact and return the same ids
    up to ties and float rounding.
    """
    xb, xq = _as_matrix(vectors, "vectors"), _as_matrix(queries, "queries")
    if xb.shape[1] != xq.shape[1]:
        raise ValueError(f"vectors have dimension {xb.shape[1]} but queries {xq.shape[1]}")
    k = min(int(k), len(xb))
    if k <= 0 or len(xq) == 0:
        return np.zeros((len(xq), max(k, 0)), np.float32), np.zeros((len(xq), max(k, 0)), np.int64)
    if is_cuda(device):
        if not gpu_available():
            _warn_once(_no_gpu_message())
        elif k > GPU_MAX_K:
            _warn_once(f"k={k} is above FAISS's GPU limit of {GPU_MAX_K}: this kNN runs on the CPU")
        else:
            return _gpu_knn(xb, xq, k, device)
    sims, ids = faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT)
    return sims.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)


def _gpu_knn(xb: np.ndarray, xq: np.ndarray, k: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    """``knn`` on ``cuda:N``: ``faiss.knn_gpu`` (no index, queries and vectors tiled by FAISS), or
    a GPU ``IndexFlatIP`` for a faiss whose Python layer lacks ``knn_gpu``."""
    number, resources = device_index(device), gpu_resources(device)
    if hasattr(faiss, "knn_gpu"):
        sims, ids = faiss.knn_gpu(resources, xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT, device=number)
    else:
        config = faiss.GpuIndexFlatConfig()
        config.device = number
        flat = faiss.GpuIndexFlatIP(resources, xb.shape[1], config)
        flat.add(xb)
        sims, ids = flat.search(xq, k)
    return sims.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)


def train_index(index: faiss.Index, sample: np.ndarray, device: str = "cpu") -> None:
    """Train IVF/PQ on ``sample``; on a GPU the coarse k-means assigns points there (the costly part)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and device.startswith("cuda") and gpu_available():
        ivf.clustering_index = to_device(faiss.IndexFlatL2(ivf.d), device)
    index.train(sample)
    if ivf is not None:
        ivf.clustering_index = None  # a GPU index must not be written with the index
