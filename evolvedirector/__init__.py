"""EvolveDirector: train a text-to-image student on a small, director-curated dynamic dataset.

The parts, one folder each: `world` (the shapes world, the embedded default), `teachers` (image
sources and the ledger), `director` (the judge), `store` (the dynamic dataset), `student` (the
diffusion transformer), `trainer` (the training loop), `loop` (the rounds), `evaluation`.
"""

__version__ = "0.1.0"
