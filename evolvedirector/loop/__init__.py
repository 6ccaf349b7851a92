"""The evolution loop: the single coordinator that trains, asks the director, and writes the store.

`evolve.py` builds a run and runs its rounds; `round.py` is one round, written out; `acquire.py`
buys teacher images; `run_folder.py` writes checkpoints and grids; `console.py` shows progress.
"""

from evolvedirector.loop.console import RoundSummary
from evolvedirector.loop.evolve import Evolution

__all__ = ["Evolution", "RoundSummary"]
