"""Frozen-tower features of the embedder's training sources, computed once per source and cached.

The towers never change during head training, so their pooled (pre-projection) outputs are
computed once (the slow part: ~6 minutes for every source on 2 cores) and kept in an ``.npz``
keyed by the model config's digest, the source and the limit, together with the columns the
split groups by (key, caption, file basename, pHash).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.vectors.default_embedder import (
    CONFIG_DIR,
    DEFAULT_ARCH,
    build_default_model,
    default_preprocess,
    default_tokenizer,
)
from engine.vectors.embedder_sources import source_images
from engine.vectors.model_specs import file_digest

FEATURES_VERSION = 2  # bump when the cached columns change
FEATURE_BATCH = 64  # images per tower forward while caching features: fills 2 cores, ~40 MB


def tower_features(model, tokenizer, preprocess, pairs, progress: Callable[[int], None] | None = None):
    """Pooled (pre-projection) tower features of every usable pair, with its identity columns."""
    import torch

    from engine.profiling.profile import phash64

    heads = model.visual.head.proj, model.text.proj
    model.visual.head.proj, model.text.proj = torch.nn.Identity(), torch.nn.Identity()
    image_features, text_features, rejected = [], [], {}
    columns: dict[str, list] = {"key": [], "caption": [], "basename": [], "phash": []}
    pixels: list = []

    def flush():
        if pixels:
            batch = torch.stack(pixels).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                image_features.append(model.encode_image(batch).float().numpy())
            pixels.clear()

    try:
        model.visual.to(memory_format=torch.channels_last)
        seen: set[str] = set()
        for pair in pairs:
            if pair.image is None:
                rejected[pair.caption] = rejected.get(pair.caption, 0) + 1
                continue
            if pair.key in seen:  # the same pair listed twice
                continue
            seen.add(pair.key)
            pixels.append(preprocess(pair.image))
            columns["key"].append(pair.key)
            columns["caption"].append(pair.caption)
            columns["basename"].append(pair.basename)
            columns["phash"].append(phash64(pair.image.convert("L")))
            if len(pixels) == FEATURE_BATCH:
                flush()
                if progress:
                    progress(len(seen))
        flush()
        captions = columns["caption"]
        for start in range(0, len(captions), 256):
            with torch.inference_mode():
                tokens = tokenizer(captions[start : start + 256])
                text_features.append(model.encode_text(tokens).float().numpy())
    finally:
        model.visual.head.proj, model.text.proj = heads
    empty = np.zeros((0, 1), np.float32)
    return SourceFeatures(
        image=np.concatenate(image_features) if image_features else empty,
        text=np.concatenate(text_features) if text_features else empty,
        keys=columns["key"],
        captions=captions,
        basenames=columns["basename"],
        phash=np.array(columns["phash"], dtype=np.uint64),
        rejected=rejected,
    )


@dataclass
class SourceFeatures:
    """One source's tower features and the columns that group its split."""

    image: np.ndarray
    text: np.ndarray
    keys: list[str]
    captions: list[str]
    basenames: list[str]
    phash: np.ndarray  # uint64
    rejected: dict[str, int]


def cached_features(cache_dir: str, source: str, limit: int | None, progress=None) -> SourceFeatures:
    """Tower features of one source, computed once and kept in ``cache_dir`` (an .npz)."""
    config_digest = file_digest(CONFIG_DIR / f"{DEFAULT_ARCH}.json")
    path = os.path.join(
        cache_dir, f"embed-features-{FEATURES_VERSION}-{config_digest}-{source}-{limit or 'all'}.npz"
    )
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as data:
            return SourceFeatures(
                image=data["image"],
                text=data["text"],
                keys=data["keys"].tolist(),
                captions=data["captions"].tolist(),
                basenames=data["basenames"].tolist(),
                phash=data["phash"],
                rejected=json.loads(str(data["rejected"])),
            )
    model = build_default_model(heads_path=None)
    features = tower_features(
        model, default_tokenizer(), default_preprocess(model), source_images(source, limit), progress
    )
    os.makedirs(cache_dir, exist_ok=True)
    tmp = path + f".{os.getpid()}.tmp.npz"
    np.savez(
        tmp,
        image=features.image,
        text=features.text,
        keys=np.array(features.keys, dtype=str),
        captions=np.array(features.captions, dtype=str),
        basenames=np.array(features.basenames, dtype=str),
        phash=features.phash,
        rejected=np.array(json.dumps(features.rejected)),
    )
    os.replace(tmp, path)
    return features
