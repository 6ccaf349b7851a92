"""Win / tie / lose rates with bootstrap confidence intervals.

Used for the director's verdicts in `evolvedirector eval` and for the human votes of the A/B
page. The unit that is resampled is one judged pair (a prompt against one teacher); pairs are
drawn with replacement and each rate's interval is the percentile interval of its resampled
values. With few pairs the intervals are wide, which is the point of showing them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OUTCOMES = ("win", "tie", "lose")  # from the student's side


def outcome_rates(
    outcomes: Sequence[str], *, resamples: int = 1000, level: float = 0.95, seed: int = 0,
) -> dict:
    """{"n": n, "win": {"rate", "low", "high"}, "tie": ..., "lose": ...} for outcomes in OUTCOMES.

    The same outcomes and seed always give the same intervals, so reports are reproducible.
    """
    unknown = set(outcomes) - set(OUTCOMES)
    if unknown:
        raise ValueError(f"outcomes must be among {OUTCOMES}, got {sorted(unknown)}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    n = len(outcomes)
    result: dict = {"n": n}
    if n == 0:
        for name in OUTCOMES:
            result[name] = {"rate": None, "low": None, "high": None}
        return result
    codes = np.array([OUTCOMES.index(o) for o in outcomes])
    rng = np.random.default_rng(seed)
    drawn = codes[rng.integers(0, n, size=(resamples, n))]
    tail = (1 - level) / 2 * 100
    for k, name in enumerate(OUTCOMES):
        resampled = (drawn == k).mean(axis=1)
        low, high = np.percentile(resampled, [tail, 100 - tail])
        result[name] = {"rate": float((codes == k).mean()), "low": float(low), "high": float(high)}
    return result


def format_rate(cell: dict) -> str:
    """0.42 [0.30, 0.55], or - when there is nothing to rate."""
    if cell.get("rate") is None:
        return "-"
    return f"{cell['rate']:.2f} [{cell['low']:.2f}, {cell['high']:.2f}]"


def accuracy_intervals(outcomes: dict[str, Sequence[bool]], *, resamples: int = 1000, level: float = 0.95,
                       seed: int = 0) -> dict[str, dict[str, float]]:
    """category -> {"rate", "low", "high"}: the share of correct outcomes with a percentile bootstrap
    interval over prompts, and "mean", the categories' mean (weighed equally), whose resamples draw
    each category's prompts within it, so it keeps the categories' weights."""
    if not outcomes or any(len(v) == 0 for v in outcomes.values()):
        raise ValueError("every category needs at least one outcome")
    rng = np.random.default_rng(seed)
    tail = (1 - level) / 2 * 100
    result, resampled = {}, []
    for category, values in outcomes.items():
        codes = np.asarray(values, dtype=float)
        drawn = codes[rng.integers(0, len(codes), size=(resamples, len(codes)))].mean(axis=1)
        resampled.append(drawn)
        low, high = np.percentile(drawn, [tail, 100 - tail])
        result[category] = {"rate": float(codes.mean()), "low": float(low), "high": float(high)}
    means = np.mean(resampled, axis=0)
    low, high = np.percentile(means, [tail, 100 - tail])
    result["mean"] = {"rate": float(np.mean([r["rate"] for r in result.values()])), "low": float(low),
                      "high": float(high)}
    return result


def mean_interval(values: Sequence[float], *, level: float = 0.95) -> dict[str, float | None]:
    """{"rate", "low", "high"}: the mean of independent runs (seeds) with a Student t-interval.

    A t-interval rather than a bootstrap: with 3 seeds a bootstrap has 10 distinct resamples and
    its percentiles understate the spread. One value has a mean but no interval (None)."""
    if len(values) == 0:
        raise ValueError("the mean of no values is undefined")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    from scipy.stats import t

    codes = np.asarray(values, dtype=float)
    mean = float(codes.mean())
    if len(codes) < 2:
        return {"rate": mean, "low": None, "high": None}
    half = float(t.ppf((1 + level) / 2, len(codes) - 1) * codes.std(ddof=1) / np.sqrt(len(codes)))
    return {"rate": mean, "low": mean - half, "high": mean + half}


def paired_difference_interval(a: dict[str, Sequence[float]], b: dict[str, Sequence[float]], *,
                               resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """{"rate", "low", "high"}: mean over categories of a's share minus b's, with a percentile
    bootstrap that draws the same prompts for both (a[c][i] and b[c][i] are one prompt's), each
    category's within it, categories weighed equally. Pairing takes out how hard the prompts that
    happened to be drawn are, which both sides share."""
    if set(a) != set(b) or not a:
        raise ValueError(f"a and b need the same categories, got {sorted(a)} and {sorted(b)}")
    rng = np.random.default_rng(seed)
    tail = (1 - level) / 2 * 100
    rates, resampled = [], []
    for category in a:
        x, y = np.asarray(a[category], dtype=float), np.asarray(b[category], dtype=float)
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"{category}: a and b need the same prompts, at least one (got {len(x)} and {len(y)})")
        difference = x - y
        rates.append(difference.mean())
        resampled.append(difference[rng.integers(0, len(difference), size=(resamples, len(difference)))].mean(axis=1))
    low, high = np.percentile(np.mean(resampled, axis=0), [tail, 100 - tail])
    return {"rate": float(np.mean(rates)), "low": float(low), "high": float(high)}
