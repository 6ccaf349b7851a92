"""`evolvedirector eval` buys within the run's budget: the run's budget.max_dollars and
budget.max_teacher_calls cap the whole spend, training and evaluations together; `--max-dollars`
and `--max-calls` can only lower what an evaluation may add."""

import pytest
import yaml
from typer.testing import CliRunner

from evolvedirector.cli import app
from evolvedirector.store import Store
from evolvedirector.worlds.shapes import grammar

runner = CliRunner()


def new_prompts(run_dir, n: int, tmp_path):
    """A prompts file of n grammar prompts the run never bought."""
    store = Store(run_dir / "evolve.db")
    bought = {row["prompt"] for row in store.conn.execute("SELECT prompt FROM teacher_calls")}
    store.close()
    path = tmp_path / "new.txt"
    path.write_text("\n".join([p for p in grammar.all_prompts() if p not in bought][:n]) + "\n")
    return path


def set_budget(run_dir, **budget) -> None:
    path = run_dir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["budget"].update(budget)
    path.write_text(yaml.safe_dump(config))


def spend(run_dir):
    store = Store(run_dir / "evolve.db")
    try:
        return store.spend()
    finally:
        store.close()


@pytest.mark.parametrize("own_cap", [None, "100"])
def test_eval_never_takes_the_run_past_its_dollar_budget(run_copy, tmp_path, own_cap):
    _, dollars = spend(run_copy)
    cap = round(dollars + 0.25, 2)  # room for a few of the 3 x 8 images eval wants
    set_budget(run_copy, max_dollars=cap)
    args = ["eval", str(run_copy), "--prompts", str(new_prompts(run_copy, 8, tmp_path)), "--resamples", "20"]
    result = runner.invoke(app, args + (["--max-dollars", own_cap] if own_cap else []))
    assert result.exit_code == 0, result.output
    calls_after, dollars_after = spend(run_copy)
    assert dollars < dollars_after <= cap + 1e-9  # it bought what fitted, and no more
    assert "not bought: budget of $" in result.output


def test_eval_own_caps_still_lower_the_run_budget(run_copy, tmp_path):
    calls, _ = spend(run_copy)
    set_budget(run_copy, max_teacher_calls=calls + 10)
    args = ["eval", str(run_copy), "--prompts", str(new_prompts(run_copy, 8, tmp_path)), "--resamples", "20"]
    result = runner.invoke(app, args + ["--max-calls", "4"])
    assert result.exit_code == 0, result.output
    assert spend(run_copy)[0] == calls + 4
    result = runner.invoke(app, args + ["--max-calls", "100"])  # more than the run allows: the run's cap holds
    assert result.exit_code == 0, result.output
    assert spend(run_copy)[0] == calls + 10
    assert "teacher-call budget of" in result.output
