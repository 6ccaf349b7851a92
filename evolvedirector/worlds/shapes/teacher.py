"""The shapes-world teachers (atlas, quill, tally): renderers with per-domain error rates."""

from __future__ import annotations

from evolvedirector.teachers.base import ImageRequest, ImageResult, Teacher
from evolvedirector.worlds.shapes.profiles import TEACHER_PROFILES, teacher_image


class ShapesTeacher(Teacher):
    def __init__(self, name: str, cost_per_image: float | None = None):
        if name not in TEACHER_PROFILES:
            raise ValueError(f"unknown shapes-world teacher {name!r}; choose from {sorted(TEACHER_PROFILES)}")
        self.profile = TEACHER_PROFILES[name]
        self.name = name
        self.cost_per_image = self.profile.cost_per_image if cost_per_image is None else cost_per_image

    @classmethod
    def from_config(cls, config) -> ShapesTeacher:
        """From a `shapes` teacher entry, as every backend is made (evolvedirector.teachers)."""
        return cls(config.name, config.cost_per_image)

    async def generate(self, requests: list[ImageRequest]) -> list[ImageResult]:
        # A configuration error, not a drawing fault: raised, so its message reaches the log.
        if any(request.bucket is not None for request in requests):
            raise ValueError(f"shapes-world teacher {self.name!r} got an aspect-bucket request: the shapes world "
                             "is single-scale (square images of world.image_size); set train.multi_aspect: false")
        return [
            ImageResult(request, image=teacher_image(self.profile, request.prompt, request.seed, request.size))
            for request in requests
        ]
