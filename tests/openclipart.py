"""Real test pairs from openclipart (Debian): the test split the default embedder never trained on."""

from __future__ import annotations

import functools
import os

from engine.vectors.embedder_sources import openclipart_images
from engine.vectors.embedder_training import unseen_openclipart_ids


@functools.cache
def heldout_pairs(n: int = 24) -> tuple[tuple[str, str, str, object], ...]:
    """The first ``n`` usable held-out openclipart pairs in source order (sample_id, image_id,
    caption, RGB image), one caption per image, images downscaled to 256 px to keep memory low."""
    pairs, images, unseen = [], set(), unseen_openclipart_ids()
    for pair in openclipart_images():
        if pair.image is None or pair.key not in unseen or pair.image_id in images:
            continue
        pair.image.thumbnail((256, 256))
        pairs.append((pair.key, pair.image_id, pair.caption, pair.image))
        images.add(pair.image_id)
        if len(pairs) == n:
            break
    return tuple(pairs)


def write_pair_folder(folder: str, pairs) -> str:
    """The pairs as a folder source: NNNNN.png + NNNNN.txt."""
    os.makedirs(folder, exist_ok=True)
    for i, (_, _, caption, image) in enumerate(pairs):
        image.save(os.path.join(folder, f"{i:05d}.png"))
        with open(os.path.join(folder, f"{i:05d}.txt"), "w", encoding="utf-8") as f:
            f.write(caption)
    return folder
