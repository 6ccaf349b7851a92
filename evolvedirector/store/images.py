"""Content-addressed image files.

An image is stored once, under the SHA-256 of its PNG bytes: `images/ab/abcdef….png`. Writes go
to a temporary file in the same folder and are renamed into place, so a crash never leaves a
half-written image under a valid name, and two writers of the same image cannot corrupt it.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from evolvedirector.store.durable import write_atomic


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 array as PNG; the same pixels always give the same bytes."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


class ImageStore:
    """A folder of PNGs named by their content hash."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / f"{digest}.png"

    def put(self, image: np.ndarray) -> str:
        data = png_bytes(image)
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not target.exists():
            write_atomic(target, data)
        return digest

    def get(self, digest: str) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(self.read_bytes(digest))).convert("RGB"))

    def read_bytes(self, digest: str) -> bytes:
        """The PNG file's bytes, checked against their hash."""
        target = self.path(digest)
        if not target.exists():
            raise FileNotFoundError(f"image {digest} is missing from {self.root}")
        data = target.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"image file {target} does not match its hash (corrupted on disk)")
        return data

    def __contains__(self, digest: str) -> bool:
        return self.path(digest).exists()
