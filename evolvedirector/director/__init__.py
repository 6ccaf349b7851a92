"""Directors: the judges that curate the dynamic set. Backends are picked by name from DIRECTORS."""

from evolvedirector.director.base import Director, Discrimination, Verdict, discriminate, select_best
from evolvedirector.director.shapes import ShapesDirector

DIRECTORS: dict[str, type[Director]] = {
    "shapes": ShapesDirector,
}


def build_director(config, *, seed: int, exclude=()) -> Director:
    if config.backend == "shapes":
        return ShapesDirector(judge_accuracy=config.judge_accuracy, seed=seed, exclude=exclude)
    raise ValueError(f"unknown director backend {config.backend!r}; choose from {sorted(DIRECTORS)}")


__all__ = [
    "DIRECTORS", "Director", "Discrimination", "Verdict", "build_director", "discriminate", "select_best",
]
