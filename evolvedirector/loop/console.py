"""What a run shows while it works: progress bars for long stages and one line per round."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from evolvedirector.director.failures import Tally, describe_kinds


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
    else:  # a world without exact rules: quality is judged by `evolvedirector eval`
        heldout = "held-out -"
    console.print(
        f"round {s.round:>3} | set {s.set_size:>4} | teacher-win {win} | +{s.added} -{s.deleted} "
        f"(mutated {s.mutated}{refused}){director} | calls {s.calls} ${s.dollars:.2f} | {heldout} | "
        f"{s.seconds:.0f}s{left}",
        soft_wrap=True, highlight=False,
    )
