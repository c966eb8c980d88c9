"""Concepts that are corpus noise rather than content: file-format words, metadata and uploader
tags, words spread over unrelated images.

A scraped collection's captions carry words that say nothing about the picture: openclipart's
keywords hold ``svg``, a ``hash(0x8a3ecd4)`` per upload (now dropped by the matcher as an identifier),
uploader names and category folders (``computer`` on every button). Balancing on them wastes the
budget on a word, and a manifest's ``Concepts:`` line teaches the model nothing. Two tests mark a
concept as noise (``detect_noise``), on the workspace's own data:

- **format**: one of its lemmas is a file-format or clip-art word (``FORMAT_WORDS``);
- **ungrounded** (with image vectors and their embedder): its images are hardly closer to its
  own text than random images of the workspace are. The statistic is the mean cosine between
  the concept's images and its text vector (``engine.graph.concept_index``); the bar is the 95th
  percentile of the same mean over ``DRAWS`` random sets of as many images (seeded), plus
  ``MARGIN``. With hundreds of samples any tiny lean is significant, so the margin asks for an
  effect, not just a p-value. Only concepts with ``MIN_SAMPLES`` text-tagged samples are tested.

The margin was set by looking at the demo's openclipart concepts (``hash``, ``computer`` and
``shape`` under it; ``lemon``, ``icon`` and ``star`` well over), data the embedded default was
trained on. On independent data (Tux Paint's stamps with planted words, ``bench/bench_noise_concepts.py``,
docs/engines/graph.md) it marks every word planted at random and no category word planted on its
own folder's stamps.

The result is the ``noise`` column of the ``concepts`` table (the reason, null for content),
and recipes stop these concepts unless told otherwise (``[concepts] noise``, ``keep``, ``stop``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow.compute as pc

# File formats and clip-art words: they describe how the file was made, not what it shows.
FORMAT_WORDS = frozenset(
    "svg png jpg jpeg gif bmp tif tiff eps pdf psd xcf webp ico raster clipart clip_art vector".split()  # noqa: SIM905
)
MIN_SAMPLES = 20  # fewest text-tagged samples a concept needs for the grounding test
MARGIN = 0.02  # cosine a concept's images must lean toward its text beyond chance (module docstring)
DRAWS = 200  # random sets per tested size: the 95th percentile of 200 draws is stable to ~1%
SAMPLE_SIZE = 20_000  # image vectors kept to draw the random sets from (chosen by id hash)
SEED = 0


def detect_noise(ws, graph, shards: list[str], embedder=None) -> dict[int, str]:
    """concept id -> why it is noise ("format: svg", "ungrounded: 0.011 < 0.025 (n=450)") for the
    concepts the workspace's caption and OCR tags use; without ``embedder`` (the model of the
    workspace's image vectors) only the format test runs."""
    sums, counts, pool = concept_vector_sums(ws, shards, ("caption", "ocr"))
    noise: dict[int, str] = {}
    for concept_id in sorted(counts):
        lemmas = (graph.nodes[concept_id].get("lemmas") or ()) if concept_id in graph else ()
        words = [lemma.lower() for lemma in lemmas if lemma.lower() in FORMAT_WORDS]
        if words:
            noise[concept_id] = f"format: {words[0]}"
    tested = sorted(c for c, n in counts.items() if n >= MIN_SAMPLES and c not in noise and c in sums)
    if embedder is None or len(pool) < 2 * MIN_SAMPLES or not tested:
        return noise
    from engine.graph.concept_index import build_concept_index

    index = build_concept_index(graph, tested, embedder, ws)
    texts = index.index.reconstruct_n(0, len(tested)).astype(np.float64)
    rng = np.random.default_rng(SEED)
    for row, concept_id in enumerate(index.concept_ids.tolist()):
        n = counts[concept_id]
        mean = float(sums[concept_id] @ texts[row]) / n
        bar = random_set_mean(pool @ texts[row], min(n, len(pool) - 1), rng) + MARGIN
        if mean < bar:
            noise[concept_id] = f"ungrounded: {mean:.3f} < {bar:.3f} (n={n})"
    return noise


def random_set_mean(cosines: np.ndarray, size: int, rng: np.random.Generator) -> float:
    """The 95th percentile, over ``DRAWS`` random sets of ``size`` of the pool's images, of their
    mean cosine to a text (``cosines``: each pool image's)."""
    means = [float(cosines[rng.choice(len(cosines), size, replace=False)].mean()) for _ in range(DRAWS)]
    return float(np.percentile(means, 95))


def concept_vector_sums(
    ws, shards: list[str], text_source: tuple[str, ...]
) -> tuple[dict[int, np.ndarray], dict[int, int], np.ndarray]:
    """(concept -> sum of its samples' unit image vectors, concept -> samples, the random pool):
    a reduce over the shards' text tags and image vectors. A sample without an image vector
    counts toward nothing; the pool keeps each vector whose sample id hashes below the share that
    leaves about ``SAMPLE_SIZE`` of them (the same vectors whatever the shard order)."""
    from engine.vectors.embedder import vectors

    total = sum(ws.read_shard("samples", s).num_rows for s in shards) if shards else 0
    share = min(1.0, SAMPLE_SIZE / max(total, 1))
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    pool: list[np.ndarray] = []
    for shard_id in shards:
        tags = ws.read_shard("tags", shard_id).select(["sample_id", "concept_id", "source"])
        tags = tags.filter(pc.is_in(tags["source"], value_set=_strings(text_source)))
        if not ws.has_shard("embeddings", shard_id):
            for concept_id in tags["concept_id"].to_pylist():
                counts.setdefault(concept_id, 0)
            continue
        table = ws.read_shard("embeddings", shard_id).select(["sample_id", "image_vec"])
        table = table.filter(pc.is_valid(table["image_vec"]))
        vecs = vectors(table["image_vec"]).astype(np.float64)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        ids = table["sample_id"].to_pylist()
        row_of = {sample_id: i for i, sample_id in enumerate(ids)}
        members: dict[int, set[int]] = {}
        for sample_id, concept_id in zip(
            tags["sample_id"].to_pylist(), tags["concept_id"].to_pylist(), strict=True
        ):
            counts.setdefault(concept_id, 0)
            if sample_id in row_of:
                members.setdefault(concept_id, set()).add(row_of[sample_id])
        for concept_id, rows in members.items():
            part = vecs[sorted(rows)].sum(axis=0)
            sums[concept_id] = sums[concept_id] + part if concept_id in sums else part
            counts[concept_id] += len(rows)
        pool += [vecs[i] for i, sample_id in enumerate(ids) if _hash_share(sample_id) < share]
    return sums, counts, (np.stack(pool) if pool else np.zeros((0, 1)))


def _hash_share(sample_id: str) -> float:
    """A sample id -> a number in [0, 1) that does not depend on where the sample is."""
    return int.from_bytes(hashlib.blake2b(sample_id.encode(), digest_size=8).digest(), "big") / 2.0**64


def _strings(values):
    import pyarrow as pa

    return pa.array(list(values), pa.string())
