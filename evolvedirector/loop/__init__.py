"""The evolution loop: the single coordinator that trains, asks the director, and writes the store.

`evolve.py` wires a run's collaborators and runs its rounds; `round.py` is one round, written out
as named stages (serial, overlapped with training, or the seed round), and `stages.py` the stages
themselves; `training.py` trains on a set version with the chosen thread count, `background.py` in
a thread of its own for the overlapped round; `acquire.py` buys teacher images and
`teacher_check.py` stops a round no teacher answered; `stopping.py` says when a run stops and
`resume.py` resumes one; `plan.py` is a run's first line; `run_folder.py` writes checkpoints and
grids; `run_lock.py` keeps one writer per run folder; `run_safety.py` refuses damaged folders and
tidies a killed run's leftovers; `console.py` shows progress.
"""

__all__ = ["Evolution", "RoundSummary"]


def __getattr__(name: str):
    # Imported on first use: the run folder's checks serve light commands (`status`) that must
    # not wait for torch.
    if name == "Evolution":
        from evolvedirector.loop.evolve import Evolution

        return Evolution
    if name == "RoundSummary":
        from evolvedirector.loop.console import RoundSummary

        return RoundSummary
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
