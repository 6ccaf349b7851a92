"""Student sizes, from a CPU-sized shapes-world model to PixArt-α XL/2.

Each entry is the transformer's architecture; the text encoder and the image space (pixels or
VAE latents) are configured apart (student.text_encoder, student.vae). `shapes-s` is the default:
2.8M parameters in pixel space, about three optimizer steps a second at batch 32 on a 2-core CPU.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StudentSize:
    depth: int
    width: int
    heads: int
    patch_size: int

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


SIZES: dict[str, StudentSize] = {
    # For tests: builds and runs in well under a second.
    "tiny": StudentSize(depth=2, width=64, heads=2, patch_size=4),
    # For tests of size conditioning, which splits the width in three (as 1152 does at XL/2).
    "tiny-ms": StudentSize(depth=2, width=96, heads=2, patch_size=2),
    # The shapes world: 32x32 pixels at patch 4 is 64 tokens. shapes-xxs is the demo's: at equal
    # compute it learns faster than the deeper shapes-xs (measured in the demo's loop: held-out mean
    # 0.25 after 1500 of its steps, which cost what 740 shapes-xs steps do, against 1250 for
    # shapes-xs; 0.44 against 0.40 at the end of the demo).
    "shapes-xxs": StudentSize(depth=2, width=128, heads=4, patch_size=4),
    "shapes-xs": StudentSize(depth=4, width=128, heads=4, patch_size=4),
    "shapes-s": StudentSize(depth=4, width=192, heads=4, patch_size=4),
    "shapes-m": StudentSize(depth=6, width=256, heads=4, patch_size=4),
    # DiT's sizes; PixArt-alpha is XL/2 (about 0.6B parameters with T5-XXL's 4096-dim caption projection).
    "S/2": StudentSize(depth=12, width=384, heads=6, patch_size=2),
    "B/2": StudentSize(depth=12, width=768, heads=12, patch_size=2),
    "L/2": StudentSize(depth=24, width=1024, heads=16, patch_size=2),
    "XL/2": StudentSize(depth=28, width=1152, heads=16, patch_size=2),
}


def get_size(name: str) -> StudentSize:
    if name not in SIZES:
        raise ValueError(f"unknown student size {name!r}; choose from {', '.join(SIZES)}")
    return SIZES[name]
