"""Training data from a stage manifest only: weighted epochs, repeat caps, resolution buckets.

A manifest (DESIGN.md section 4; written by the Active Curation Engine) is a Parquet file with
one row per sample (``schema.MANIFEST_ROW``): ``sample_id, uri, caption, weight, bucket_h,
bucket_w`` (``schema.MANIFEST_REQUIRED``, all a hand-made manifest needs), ``stage``,
``concept_ids`` (int64 graph ids) and, for the omni stage's image-to-image rows, the source sample
(``source_sample_id``, ``source_uri``): the clean reference image the target is generated from.
A manifest from a running service is fetched by ``engine.s3dit.service``. After each loss report
the trainer follows the stage's newest manifest (:func:`refresh_weights`: the engine rebuilds it
from the report, or a newer one appears in the stage's folder) and samples by its weights.

Sampling (:class:`ManifestSampler`): each epoch is a weighted random order of the rows without
replacement (``engine.curation.sampling.weighted_order``, the draw a materialised manifest uses
too), truncated to ``epoch_size`` draws; a row that was drawn ``repeat_cap`` times in earlier
epochs is not drawn again, so a heavily up-weighted sample cannot dominate a long stage. Rows are
then grouped into batches of one bucket (and one kind: text-to-image or image-to-image), in draw
order. Weights may change between epochs (trainer feedback); the sampler's state (epoch, position,
counts, weights) is saved in the checkpoint, so a resumed run draws exactly the batches an
uninterrupted one would.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from engine import schema
from engine.curation.manifest import ManifestError, build_manifest
from engine.curation.manifest_store import sidecar_recipe
from engine.curation.sampling import weighted_order
from engine.profiling.ingest import Reject, read_sample_image
from engine.profiling.records import open_filesystem
from engine.s3dit.service import fetch_manifest, refreshed_manifest
from engine.workspace import Workspace

REQUIRED_COLUMNS = schema.MANIFEST_REQUIRED  # what a hand-made manifest must have
# The rest of a manifest row; a manifest without one gets it as nulls of the row's type.
OPTIONAL_COLUMNS = tuple(name for name in schema.MANIFEST_ROW.names if name not in REQUIRED_COLUMNS)
CONCEPT_IDS = schema.MANIFEST_ROW.field("concept_ids").type  # list<int64>: graph ids, as in tags


def int_concept_ids(table: pa.Table, location: str) -> pa.Table:
    """``concept_ids`` as list<int64> (a manifest may store a narrower int list, or nulls only).

    Raises:
        ManifestError: the ids are not integers (e.g. concept names in a hand-made manifest).
    """
    kind = table["concept_ids"].type
    if kind == CONCEPT_IDS:
        return table
    ints = (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and pa.types.is_integer(kind.value_type)
    if not (ints or pa.types.is_null(kind)):
        raise ManifestError(
            f"manifest {location!r}: concept_ids must be lists of int64 graph concept ids, not {kind}"
        )
    try:
        column = table["concept_ids"].cast(CONCEPT_IDS)
    except pa.ArrowInvalid as e:  # uint64 ids past int64
        raise ManifestError(f"manifest {location!r}: concept_ids do not fit int64: {e}") from None
    return table.set_column(table.column_names.index("concept_ids"), "concept_ids", column)


def read_manifest(location: str) -> pa.Table:
    """Read a manifest Parquet (local path, pyarrow URI, or the REST service's data URL) and
    check the columns the loader needs.

    Raises:
        ManifestError: unreadable, a required column missing, non-integer concept_ids, no positive
            or a negative weight, a bucket that is not positive.
    """
    try:
        if location.startswith(("http://", "https://")):
            table = fetch_manifest(location)
        else:
            fs, path = open_filesystem(location)
            table = pq.read_table(path, filesystem=fs)
    except (OSError, pa.ArrowException) as e:
        raise ManifestError(f"cannot read manifest {location!r}: {e}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ManifestError(f"manifest {location!r} lacks column(s): {', '.join(missing)}")
    for name in OPTIONAL_COLUMNS:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, schema.MANIFEST_ROW.field(name).type))
    table = int_concept_ids(table, location)
    weights = np.asarray(table["weight"].fill_null(0).to_numpy(zero_copy_only=False), dtype=np.float64)
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ManifestError(f"manifest {location!r} has negative or non-finite weights")
    if not (weights > 0).any():
        raise ManifestError(f"manifest {location!r} has no row with a positive weight")
    for col in ("bucket_h", "bucket_w"):
        values = table[col].fill_null(0).to_numpy(zero_copy_only=False)
        if (values <= 0).any():
            raise ManifestError(f"manifest {location!r}: {col} must be positive")
    return table


# --- sampling ------------------------------------------------------------------------------------


@dataclass
class SamplerState:
    epoch: int = 0
    position: int = 0  # batches of this epoch already handed out
    counts: np.ndarray | None = None  # (rows,) draws per row in finished epochs
    weights: np.ndarray | None = None  # (rows,) the weights of the current epoch


@dataclass
class ManifestSampler:
    """Weighted epochs of bucket-pure batches over a manifest's rows (indices only, no images)."""

    weights: np.ndarray  # (rows,) sampling weights, >= 0
    group_keys: list[tuple]  # per row: (bucket_h, bucket_w, has_reference)
    batch_size: int
    seed: int = 0
    epoch_size: int | None = None  # draws per epoch; None: every row with a positive weight
    repeat_cap: int | None = None  # most draws of one row over the whole stage; None: no cap
    state: SamplerState = field(default_factory=SamplerState)
    _batches: list[np.ndarray] | None = field(default=None, repr=False)
    _pending_weights: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.weights = np.asarray(self.weights, dtype=np.float64)
        if self.state.counts is None:
            self.state.counts = np.zeros(len(self.weights), dtype=np.int64)
        if self.state.weights is None:
            self.state.weights = self.weights.copy()

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Row indices of one epoch, weighted without replacement (``weighted_order``): every row
        with a positive weight that has not reached the repeat cap, at most ``epoch_size``."""
        eligible = self.state.weights > 0
        if self.repeat_cap is not None:
            eligible &= self.state.counts < self.repeat_cap
        rows = np.flatnonzero(eligible)
        k = len(rows) if self.epoch_size is None else self.epoch_size
        return weighted_order(self.state.weights, rows, k, self.seed, epoch)

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """Group an epoch's draws into bucket-pure batches, in draw order; partial batches last."""
        pending: dict[tuple, list[int]] = {}
        batches: list[np.ndarray] = []
        for i in self.epoch_order(epoch).tolist():
            rows = pending.setdefault(self.group_keys[i], [])
            rows.append(i)
            if len(rows) == self.batch_size:
                batches.append(np.array(rows))
                pending[self.group_keys[i]] = []
        batches.extend(np.array(rows) for rows in pending.values() if rows)
        return batches

    def set_weights(self, weights: np.ndarray) -> None:
        """New weights (trainer feedback, a refreshed manifest): used from the next epoch on."""
        self._pending_weights = np.asarray(weights, dtype=np.float64)

    def next_batch(self) -> np.ndarray:
        """The row indices of the next batch."""
        for _ in range(2):  # at most one epoch change per call
            if self._batches is None:
                self._batches = self.epoch_batches(self.state.epoch)
            if self.state.position < len(self._batches):
                batch = self._batches[self.state.position]
                self.state.position += 1
                return batch
            for b in self._batches:
                np.add.at(self.state.counts, b, 1)
            self.state.epoch, self.state.position, self._batches = self.state.epoch + 1, 0, None
            if self._pending_weights is not None:
                self.state.weights, self._pending_weights = self._pending_weights, None
        raise ManifestError("no row can be drawn: every positive-weight row reached its repeat cap")

    def state_dict(self) -> dict:
        return {
            "epoch": self.state.epoch,
            "position": self.state.position,
            "counts": self.state.counts.copy(),
            "weights": self.state.weights.copy(),
            "pending_weights": None if self._pending_weights is None else self._pending_weights.copy(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.state = SamplerState(state["epoch"], state["position"], state["counts"], state["weights"])
        self._pending_weights, self._batches = state["pending_weights"], None


# --- images ---------------------------------------------------------------------------------------


def resize_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """Scale so the image covers the bucket (aspect kept), then crop the centre."""
    scale = max(height / image.height, width / image.width)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=None)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return image.crop((left, top, left + width, top + height))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image -> (3, H, W) float32 in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def to_image(x: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> RGB image."""
    array = ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


# --- the loader ------------------------------------------------------------------------------------


@dataclass
class Batch:
    sample_ids: list[str]
    captions: list[str]
    concept_ids: list[list[int]]  # per sample, int64 graph ids; empty when the manifest has none
    images: torch.Tensor  # (N, 3, H, W) in [-1, 1], H x W the batch's bucket
    refs: torch.Tensor | None  # (N, 3, H, W) reference images of image-to-image rows, else None
    skipped: list[str]  # sample_ids of this draw whose image could not be read


class ManifestLoader:
    """Batches of decoded, bucket-sized images from a manifest, in the sampler's order.

    Bad rows (a missing or corrupt image) are skipped with their id reported in the batch, and the
    batch goes on smaller; decoded, resized images are cached in memory (``cache_items``, LRU).
    """

    def __init__(
        self,
        manifest: pa.Table,
        batch_size: int,
        seed: int = 0,
        epoch_size: int | None = None,
        repeat_cap: int | None = None,
        cache_items: int = 20_000,  # 20k 32x32 RGB float tensors are ~250 MB; larger buckets: lower it
    ):
        self.rows = manifest.select(
            ["sample_id", "uri", "caption", "bucket_h", "bucket_w", "concept_ids", "source_uri"]
        ).to_pylist()
        weights = manifest["weight"].fill_null(0).to_numpy(zero_copy_only=False)
        keys = [(r["bucket_h"], r["bucket_w"], r["source_uri"] is not None) for r in self.rows]
        self.sampler = ManifestSampler(weights, keys, batch_size, seed, epoch_size, repeat_cap)
        self.sample_index = {r["sample_id"]: i for i, r in enumerate(self.rows)}
        self.cache: OrderedDict[tuple, torch.Tensor | None] = OrderedDict()
        self.cache_items = cache_items

    def load(self, uri: str, height: int, width: int) -> torch.Tensor | None:
        key = (uri, height, width)
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        try:
            x = to_tensor(resize_crop(read_sample_image(uri), height, width))
        except Reject:
            x = None
        self.cache[key] = x
        if len(self.cache) > self.cache_items:
            self.cache.popitem(last=False)
        return x

    def next_batch(self) -> Batch:
        """The next non-empty batch (a batch whose every image fails is skipped, its ids kept)."""
        skipped: list[str] = []
        while True:
            if len(skipped) > len(self.rows):  # a whole epoch's worth of draws and not one image
                raise ManifestError(f"no image could be read (last tried: {self.rows[-1]['uri']})")
            rows = [self.rows[i] for i in self.sampler.next_batch()]
            ok, images, refs = [], [], []
            for r in rows:
                x = self.load(r["uri"], r["bucket_h"], r["bucket_w"])
                ref = (
                    None
                    if r["source_uri"] is None
                    else self.load(r["source_uri"], r["bucket_h"], r["bucket_w"])
                )
                if x is None or (r["source_uri"] is not None and ref is None):
                    skipped.append(r["sample_id"])
                    continue
                ok.append(r)
                images.append(x)
                refs.append(ref)
            if ok:
                return Batch(
                    [r["sample_id"] for r in ok],
                    [r["caption"] or "" for r in ok],
                    [list(r["concept_ids"] or []) for r in ok],
                    torch.stack(images),
                    None if refs[0] is None else torch.stack(refs),
                    skipped,
                )

    def set_weights_by_id(self, weights: dict[str, float]) -> int:
        """Reweight rows by sample_id (a refreshed manifest); rows not named keep their weight.

        Returns the number of rows whose weight was set. Takes effect at the next epoch.
        """
        pending = self.sampler._pending_weights
        new = (self.sampler.state.weights if pending is None else pending).copy()
        n = 0
        for sample_id, w in weights.items():
            i = self.sample_index.get(sample_id)
            if i is not None:
                new[i], n = float(w), n + 1
        self.sampler.set_weights(new)
        return n


# --- following the engine: the newest manifest of a stage ----------------------------------------


def resolve_manifest(location: str) -> str:
    """A manifest file, or the newest ``*.parquet`` of a folder (the engine's manifests/<stage>)."""
    if not os.path.isdir(location):
        return location
    found = [os.path.join(location, n) for n in os.listdir(location) if n.endswith(".parquet")]
    if not found:
        raise ManifestError(f"no manifest (*.parquet) in {location}")
    return max(found, key=lambda p: (os.stat(p).st_mtime_ns, p))


def rebuild_manifest(ws: Workspace, current: str) -> str | None:
    """Ask the engine for the stage's manifest again, with the recipe and seed of the current one
    (from its sidecar, ``<id>.json``): the feedback just sent changes the manifest id, so this
    writes a new manifest next to the current one. None for a manifest without a sidecar."""
    sidecar_path = os.path.splitext(current)[0] + ".json"
    if not os.path.exists(sidecar_path):
        return None
    with open(sidecar_path, encoding="utf-8") as f:
        sidecar = json.load(f)
    recipe = sidecar_recipe(sidecar, sidecar.get("recipe_file") or sidecar_path)
    return build_manifest(ws, recipe, seed=sidecar["seed"], size=sidecar["size"]).path


def refresh_weights(loader: ManifestLoader, location: str, current: str, ws: Workspace | None = None) -> str:
    """After a feedback report: rebuild the engine's manifest (when ``current`` has a sidecar; for the
    service's data URL, the manifest the service rebuilt from the report) and follow it, or follow a
    manifest folder where a newer manifest appeared; the loader takes the
    new weights for the rows it has, from the next epoch on. Returns the file now followed."""
    if current.startswith(("http://", "https://")):  # the service rebuilt it from the report just posted
        rebuilt = refreshed_manifest(current)
    else:
        rebuilt = rebuild_manifest(ws, current) if ws is not None else None
    if rebuilt is None and not os.path.isdir(location):
        return current
    newest = rebuilt or resolve_manifest(location)
    if newest != current:
        table = read_manifest(newest)
        loader.set_weights_by_id(
            dict(zip(table["sample_id"].to_pylist(), table["weight"].to_pylist(), strict=True))
        )
    return newest
