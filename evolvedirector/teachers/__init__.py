"""Teachers: where the training images come from. Backends are picked by name from TEACHERS."""

from evolvedirector.teachers.base import ImageRequest, ImageResult, Teacher, idempotency_key
from evolvedirector.teachers.ledger import Ledger, Purchase
from evolvedirector.teachers.shapes import ShapesTeacher

TEACHERS: dict[str, type[Teacher]] = {
    "shapes": ShapesTeacher,
}


def build_teacher(config) -> Teacher:
    """A teacher from its config entry (`backend`, `name`, optional `cost_per_image`)."""
    backend = TEACHERS[config.backend]
    return backend(name=config.name, cost_per_image=config.cost_per_image)


__all__ = [
    "TEACHERS", "ImageRequest", "ImageResult", "Ledger", "Purchase", "Teacher", "build_teacher",
    "idempotency_key",
]
