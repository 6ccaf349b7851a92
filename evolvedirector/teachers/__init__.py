"""Teachers: where the training images come from. Backends are picked by name from TEACHERS.

| backend     | what it calls                                             | file                    |
|-------------|-----------------------------------------------------------|-------------------------|
| `shapes`    | the shapes-world renderers (the embedded default)         | `../worlds/shapes/teacher.py` |
| `diffusers` | a local DiffusionPipeline, one copy per device            | `diffusers_pipeline.py` |
| `openai`    | the OpenAI images API (gpt-image-1, dall-e-3)             | `openai_images.py`      |
| `queue`     | submit/poll/download APIs (fal, Replicate)                | `queue_http.py`         |

Every call goes through the `Ledger` (`ledger.py`); faults are named in `faults.py`, the shared
HTTP plumbing is in `http_client.py`, and the API key and retries in `evolvedirector/http.py`
(shared with the director).
"""

from evolvedirector.teachers.base import CallContext, ImageRequest, ImageResult, Teacher, idempotency_key
from evolvedirector.teachers.diffusers_pipeline import DiffusersTeacher
from evolvedirector.teachers.ledger import Ledger, Purchase
from evolvedirector.teachers.openai_images import OpenAIImagesTeacher
from evolvedirector.teachers.queue_http import QueueTeacher
from evolvedirector.worlds.shapes.teacher import ShapesTeacher

TEACHERS: dict[str, type[Teacher]] = {
    "shapes": ShapesTeacher,
    "diffusers": DiffusersTeacher,
    "openai": OpenAIImagesTeacher,
    "queue": QueueTeacher,
}


def build_teacher(config) -> Teacher:
    """A teacher from its config entry (see `evolvedirector.config.AnyTeacherConfig`)."""
    backend = TEACHERS[config.backend]
    if backend is ShapesTeacher:
        return ShapesTeacher(name=config.name, cost_per_image=config.cost_per_image)
    return backend(config)


__all__ = [
    "TEACHERS", "CallContext", "ImageRequest", "ImageResult", "Ledger", "Purchase", "Teacher", "build_teacher",
    "idempotency_key",
]
