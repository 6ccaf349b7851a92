"""Teachers: where the training images come from. Backends are picked by name from TEACHERS.

| backend     | what it calls                                             | file                    |
|-------------|-----------------------------------------------------------|-------------------------|
| `diffusers` | a local DiffusionPipeline, one copy per device            | `diffusers_pipeline.py` |
| `openai`    | the OpenAI images API (gpt-image-1, dall-e-3)             | `openai_images.py`      |
| `queue`     | submit/poll/download APIs (fal, and the like)             | `queue_http.py`         |
| `bfl`       | Black Forest Labs' FLUX API (submit, poll `polling_url`)   | `bfl.py`                |
| `replicate` | Replicate predictions (`Prefer: wait`, then poll)          | `replicate.py`          |
| `stability` | Stability AI's stable-image API (multipart, bytes back)    | `stability.py`          |
| `gemini`    | Gemini image models (`generateContent`, inline base64)     | `gemini.py`             |
| `imagen`    | Imagen on the Gemini API (`:predict`)                      | `imagen.py`             |

A world adds its own: the shapes world registers `shapes`, its renderers (the embedded default),
when it is imported (`../worlds/shapes/__init__.py`). Every backend is made the same way, from its
config entry alone: `TEACHERS[entry.backend](entry)`.

Every call goes through the `Ledger` (`ledger.py`); faults are named in `faults.py`, the shared
HTTP plumbing is in `http_client.py`, and the API key and retries in `evolvedirector/http.py`
(shared with the director).
"""

from typing import Callable

from evolvedirector.teachers.base import CallContext, ImageRequest, ImageResult, Teacher, idempotency_key
from evolvedirector.teachers.bfl import BFLTeacher
from evolvedirector.teachers.diffusers_pipeline import DiffusersTeacher
from evolvedirector.teachers.gemini import GeminiTeacher
from evolvedirector.teachers.imagen import ImagenTeacher
from evolvedirector.teachers.ledger import Ledger, Purchase
from evolvedirector.teachers.openai_images import OpenAIImagesTeacher
from evolvedirector.teachers.queue_http import QueueTeacher
from evolvedirector.teachers.replicate import ReplicateTeacher
from evolvedirector.teachers.stability import StabilityTeacher

TEACHERS: dict[str, Callable[..., Teacher]] = {
    "diffusers": DiffusersTeacher,
    "openai": OpenAIImagesTeacher,
    "queue": QueueTeacher,
    "bfl": BFLTeacher,
    "replicate": ReplicateTeacher,
    "stability": StabilityTeacher,
    "gemini": GeminiTeacher,
    "imagen": ImagenTeacher,
}


def build_teacher(config) -> Teacher:
    """A teacher from its config entry (see `evolvedirector.config.AnyTeacherConfig`)."""
    if config.backend not in TEACHERS:
        raise ValueError(f"unknown teacher backend {config.backend!r}; choose from {sorted(TEACHERS)}")
    return TEACHERS[config.backend](config)


__all__ = [
    "TEACHERS", "CallContext", "ImageRequest", "ImageResult", "Ledger", "Purchase", "Teacher", "build_teacher",
    "idempotency_key",
]
