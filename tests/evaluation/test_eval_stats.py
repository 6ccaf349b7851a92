"""Win / tie / lose rates and their bootstrap intervals."""

import pytest

from evolvedirector.evaluation.stats import format_rate, outcome_rates


def test_rates_are_shares_and_intervals_hold_them():
    outcomes = ["win"] * 6 + ["tie"] * 3 + ["lose"] * 11
    rates = outcome_rates(outcomes, resamples=500, seed=1)
    assert rates["n"] == 20
    assert rates["win"]["rate"] == pytest.approx(0.30)
    assert rates["tie"]["rate"] == pytest.approx(0.15)
    assert rates["lose"]["rate"] == pytest.approx(0.55)
    for name in ("win", "tie", "lose"):
        cell = rates[name]
        assert 0 <= cell["low"] <= cell["rate"] <= cell["high"] <= 1
        assert cell["high"] - cell["low"] > 0.1  # 20 pairs leave real uncertainty


def test_intervals_narrow_with_more_pairs_and_are_reproducible():
    small = outcome_rates(["win", "lose"] * 5, seed=0)
    large = outcome_rates(["win", "lose"] * 500, seed=0)
    assert large["win"]["high"] - large["win"]["low"] < (small["win"]["high"] - small["win"]["low"]) / 3
    assert outcome_rates(["win", "lose"] * 5, seed=0) == small


def test_unanimous_outcomes_have_a_degenerate_interval():
    rates = outcome_rates(["lose"] * 7)
    assert rates["lose"] == {"rate": 1.0, "low": 1.0, "high": 1.0}
    assert rates["win"] == {"rate": 0.0, "low": 0.0, "high": 0.0}


def test_no_outcomes_and_bad_outcomes():
    empty = outcome_rates([])
    assert empty["n"] == 0 and empty["win"]["rate"] is None
    assert format_rate(empty["win"]) == "-"
    with pytest.raises(ValueError, match="draw"):
        outcome_rates(["win", "draw"])
    assert format_rate({"rate": 0.5, "low": 0.25, "high": 0.75}) == "0.50 [0.25, 0.75]"
