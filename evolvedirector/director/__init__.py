"""Directors: the judges that curate the dynamic set. Backends are picked by name from DIRECTORS.

A world adds its own: the shapes world registers `shapes`, its exact judge made imperfect on
purpose, when it is imported (`../worlds/shapes/__init__.py`). Every backend is made the same way:
`DIRECTORS[config.backend](config, seed=seed, exclude=exclude)`.
"""

from typing import Callable

from evolvedirector.director.base import Director, Discrimination, Verdict, discriminate, select_best
from evolvedirector.director.local_vlm import LocalVLMDirector
from evolvedirector.director.openai_server import OpenAIDirector
from evolvedirector.director.vlm import DirectorError, VLMDirector

DIRECTORS: dict[str, Callable[..., Director]] = {
    "openai": OpenAIDirector,  # vLLM, SGLang, Ollama, hosted models: any OpenAI-compatible chat server
    "local": LocalVLMDirector,  # a transformers image-text-to-text model in this process
}


def build_director(config, *, seed: int, exclude=()) -> Director:
    """The director a `DirectorConfig` describes; `exclude` lists prompts it must never propose."""
    if config.backend not in DIRECTORS:
        raise ValueError(f"unknown director backend {config.backend!r}; choose from {sorted(DIRECTORS)}")
    return DIRECTORS[config.backend](config, seed=seed, exclude=exclude)


__all__ = [
    "DIRECTORS", "Director", "DirectorError", "Discrimination", "Verdict", "VLMDirector", "build_director",
    "discriminate", "select_best",
]
