"""Image shapes the student trains on: a 512-px single-scale stage, then 20 aspect buckets at 1024 px.

PixArt-α trains first at 512x512, then at about one megapixel over aspect-ratio buckets, so that
a batch holds images of one shape and nothing is cropped away. A bucket is (height, width) with
both sides multiples of 64, an area within 10 % below 1024², and height/width from 0.5 to 2.0.

The buckets are PixArt-α's own table (diffusers' `ASPECT_RATIO_1024_BIN`, the same entries as the
original repository's `ASPECT_RATIO_1024`) restricted to 0.5..2.0: a pretrained PixArt-α has
seen exactly these shapes. That rule alone would also admit 1344x704 (h/w 1.91); PixArt's table
has its mirror image 704x1344 (0.52) but not it, which is why there are 20 buckets and not 21.
A test checks this table against the rule and against diffusers' copy.
"""

from __future__ import annotations

# (height, width), by increasing height/width.
ASPECT_BUCKETS_1024: tuple[tuple[int, int], ...] = (
    (704, 1408), (704, 1344), (768, 1344), (768, 1280), (832, 1216),
    (832, 1152), (896, 1152), (896, 1088), (960, 1088), (960, 1024),
    (1024, 1024),
    (1024, 960), (1088, 960), (1088, 896), (1152, 896), (1152, 832),
    (1216, 832), (1280, 768), (1344, 768), (1408, 704),
)

# The first stage: one square shape.
SINGLE_SCALE_512: tuple[tuple[int, int], ...] = ((512, 512),)


def buckets_at(base: int, buckets: tuple[tuple[int, int], ...] = ASPECT_BUCKETS_1024) -> tuple[tuple[int, int], ...]:
    """The 1024-px buckets scaled to another base size (512 gives diffusers' ASPECT_RATIO_512_BIN).

    `base` must be a multiple of 16 so that every side stays a whole number of pixels (the
    1024 sides are multiples of 64); small bases are for tests and pixel-space worlds.
    """
    if base <= 0 or base % 16:
        raise ValueError(f"bucket base size must be a positive multiple of 16, got {base}")
    return tuple((h * base // 1024, w * base // 1024) for h, w in buckets)


def nearest_bucket(height: int, width: int,
                   buckets: tuple[tuple[int, int], ...] = ASPECT_BUCKETS_1024) -> tuple[int, int]:
    """The bucket whose height/width is closest to the image's (PixArt's rule: absolute difference
    of the ratios); an image is resized and centre-cropped to it, losing at most a thin border."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if not buckets:
        raise ValueError("no buckets to choose from")
    ratio = height / width
    return min(buckets, key=lambda hw: abs(hw[0] / hw[1] - ratio))
