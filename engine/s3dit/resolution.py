"""Training and sampling resolution: every bucket scaled so its longer side is ``--resolution``.

Z-Image trains in stages of growing resolution, the first at a fraction of the final size (the
paper's low-resolution pre-training); a manifest's buckets say the aspect ratios the engine chose,
and ``--resolution N`` trains each of them at the size whose longer side is N, aspect kept, each
side rounded to the grid the model sees (the latent factor times the patch size). The token count
per image, what a step's cost grows with, is ``(H / factor / patch) * (W / factor / patch)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pyarrow as pa


def grid_multiple(patch_size: int, latent_factor: int = 1) -> int:
    """Pixels per token side: image sides must be multiples of this (VAE factor x patch size)."""
    return patch_size * latent_factor


def scale_size(height: int, width: int, resolution: int, multiple: int) -> tuple[int, int]:
    """(H, W) scaled so the longer side is ``resolution``, aspect kept, each side a multiple of
    ``multiple`` (rounded to the nearest, halves up; at least one ``multiple``)."""
    if resolution < 1 or multiple < 1:
        raise ValueError(f"--resolution must be positive, not {resolution}")
    scale = resolution / max(height, width)

    def side(n: int) -> int:
        return max(multiple, math.floor(n * scale / multiple + 0.5) * multiple)

    return side(height), side(width)


def tokens_per_image(height: int, width: int, patch_size: int, latent_factor: int = 1) -> int:
    """Image tokens the model sees for an (H, W) image (caption tokens not counted)."""
    return (height // latent_factor // patch_size) * (width // latent_factor // patch_size)


def scale_buckets(table: pa.Table, resolution: int | None, multiple: int) -> pa.Table:
    """A manifest with ``bucket_h, bucket_w`` scaled to ``resolution`` (None: unchanged).

    Buckets that scale to the same size become one bucket: batches stay of one size.
    """
    if resolution is None:
        return table
    pairs = zip(table["bucket_h"].to_pylist(), table["bucket_w"].to_pylist(), strict=True)
    sizes = [scale_size(h, w, resolution, multiple) for h, w in pairs]
    for i, name in enumerate(("bucket_h", "bucket_w")):
        column = pa.array([s[i] for s in sizes], type=table.schema.field(name).type)
        table = table.set_column(table.column_names.index(name), name, column)
    return table


def largest_bucket(sizes: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """The (H, W) bucket with the most pixels (a step's cost is set by its largest batches)."""
    return max(set(sizes), key=lambda hw: (hw[0] * hw[1], hw))


def smaller_resolutions(longer_side: int, multiple: int) -> list[int]:
    """Candidate ``--resolution`` values below ``longer_side``, largest first: multiples of 32
    (and of the grid), the round sizes image models train at."""
    step = math.lcm(32, multiple)
    return list(range((longer_side - 1) // step * step, 0, -step))
