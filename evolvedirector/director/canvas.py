"""What a vision-language director is shown: the paper's side-by-side canvas, and data URLs.

Pairwise judging shows one image holding the two candidates side by side, each under its label,
(A) on the left and (B) on the right. A VLM compares two regions of one image far more reliably
than two separate images, and every server accepts a single image. Labels sit in a header strip
above the panels, never over them, so no pixel of either candidate is hidden.

Small images are enlarged with nearest-neighbour resampling: a 32-pixel shapes-world image
smoothed up to 256 pixels would blur its edges and colours, while blocks keep them exact.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
LABEL_COLOR = (0, 0, 0)
MAX_DATA_URL_BYTES = 32 * 1024 * 1024  # a decoded image larger than this is refused, not parsed
_DATA_URL_PREFIX = "data:image/png;base64,"


@dataclass(frozen=True)
class Layout:
    """Where things lie on a canvas whose panels are `panel` pixels square."""

    panel: int
    margin: int
    header: int

    @classmethod
    def for_panel(cls, panel: int) -> Layout:
        return cls(panel=panel, margin=max(4, panel // 16), header=max(16, panel // 5))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole canvas."""
        return 2 * self.panel + 3 * self.margin, self.header + self.panel + self.margin

    def box(self, index: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of panel 0 (A) or 1 (B)."""
        left = self.margin + index * (self.panel + self.margin)
        return left, self.header, left + self.panel, self.header + self.panel


def fit(image: np.ndarray | Image.Image, panel: int) -> Image.Image:
    """The image scaled to fit a `panel`-pixel square (aspect kept), centred on white."""
    picture = to_pil(image)
    scale = panel / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    # Nearest when enlarging keeps small images crisp; Lanczos when shrinking avoids aliasing.
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    picture = picture.resize(size, resample)
    if picture.size == (panel, panel):
        return picture
    square = Image.new("RGB", (panel, panel), BACKGROUND)
    square.paste(picture, ((panel - picture.width) // 2, (panel - picture.height) // 2))
    return square


def side_by_side(image_a: np.ndarray | Image.Image, image_b: np.ndarray | Image.Image, panel: int = 256) -> Image.Image:
    """The canvas: image_a under "(A)" on the left, image_b under "(B)" on the right."""
    layout = Layout.for_panel(panel)
    canvas = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(max(10, layout.header * 3 // 4))
    for index, (image, label) in enumerate(((image_a, "(A)"), (image_b, "(B)"))):
        left, top, right, _ = layout.box(index)
        canvas.paste(fit(image, panel), (left, top))
        draw.text(((left + right) / 2, top / 2), label, fill=LABEL_COLOR, font=font, anchor="mm")
    return canvas


def split(canvas: np.ndarray | Image.Image) -> tuple[np.ndarray, np.ndarray] | None:
    """The two panels of a canvas made by `side_by_side`, or None if it is not one.

    A model reads the canvas by looking at it; this exact inverse serves the shapes-world judge
    that stands in for such a model.
    """
    picture = to_pil(canvas)
    width, height = picture.size
    for panel in range(max(1, height // 2), height + 1):
        layout = Layout.for_panel(panel)
        if layout.size == (width, height):
            array = np.asarray(picture)
            return tuple(array[top:bottom, left:right].copy() for left, top, right, bottom in
                         (layout.box(0), layout.box(1)))  # type: ignore[return-value]
    return None


def to_pil(image: np.ndarray | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    return Image.fromarray(array[..., :3] if array.ndim == 3 else array).convert("RGB")


def png_data_url(image: np.ndarray | Image.Image) -> str:
    """The image as a `data:image/png;base64,...` URL, the way chat servers accept images inline."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return _DATA_URL_PREFIX + base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_data_url(url: str, max_bytes: int = MAX_DATA_URL_BYTES) -> np.ndarray:
    """The (H, W, 3) uint8 image in a base64 data URL; ValueError for anything else."""
    if not isinstance(url, str) or not url.startswith("data:image/") or ";base64," not in url[:64]:
        raise ValueError("not a base64 image data URL")
    payload = url.split(",", 1)[1]
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise ValueError("image data URL too large")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("image data URL is not valid base64") from None
    try:
        with Image.open(io.BytesIO(data)) as picture:
            return np.asarray(picture.convert("RGB"))
    except (OSError, Image.DecompressionBombError):
        raise ValueError("image data URL does not hold a readable image") from None


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow ships a scalable default font; without FreeType it falls back to a fixed bitmap one.
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()
