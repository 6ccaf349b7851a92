"""The student: PixArt-α with QK LayerNorm, in pixel space in the shapes world, on T5 features and
SD VAE latents at full scale.

The sizes registry and the aspect buckets are light; everything else loads torch and diffusers,
so it is imported on first use (reading a config or printing `--help` should not take seconds).
"""

import importlib

from evolvedirector.student.buckets import ASPECT_BUCKETS_1024, SINGLE_SCALE_512, buckets_at, nearest_bucket
from evolvedirector.student.sizes import SIZES, StudentSize, get_size

_LAZY = {
    "Student": "student", "from_pixels": "student", "to_pixels": "student",
    "TextEncoder": "text_encoder",
    "QKNormPixArtTransformer2DModel": "transformer", "has_qk_norm": "transformer",
    "EvolveDirectorPipeline": "pipeline", "load_export": "pipeline",
    "export_student": "export",
    "load_transformer": "convert",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"evolvedirector.student.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'evolvedirector.student' has no attribute {name!r}")


__all__ = ["SIZES", "StudentSize", "get_size", "ASPECT_BUCKETS_1024", "SINGLE_SCALE_512", "buckets_at",
           "nearest_bucket", *_LAZY]
