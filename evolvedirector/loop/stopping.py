"""Why a run stops before round r, or None while it goes on: a budget spent, or a set with nothing
left to learn."""

from __future__ import annotations

from pathlib import Path

from evolvedirector.config import BudgetConfig
from evolvedirector.store import Store
from evolvedirector.teachers import Ledger


class EmptySet(RuntimeError):
    """A committed set with no sample in it that none ever left: nothing was learned, and there is
    nothing to train on (a round 0 committed by a version that did not refuse an empty seed round)."""


def stop_reason(budget: BudgetConfig, ledger: Ledger, store: Store, run_dir: Path, round: int) -> str | None:
    if round == 0:
        return None
    if budget.max_rounds is not None and round > budget.max_rounds:
        return f"max_rounds={budget.max_rounds} reached"
    if ledger.exhausted:
        return "teacher budget spent"
    if not store.active_samples():
        if not store.count_samples():
            raise _empty_set(store, run_dir)
        # Samples leave the set only when the director judged the student's image as good.
        return "the student has learned the whole set"
    rounds = store.rounds()
    if budget.max_minutes is not None and len(rounds) > 1:
        durations = [r["committed_at"] - r["started_at"] for r in rounds]
        # Start another round only if one as long as the last still fits.
        if sum(durations) + durations[-1] > budget.max_minutes * 60:
            return f"max_minutes={budget.max_minutes:g} would be passed by another round"
    return None


def _empty_set(store: Store, run_dir: Path) -> EmptySet:
    failed = sum(row["failed"] or 0 for row in store.spend_by_teacher())
    faults = "; ".join(f"{teacher} " + ", ".join(f"{kind} {n}" for kind, n in kinds.items())
                       for teacher, kinds in store.fault_counts().items()) or "none counted"
    return EmptySet(
        f"the set of {run_dir} is empty: round 0 was committed without a teacher image ({failed} "
        f"teacher calls failed; faults: {faults}), and a committed round is not bought again; once the teachers "
        "answer, start the run again with another `out` folder")
