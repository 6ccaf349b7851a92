"""`evolvedirector bench loop`: the loop itself, serial rounds against asynchronous ones.

Two runs of the open world with the same seed, student and budget, one per `evolve.overlap`,
each against its own director and teachers served over HTTP on 127.0.0.1 with set latencies:
the scripted chat director (evolvedirector/testing/chat_server.py) and two teachers on the fake
images API (testing/fake_images_api.py), both in this process. Both train with one thread, so
that what differs is how the loop schedules its work, not how torch splits a step.

Per mode, over the rounds after the seed round (from the first round's start to the last
round's commit): rounds per hour; the trainer's busy fraction (time inside training steps over
that wall time); training steps per second; and the director's and the teachers' utilization
(the time their requests were in flight over wall time x their concurrency). The last line is
`loop busy=<the asynchronous busy fraction> speedup=<asynchronous rounds per hour / serial>`.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import typer

from evolvedirector.bench import bench_app

MODES = ("serial", "async")
TEACHERS = ("fake-a", "fake-b")


@dataclass(frozen=True)
class Settings:
    director_latency: float  # seconds per director answer
    image_latency: float  # seconds per teacher image
    rounds: int
    steps_per_round: int
    seed_prompts: int
    director_concurrency: int = 8
    teacher_concurrency: int = 8  # per teacher


# Training a round takes about as long as its director and teacher calls (a tiny student's step
# is ~16 ms on a 2-core CPU): where overlap gains most, up to twice the rounds per hour.
FULL = Settings(director_latency=1.0, image_latency=5.0, rounds=6, steps_per_round=1200, seed_prompts=24)
QUICK = Settings(director_latency=0.2, image_latency=1.0, rounds=4, steps_per_round=250, seed_prompts=16)

SUBJECTS = ("cat", "lighthouse", "bicycle", "teapot", "robot", "sailboat", "violin", "cactus", "owl", "castle")
PLACES = ("on a beach", "in the snow", "on a table", "at night", "in a forest", "under the rain", "in space",
          "on a rooftop", "in a library", "by a river")


def write_prompts(path: Path) -> Path:
    """100 short prompts in ten categories (the subject), as a .tsv prompt file."""
    lines = ["prompt\tcategory"] + [f"a {subject} {place}\t{subject}" for subject in SUBJECTS for place in PLACES]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_config(out: Path, prompts: Path, director_url: str, teacher_url: str, mode: str, settings: Settings) -> dict:
    return {
        "out": str(out), "seed": 0, "threads": 1, "device": "cpu",
        "world": {"name": "prompts", "prompts": str(prompts), "image_size": 32},
        "teachers": [{"name": name, "backend": "openai", "model": name, "base_url": f"{teacher_url}/v1",
                      "api_key_env": None, "default_size": "32x32", "cost_per_image": 0.04,
                      "concurrency": settings.teacher_concurrency} for name in TEACHERS],
        "director": {"backend": "openai", "base_url": director_url, "model": "open-world-director", "retries": 1,
                     "concurrency": settings.director_concurrency, "panel_size": 64},
        "student": {"size": "tiny", "max_tokens": 32, "prediction_type": "sample", "sample_steps": 5,
                    "ema_decay": 0.99},
        "train": {"batch_size": 8, "lr": 1e-3, "warmup_steps": 10, "steps_per_round": settings.steps_per_round},
        "evolve": {"seed_prompts": settings.seed_prompts, "render_steps": 2, "overlap": mode},
        "budget": {"max_rounds": settings.rounds},
    }


def busy_share(spans: list[tuple[float, float]], start: float, end: float, concurrency: int) -> float:
    """The time `spans` were in flight within [start, end], over (end - start) x concurrency."""
    inside = sum(max(0.0, min(b, end) - max(a, start)) for a, b in spans)
    return inside / ((end - start) * concurrency)


def run_mode(mode: str, settings: Settings, folder: Path) -> dict:
    """One run of the loop in `mode`; its figures."""
    from rich.console import Console

    from evolvedirector.config import parse_config
    from evolvedirector.loop import Evolution
    from evolvedirector.store import Store
    from evolvedirector.testing.chat_server import OpenWorldChatServer
    from evolvedirector.testing.fake_images_api import FakeImageAPI

    prompts = write_prompts(folder / "prompts.tsv")
    with OpenWorldChatServer(latency=settings.director_latency) as director, \
            FakeImageAPI(latency=settings.image_latency) as teachers:
        config = parse_config(run_config(folder / mode, prompts, director.base_url, teachers.url, mode, settings))
        summaries = Evolution(config, console=Console(file=io.StringIO())).run()
        director_spans = list(director.spans)
        teacher_spans = [(a, b) for route, a, b in teachers.spans if route == "generate"]
    store = Store(folder / mode / "evolve.db")
    try:
        rounds = store.rounds()[1:]
    finally:
        store.close()
    start, end = rounds[0]["started_at"], rounds[-1]["committed_at"]
    wall = end - start
    trained = [s for s in summaries if s.round > 0]
    return {
        "mode": mode, "rounds": len(rounds), "wall": wall, "rounds_per_hour": len(rounds) / wall * 3600,
        "busy": sum(s.train_seconds for s in trained) / wall, "steps_per_second": sum(s.steps for s in trained) / wall,
        "director": busy_share(director_spans, start, end, settings.director_concurrency),
        "teachers": busy_share(teacher_spans, start, end, settings.teacher_concurrency * len(TEACHERS)),
    }


def table(results: list[dict]) -> list[str]:
    lines = [f"{'mode':<7} {'rounds':>6} {'wall_s':>7} {'rounds/h':>8} {'busy':>5} {'steps/s':>7} "
             f"{'director':>8} {'teachers':>8}"]
    for r in results:
        lines.append(f"{r['mode']:<7} {r['rounds']:>6} {r['wall']:>7.1f} {r['rounds_per_hour']:>8.0f} "
                     f"{r['busy']:>5.2f} {r['steps_per_second']:>7.1f} {r['director']:>8.2f} {r['teachers']:>8.2f}")
    return lines


@bench_app.command("loop")
def loop(
    quick: bool = typer.Option(False, "--quick", help="latencies 0.2 s and 1 s, 4 rounds of 250 steps (about a minute)"),
    director_latency: float | None = typer.Option(None, "--director-latency", min=0.0,
                                                  help="seconds per director answer (default 1; quick 0.2)"),
    image_latency: float | None = typer.Option(None, "--image-latency", min=0.0,
                                               help="seconds per teacher image (default 5; quick 1)"),
    rounds: int | None = typer.Option(None, "--rounds", min=1, help="rounds after the seed round (default 6; quick 4)"),
    steps: int | None = typer.Option(None, "--steps", min=1, help="training steps per round (default 1200; quick 250)"),
    seed_prompts: int | None = typer.Option(None, "--seed-prompts", min=1, help="prompts in the seed set (default 24; quick 16)"),
    out: Path | None = typer.Option(None, "--out", help="keep both runs here (default: a temporary folder)"),
) -> None:
    """Serial against asynchronous rounds, against a served director and teachers with set latencies:
    rounds per hour, the trainer's busy fraction, and the director's and teachers' utilization."""
    settings = QUICK if quick else FULL
    chosen = {"director_latency": director_latency, "image_latency": image_latency, "rounds": rounds,
              "steps_per_round": steps, "seed_prompts": seed_prompts}
    settings = replace(settings, **{name: value for name, value in chosen.items() if value is not None})
    print(f"bench loop: the open world, director {settings.director_latency:g} s per answer "
          f"(concurrency {settings.director_concurrency}), two teachers {settings.image_latency:g} s per image "
          f"(concurrency {settings.teacher_concurrency} each), {settings.rounds} rounds of "
          f"{settings.steps_per_round} steps, one training thread", flush=True)
    if out is not None and any((out / mode).exists() for mode in MODES):
        raise typer.BadParameter(f"{out} already holds a run of this bench (a run there would resume); give a new folder",
                                 param_hint="--out")
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as scratch:
        folder = out or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        results = []
        for mode in MODES:
            results.append(run_mode(mode, settings, folder))
            print(f"  {mode}: {results[-1]['rounds']} rounds in {results[-1]['wall']:.1f} s", flush=True)
    for line in table(results):
        print(line)
    serial, overlapped = results
    print(f"loop busy={overlapped['busy']:.2f} speedup={overlapped['rounds_per_hour'] / serial['rounds_per_hour']:.2f}")
