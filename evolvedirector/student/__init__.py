"""The student: PixArt-α with QK LayerNorm, trained in pixel space in the shapes world."""

from evolvedirector.student.sizes import SIZES, StudentSize, get_size
from evolvedirector.student.student import Student, from_pixels, to_pixels
from evolvedirector.student.text_encoder import TextEncoder
from evolvedirector.student.transformer import QKNormPixArtTransformer2DModel, has_qk_norm

__all__ = [
    "SIZES", "QKNormPixArtTransformer2DModel", "Student", "StudentSize", "TextEncoder", "from_pixels",
    "get_size", "has_qk_norm", "to_pixels",
]
