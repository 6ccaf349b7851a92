"""The evolution loop: the single coordinator that trains, asks the director, and writes the store."""

from evolvedirector.loop.evolve import Evolution, RoundSummary

__all__ = ["Evolution", "RoundSummary"]
