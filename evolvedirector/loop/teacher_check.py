"""After a round's purchases: whether its teachers answered, before anything of it is committed.

A teacher that failed every call, or was given up on (teachers/health.py), is named in a note and
the round goes on with the others. When every teacher asked failed every call and nothing was
bought, or the seed round bought nothing at all, the round is not committed: `TeachersFailed`
stops the run with one line per teacher, the teachers' unbilled failures forgotten by the ledger so
that the same command, run again, resumes at that round and buys them.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from evolvedirector.loop import run_safety
from evolvedirector.teachers import Ledger
from evolvedirector.teachers.health import TeacherRound, TeachersFailed, describe_failure


async def check_teachers(ledger: Ledger, run_dir: Path, teachers: list, console: Console, round: int,
                         new_samples: list) -> None:
    """`teachers`: the run's teacher configs, in the config's order."""
    asked = ledger.round_health(round)
    failing = [health for health in asked if health.failed_every_call() or health.given_up]
    every = bool(failing) and all(health.failed_every_call() for health in asked)
    if (every and not new_samples) or (round == 0 and not new_samples):
        await ledger.forget_failures(round, [health.teacher for health in failing])
        # Once anything was bought or trained, the run folder's config.yaml is what a run reads.
        saved = run_dir / "config.yaml" if run_safety.check_store_file(run_dir) else None
        lines = [_describe(health, teachers, saved, "then run the same command again to resume") for health in failing]
        raise TeachersFailed(lines or [_nothing_bought(ledger, asked)])
    for health in failing:
        console.print(f"note: {_describe(health, teachers, None, f'round {round} goes on with the others')}",
                      highlight=False, soft_wrap=True)


def _describe(health: TeacherRound, teachers: list, saved: Path | None, then: str) -> str:
    index = next(i for i, t in enumerate(teachers) if t.name == health.teacher)
    return describe_failure(health, teachers[index], index, resumed_config=saved, then=then)


def _nothing_bought(ledger: Ledger, asked: list[TeacherRound]) -> str:
    """Why a seed round bought nothing although no teacher failed outright."""
    if ledger.exhausted:
        why = "the budget (budget.max_teacher_calls, budget.max_dollars) allows no image"
    elif asked:
        why = "; ".join(f"teacher {h.teacher} answered {h.made} calls with no image ({h.answered_no} refused "
                        f"or failed jobs; last: {h.last_error or '-'})" for h in asked)
    else:
        why = "no seed prompt was asked for"
    return (f"round 0 bought no teacher image, so there is nothing to train on and it is not committed: {why}; "
            "fix that, then run the same command again")
