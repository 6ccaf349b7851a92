"""Every derived seed of a run comes from here, so that two streams never overlap by accident.

`seed * 7919 + round`-style arithmetic makes (seed 0, round 7919) and (seed 1, round 0) the same
stream; hashing the parts makes nearby seeds, rounds, steps or ranks unrelated.
"""

from __future__ import annotations

import hashlib


def seed_for(*parts: object) -> int:
    """A 63-bit seed from any tuple of parts, e.g. (seed, 'batch', step)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & (2**63 - 1)
