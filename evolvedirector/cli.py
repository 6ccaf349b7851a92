"""The `evolvedirector` command."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

import evolvedirector.bench.efficiency  # noqa: F401  (registers `bench efficiency`)
import evolvedirector.bench.teachers  # noqa: F401  (registers `bench teachers`)
from evolvedirector.bench import bench_app
from evolvedirector.config import ConfigError, RunConfig, demo_config_path, load_config

app = typer.Typer(
    help=(
        "EvolveDirector: train an open text-to-image student on a small dataset that a "
        "vision-language director keeps curating from advanced teacher models.\n\n"
        "Start with `evolvedirector demo`: the whole loop in the shapes world, on a CPU, in minutes. "
        "Then `evolvedirector status runs/demo` and `evolvedirector sample runs/demo --prompts FILE --out DIR`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(bench_app, name="bench")
# `evolvedirector judge-bench`: how well a director judges and proposes (evolvedirector/bench/judge.py).
from evolvedirector.bench.judge import judge_bench  # noqa: E402

app.command("judge-bench")(judge_bench)
console = Console(soft_wrap=True)  # long paths and round lines stay on one line in logs


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/bold red] {message}", highlight=False)
    raise typer.Exit(code=2)


def _run_config_path(run_dir: Path) -> Path:
    return Path(run_dir) / "config.yaml"


def _resolve(config: RunConfig) -> RunConfig:
    """An existing run resumes with its own saved config; only the budget may be raised."""
    saved = _run_config_path(config.out)
    if not saved.exists():
        return config
    previous = load_config(saved, overrides={"out": str(config.out)})
    if previous.model_dump(exclude={"budget"}) != config.model_dump(exclude={"budget"}):
        console.print(f"[yellow]note:[/yellow] {config.out} exists; resuming with its saved config.yaml "
                      "(only the budget is taken from this command)")
    previous.budget = config.budget
    return previous


def _evolve(config: RunConfig) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download weights at run time
    from evolvedirector.loop import Evolution  # heavy imports only when a run starts

    config = _resolve(config)
    Evolution(config, console=console).run()
    console.print(f"report: {Path(config.out) / 'report.html'}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="run folder; run again on the same folder to resume"),
) -> None:
    """Run the whole loop in the shapes world with the teachers atlas, quill and tally (about 5 minutes on a CPU).

    Prints one line per round (set size, teacher-win rate, added/deleted/mutated, teacher calls,
    spend, held-out accuracy per domain) and writes OUT/report.html. Interrupt it at any time:
    the same command resumes after the last finished round and never buys an image twice.
    """
    try:
        config = load_config(demo_config_path(), overrides={"out": str(out)})
    except ConfigError as error:
        _fail(str(error))
    _evolve(config)


@app.command()
def run(config_file: Path = typer.Argument(..., help="YAML file; see evolvedirector/configs/demo.yaml")) -> None:
    """Run the loop from a config file (resumes when its `out` folder already holds a run).

    Every field has a default (the paper's where it gives one); unknown or invalid fields are
    refused with their name and the reason.
    """
    try:
        config = load_config(config_file)
    except ConfigError as error:
        _fail(str(error))
    _evolve(config)


def _open_store(run_dir: Path):
    from evolvedirector.store import Store

    if not (Path(run_dir) / "evolve.db").is_file():
        _fail(f"{run_dir} is not a run folder (no evolve.db in it)")
    return Store(Path(run_dir) / "evolve.db")


@app.command()
def status(run_dir: Path = typer.Argument(..., help="a run folder")) -> None:
    """Rounds, set size, verdict counts, teacher calls and spend of a run (safe while it runs)."""
    store = _open_store(run_dir)
    rounds = store.rounds()
    last = rounds[-1] if rounds else None
    console.print(f"[bold]{run_dir}[/bold]")
    console.print(f"rounds committed: {len(rounds)} (last: {last['round'] if last else '-'})")
    console.print(f"set size: {len(store.active_samples())} active of {store.count_samples()} ever added")
    verdicts = store.verdict_counts()
    console.print(f"verdicts: {sum(verdicts.values())} (teacher won {verdicts.get('teacher', 0)}, "
                  f"student won {verdicts.get('student', 0)})")
    calls, dollars = store.spend()
    console.print(f"teacher calls: {calls}, spend: ${dollars:.2f}")
    table = Table("teacher", "done", "pending", "failed", "spend $")
    for row in store.conn.execute(
        "SELECT teacher, SUM(status='done') AS done, SUM(status='pending') AS pending,"
        " SUM(status='failed') AS failed, SUM(cost) AS dollars FROM teacher_calls GROUP BY teacher ORDER BY teacher"
    ):
        table.add_row(row["teacher"], str(row["done"]), str(row["pending"]), str(row["failed"]), f"{row['dollars']:.2f}")
    console.print(table)
    faults = store.fault_counts()
    if faults:
        console.print("teacher faults (each handled, retried where safe): " + "; ".join(
            f"{teacher} " + ", ".join(f"{kind} {n}" for kind, n in kinds.items()) for teacher, kinds in faults.items()
        ))
    if last and last["metrics"].get("accuracy"):
        accuracy = last["metrics"]["accuracy"]
        console.print("held-out accuracy (last round): " + ", ".join(f"{k} {v:.2f}" for k, v in accuracy.items()))


@app.command()
def sample(
    run_dir: Path = typer.Argument(..., help="a run folder"),
    prompts: Path = typer.Option(..., "--prompts", help="text file, one prompt per line"),
    out: Path = typer.Option(..., "--out", help="folder for 00000.png, 00001.png, ... in line order"),
    seed: int = typer.Option(0, "--seed", help="noise seed; the same seed gives the same images"),
    steps: int | None = typer.Option(None, "--steps", help="DPM-Solver steps (default: the run's sample_steps)"),
    guidance: float | None = typer.Option(None, "--guidance", help="classifier-free guidance (default: the run's)"),
) -> None:
    """Draw one image per prompt with the run's latest student (EMA weights), at the world's canvas size."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not prompts.is_file():
        _fail(f"prompts file {prompts} does not exist")
    lines = prompts.read_text().splitlines()
    if not lines:
        _fail(f"prompts file {prompts} is empty")
    store = _open_store(run_dir)
    checkpoint = next((r["checkpoint"] for r in reversed(store.rounds()) if r["checkpoint"]), None)
    if checkpoint is None:
        _fail(f"{run_dir} has no trained student yet (no round after the seed set has finished)")
    try:
        config = load_config(_run_config_path(run_dir), overrides={"out": str(run_dir)})
    except ConfigError as error:
        _fail(str(error))

    from evolvedirector.store import write_atomic
    from evolvedirector.store.images import png_bytes
    from evolvedirector.student import Student

    student = Student(config.student, config.world.image_size)
    student.load_weights(Path(run_dir) / checkpoint)
    images = student.generate(lines, seed=seed, steps=steps, guidance=guidance)
    out.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        write_atomic(out / f"{index:05d}.png", png_bytes(image))
    console.print(f"wrote {len(images)} images to {out} ({checkpoint}, seed {seed})")


if __name__ == "__main__":
    app()
