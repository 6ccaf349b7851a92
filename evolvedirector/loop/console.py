"""What a run shows while it works: progress bars for long stages and one line per round."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from evolvedirector.director.failures import Tally, describe_kinds
from evolvedirector.evaluation.stats import format_rate


@dataclass
class RoundSummary:
    round: int
    set_size: int
    judged: int = 0
    teacher_wins: int = 0
    added: int = 0
    deleted: int = 0
    mutated: int = 0
    refused: int = 0
    calls: int = 0
    dollars: float = 0.0
    seconds: float = 0.0
    accuracy: dict = field(default_factory=dict)
    loss: float | None = None
    director: Tally = field(default_factory=Tally)  # the round's director calls, and those that failed
    steps: int = 0  # training steps of the round
    train_seconds: float = 0.0  # time inside those steps
    director_heldout: dict = field(default_factory=dict)  # the director's held-out figures (loop/heldout.py)


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"), console=console, transient=True,
        disable=not console.is_terminal,  # a log file gets the round lines, not bar redraws
    )


def print_round(console: Console, s: RoundSummary, categories: tuple[str, ...], left: str = "") -> None:
    win = f"{s.teacher_wins / s.judged:.2f}" if s.judged else "  - "
    refused = f", refused {s.refused}" if s.refused else ""
    failed = s.director.by_kind()
    director = (f" | director failed {sum(failed.values())} of {sum(s.director.calls.values())} calls "
                f"({describe_kinds(failed)})" if failed else "")
    if s.accuracy:
        accuracy = " ".join(f"{c} {s.accuracy.get(c, 0):.2f}" for c in categories)
        heldout = f"held-out {accuracy} mean {s.accuracy.get('mean', 0):.2f}"
    elif s.director_heldout:  # a world without exact rules: the director's judgement
        heldout = describe_judged(s.director_heldout, categories)
    else:
        heldout = "held-out -"
    console.print(
        f"round {s.round:>3} | set {s.set_size:>4} | teacher-win {win} | +{s.added} -{s.deleted} "
        f"(mutated {s.mutated}{refused}){director} | calls {s.calls} ${s.dollars:.2f} | {heldout} | "
        f"{s.seconds:.0f}s{left}",
        soft_wrap=True, highlight=False,
    )


def describe_judged(judged: dict, categories: tuple[str, ...]) -> str:
    """'held-out, director's win rate against the best teacher (23 of 24 judged, 4 s): animals 0.38
    [0.12, 0.62] ... mean 0.41 [0.27, 0.55]', 95% intervals."""
    figures = judged["categories"]
    cells = " ".join(f"{c} {format_rate(figures[c])}" for c in (*categories, "mean") if c in figures)
    head = (f"held-out, director's {judged['measure']} ({judged['usable']} of {judged['prompts']} judged, "
            f"{judged['seconds']:.0f} s)")
    return f"{head}: {cells}" if cells else f"{head}: no usable answer"


def show_beside_teachers(console: Console, store, world, teachers: list) -> None:
    """In a graded world, the last graded round's held-out accuracy beside each teacher's own
    (`teachers`: the run's teacher configs)."""
    graded = [r for r in store.rounds() if r["metrics"].get("accuracy")]
    if not world.graded or not graded:
        return
    per_category = len(world.heldout) // max(1, len(world.categories))
    print_beside_teachers(console, graded[-1]["metrics"]["accuracy"], world.teachers_own(teachers),
                          world.categories, per_category, graded[-1]["round"])


def print_beside_teachers(console: Console, student: dict, teachers: dict[str, dict[str, float]],
                          categories: tuple[str, ...], per_category: int, at_round: int) -> None:
    """The run's last lines: the student's held-out accuracy per category beside each teacher's own
    on the same prompts, so whether the student beats its teachers is the first thing seen."""
    names = ["student", *teachers]
    width = max(len(n) for n in names) + 2
    console.print(f"held-out accuracy, {per_category} prompts per category (student after round {at_round}; "
                  "each teacher graded on its own images of the same prompts):", highlight=False)
    console.print(" " * width + " ".join(f"{c:>9}" for c in (*categories, "mean")), highlight=False)
    for name, accuracy in (("student", student), *teachers.items()):
        console.print(f"{name:<{width}}" + " ".join(f"{accuracy.get(c, 0):>9.2f}" for c in (*categories, "mean")),
                      highlight=False)
    if teachers:
        above = [n for n, a in teachers.items() if student.get("mean", 0) > a.get("mean", 0)]
        verdict = ("above every teacher" if len(above) == len(teachers) else
                   f"above {', '.join(above)}" if above else "below every teacher")
        console.print(f"the student's mean {student.get('mean', 0):.2f} is {verdict}", highlight=False)
