"""From an aspect bucket to a size a teacher can draw at.

A bucket is (height, width) at the student's scale, but teachers draw at their own scale and
often at a few shapes only. Every backend maps a bucket with one of two rules, kept here so that
they agree: pick the accepted size closest in aspect (APIs with a fixed list of sizes), or draw
the bucket's aspect at the teacher's own area (pipelines and APIs that take any size). The image
is then fitted to the bucket exactly (`image_bytes.fit_to_request`), so a rule only has to land
near the right shape, never on it.

Sizes here are (width, height), as APIs spell them; buckets are (height, width), as the student's.
"""

from __future__ import annotations

import math
from typing import Iterable

# PixArt's bucket grid; it is also a multiple of every latent stride (8 for SD-style VAEs, times
# a patch of 2), so a pipeline can draw any size on it.
GRID = 64


def aspect_distance(size: tuple[int, int], bucket: tuple[int, int]) -> float:
    """How far a (width, height) is in shape from a (height, width) bucket, in log-ratio: 2:1
    and 1:2 are equally far from 1:1, which a plain difference of ratios would not say."""
    (width, height), (bucket_height, bucket_width) = size, bucket
    return abs(math.log(width / height) - math.log(bucket_width / bucket_height))


def closest_by_aspect(sizes: Iterable[tuple[int, int]], bucket: tuple[int, int]) -> tuple[int, int]:
    """Of the (width, height) sizes, the one closest in aspect to the bucket; the first on a tie."""
    sizes = list(sizes)
    if not sizes:
        raise ValueError("no sizes to choose from")
    return min(sizes, key=lambda size: aspect_distance(size, bucket))


def scale_to_area(bucket: tuple[int, int], area: float, grid: int = GRID) -> tuple[int, int]:
    """(width, height) with the bucket's aspect and about `area` pixels, each side rounded to a
    multiple of `grid` (at least one grid)."""
    bucket_height, bucket_width = bucket
    ratio = bucket_width / bucket_height
    width, height = math.sqrt(area * ratio), math.sqrt(area / ratio)
    return max(grid, round(width / grid) * grid), max(grid, round(height / grid) * grid)


def ratio_size(ratio: str) -> tuple[int, int]:
    """'16:9' -> (16, 9): a ratio read as a (width, height) size, to be compared by aspect."""
    width, height = ratio.split(":")
    return int(width), int(height)


def closest_ratio(ratios: Iterable[str], bucket: tuple[int, int] | None) -> str:
    """Of ratios like '16:9' (APIs that are asked for a ratio, not pixels), the one closest in
    aspect to the bucket; a square request (no bucket) asks for the one closest to 1:1."""
    ratios = list(ratios)
    chosen = closest_by_aspect([ratio_size(r) for r in ratios], bucket or (1, 1))
    return ratios[[ratio_size(r) for r in ratios].index(chosen)]
