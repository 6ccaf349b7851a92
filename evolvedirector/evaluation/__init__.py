"""Evaluation: held-out accuracy in the shapes world, and the run report."""
