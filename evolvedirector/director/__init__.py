"""Directors: the judges that curate the dynamic set. Backends are picked by name from DIRECTORS."""

from evolvedirector.director.base import Director, Discrimination, Verdict, discriminate, select_best
from evolvedirector.director.local_vlm import LocalVLMDirector
from evolvedirector.director.openai_server import OpenAIDirector
from evolvedirector.worlds.shapes.director import ShapesDirector
from evolvedirector.director.vlm import DirectorError, VLMDirector

DIRECTORS: dict[str, type[Director]] = {
    "shapes": ShapesDirector,
    "openai": OpenAIDirector,  # vLLM, SGLang, Ollama, hosted models: any OpenAI-compatible chat server
    "local": LocalVLMDirector,  # a transformers image-text-to-text model in this process
}


def build_director(config, *, seed: int, exclude=()) -> Director:
    """The director a `DirectorConfig` describes; `exclude` lists prompts it must never propose."""
    if config.backend == "shapes":
        return ShapesDirector(judge_accuracy=config.judge_accuracy, seed=seed, exclude=exclude)
    if config.backend in DIRECTORS:
        return DIRECTORS[config.backend](config, seed=seed, exclude=exclude)
    raise ValueError(f"unknown director backend {config.backend!r}; choose from {sorted(DIRECTORS)}")


__all__ = [
    "DIRECTORS", "Director", "DirectorError", "Discrimination", "Verdict", "VLMDirector", "build_director",
    "discriminate", "select_best",
]
