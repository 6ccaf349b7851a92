"""Turning what a teacher sent into a training image: validate, decode, fit to the asked shape.

Image bytes from an API are data from outside: they are decoded by PIL and nothing else, and
bytes that do not decode completely (truncated downloads, garbage) are a `corrupt_image` fault.
"""

from __future__ import annotations

import base64
import binascii
import io
import re

import numpy as np
from PIL import Image

from evolvedirector.teachers.base import ImageRequest
from evolvedirector.teachers.faults import CORRUPT_IMAGE, Fault

_SIZE = re.compile(r"^(\d+)x(\d+)$")


def parse_size(text: str) -> tuple[int, int]:
    """'1024x768' -> (1024, 768): width, height."""
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 1024x1024")
    return int(match.group(1)), int(match.group(2))


def decode_image(data: bytes) -> np.ndarray:
    """PNG/JPEG/WebP bytes -> (H, W, 3) uint8, or a `corrupt_image` Fault."""
    if not data:
        raise Fault(CORRUPT_IMAGE, "empty image body")
    try:
        # verify() checks the structure (and PNG checksums) without decoding; a verified image
        # cannot be used afterwards, so the pixels come from a second open that decodes fully
        # (a truncated stream raises there).
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, zlib and struct errors
        raise Fault(CORRUPT_IMAGE, f"{len(data)} bytes do not decode: {type(error).__name__}: {error}") from None


def decode_base64_image(text: str) -> np.ndarray:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError) as error:
        raise Fault(CORRUPT_IMAGE, f"base64 image does not decode: {error}") from None
    return decode_image(data)


def fit_to_request(image: np.ndarray, request: ImageRequest) -> np.ndarray:
    """The image at exactly the request's shape: its bucket's (height, width), else a square of
    its size. Centre-cropped to that aspect first, so nothing is stretched; teachers draw near
    the shape (`teachers.aspect`), so the crop takes a thin border at most."""
    target_height, target_width = request.bucket or (request.size, request.size)
    height, width = image.shape[:2]
    # The largest centred window of the target's aspect: full height if the image is wider.
    if width * target_height > height * target_width:
        crop_height, crop_width = height, max(1, round(height * target_width / target_height))
    else:
        crop_height, crop_width = max(1, round(width * target_height / target_width)), width
    top, left = (height - crop_height) // 2, (width - crop_width) // 2
    window = image[top:top + crop_height, left:left + crop_width]
    if (crop_height, crop_width) == (target_height, target_width):
        return np.ascontiguousarray(window)
    resized = Image.fromarray(window).resize((target_width, target_height), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8)
