"""Real test pairs from openclipart (Debian): the held-out split the default embedder never saw."""

from __future__ import annotations

import functools
import os

from engine.vectors.embedder_training import is_heldout, openclipart_pairs


@functools.cache
def heldout_pairs(n: int = 24) -> tuple[tuple[str, str, str, object], ...]:
    """The first ``n`` usable held-out openclipart pairs in source order (sample_id, image_id,
    caption, RGB image), one caption per image, images downscaled to 256 px to keep memory low."""
    pairs, images = [], set()
    for sample_id, image_id, caption, image in openclipart_pairs():
        if sample_id is None or not is_heldout(image_id) or image_id in images:
            continue
        image.thumbnail((256, 256))
        pairs.append((sample_id, image_id, caption, image))
        images.add(image_id)
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
