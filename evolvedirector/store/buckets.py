"""An image shape as the store writes it, in `samples.bucket` and `teacher_calls.bucket`."""

from __future__ import annotations


def bucket_text(bucket: tuple[int, int] | None) -> str | None:
    """(height, width) as stored: "768x1344" (height first, as the student's buckets are)."""
    return None if bucket is None else f"{bucket[0]}x{bucket[1]}"


def parse_bucket(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    height, width = text.split("x")
    return int(height), int(width)
