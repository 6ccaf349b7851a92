"""Resuming a run after its last committed round: the trainer back at that round's checkpoint, and
the teacher calls an interrupted run left pending finished (paid once, never twice)."""

from __future__ import annotations

from rich.console import Console

from evolvedirector.loop.run_folder import RunFolder
from evolvedirector.store import Store
from evolvedirector.teachers import Ledger, Teacher
from evolvedirector.teachers.ledger import describe_spend


async def resume(folder: RunFolder, store: Store, trainer, ledger: Ledger, teachers: dict[str, Teacher],
                 console: Console, last: int) -> None:
    checkpoint = store.rounds()[-1]["checkpoint"]
    if checkpoint is not None:
        trainer.load(folder.path / checkpoint)
    settled = await ledger.settle_pending(teachers)
    if settled:
        console.print(f"finished {settled} teacher calls left pending by the interrupted run")
    console.print(
        f"resuming {folder.path} after round {last}: {len(store.active_samples())} samples, "
        f"step {trainer.step}, {store.spend()[0]} teacher calls, {describe_spend(store)}"
    )
