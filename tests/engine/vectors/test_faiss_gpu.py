"""engine/vectors/faiss_gpu.py: exact kNN and index moves, on the CPU here and on a GPU where there is one."""

from __future__ import annotations

import warnings

import faiss
import numpy as np
import pytest

from engine.vectors import faiss_gpu
from engine.vectors.faiss_gpu import gpu_available, knn, to_cpu, to_device

needs_gpu = pytest.mark.skipif(not gpu_available(), reason="needs faiss built with CUDA and a GPU")


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = queries @ vectors.T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, axis=1), ids


def test_knn_on_cpu_is_the_brute_force_top_k():
    vectors, queries = unit_vectors(2000, 64, 0), unit_vectors(50, 64, 1)
    sims, ids = knn(vectors, queries, 10, "cpu")
    expected_sims, expected_ids = numpy_top_k(vectors, queries, 10)
    assert sims.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (50, 10)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(sims, expected_sims, atol=1e-5)


def test_knn_caps_k_and_takes_empty_input():
    vectors, queries = unit_vectors(3, 8, 0), unit_vectors(2, 8, 1)
    assert knn(vectors, queries, 10)[1].shape == (2, 3)
    sims, ids = knn(vectors, queries[:0], 5)
    assert sims.shape == ids.shape == (0, 3)
    with pytest.raises(ValueError, match="dimension"):
        knn(vectors, unit_vectors(2, 4, 1), 1)


def test_to_device_on_cpu_returns_the_same_index():
    index = faiss.IndexFlatIP(16)
    index.add(unit_vectors(10, 16, 0))
    assert to_device(index, "cpu") is index and to_cpu(index) is index


@pytest.mark.skipif(gpu_available(), reason="checks the fallback of a faiss without GPU support")
def test_a_cuda_device_without_gpu_faiss_warns_once_and_uses_the_cpu(monkeypatch):
    monkeypatch.setattr(faiss_gpu, "_warned", set())
    vectors, queries = unit_vectors(200, 16, 0), unit_vectors(5, 16, 1)
    index = faiss.IndexFlatIP(16)
    with pytest.warns(UserWarning, match="faiss has no GPU support") as caught:
        assert to_device(index, "cuda:0") is index
        _, ids = knn(vectors, queries, 4, "cuda:0")
    assert len(caught) == 1
    np.testing.assert_array_equal(ids, knn(vectors, queries, 4, "cpu")[1])


@pytest.mark.gpu
@needs_gpu
def test_gpu_knn_equals_cpu_knn():
    vectors, queries = unit_vectors(20000, 128, 0), unit_vectors(200, 128, 1)
    sims, ids = knn(vectors, queries, 10, "cuda:0")
    cpu_sims, cpu_ids = knn(vectors, queries, 10, "cpu")
    np.testing.assert_array_equal(ids, cpu_ids)
    np.testing.assert_allclose(sims, cpu_sims, atol=1e-4)


@pytest.mark.gpu
@needs_gpu
def test_a_flat_index_on_the_gpu_gives_the_cpu_top_k():
    vectors, queries = unit_vectors(20000, 128, 2), unit_vectors(100, 128, 3)
    index = faiss.IndexFlatIP(128)
    index.add(vectors)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning on a GPU faiss
        gpu = to_device(index, "cuda:0")
    assert faiss_gpu.is_gpu_index(gpu) and to_device(gpu, "cuda:0") is gpu
    sims, ids = gpu.search(queries, 10)
    cpu_sims, cpu_ids = index.search(queries, 10)
    np.testing.assert_array_equal(ids, cpu_ids)
    np.testing.assert_allclose(sims, cpu_sims, atol=1e-4)
    back = to_cpu(gpu)
    assert not faiss_gpu.is_gpu_index(back) and back.ntotal == index.ntotal
    np.testing.assert_array_equal(back.search(queries, 10)[1], cpu_ids)
