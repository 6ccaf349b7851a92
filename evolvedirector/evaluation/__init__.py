"""Evaluation: held-out accuracy in the shapes world, `evolvedirector eval` (the student against
each teacher), Fréchet distances, sample lineage, the run report, and the blind A/B page."""
