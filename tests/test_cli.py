"""The commands as a user types them (through typer's runner, in this process)."""

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from evolvedirector.cli import app
from tests.helpers import tiny_config

runner = CliRunner()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(folder / "run", max_rounds=1)))
    result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    return folder / "run", result.output


def test_run_prints_a_line_per_round_and_writes_the_report(finished_run):
    run_dir, output = finished_run
    assert output.splitlines()[0].startswith("plan: round 1 after the seed round, each ")
    assert "on this machine (measured: " in output.splitlines()[0]
    lines = [line for line in output.splitlines() if line.startswith("round")]
    assert [line.split("|")[0].split()[1] for line in lines] == ["0", "1"]
    for field in ("set", "teacher-win", "calls", "held-out", "object", "relation", "count", "text", "mean"):
        assert field in lines[-1]
    assert "max_rounds=1 reached" in output
    assert (run_dir / "report.html").read_text().count("<tr>") >= 3
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["evolve"]["select_ratio"] == 0.2


def test_status_reports_rounds_set_verdicts_calls_and_spend(finished_run):
    run_dir, _ = finished_run
    result = runner.invoke(app, ["status", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "rounds committed: 2 (last: 1)" in result.output
    assert "verdicts: 3" in result.output  # ceil(0.2 * 12) judged in round 1
    [set_line] = [line for line in result.output.splitlines() if line.startswith("set size: ")]
    [by_category] = [line for line in result.output.splitlines() if line.startswith("active set by category: ")]
    counts = [int(part.split()[-1]) for part in by_category.removeprefix("active set by category: ").split(", ")]
    assert counts == sorted(counts, reverse=True) and sum(counts) == int(set_line.split()[2])
    for teacher in ("atlas", "quill", "tally"):
        assert teacher in result.output
    assert "teacher calls:" in result.output and "spend: $" in result.output


def test_sample_writes_one_png_per_line_in_order(finished_run, tmp_path):
    run_dir, _ = finished_run
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle on the left\nthree blue squares\nthe letter T in green\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["sample", str(run_dir), "--prompts", str(prompts), "--out", str(out), "--seed", "7"])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.iterdir())
    assert files == ["00000.png", "00001.png", "00002.png"]
    first = np.asarray(Image.open(out / "00000.png"))
    assert first.shape == (32, 32, 3)
    again = tmp_path / "again"
    runner.invoke(app, ["sample", str(run_dir), "--prompts", str(prompts), "--out", str(again), "--seed", "7"])
    np.testing.assert_array_equal(np.asarray(Image.open(again / "00000.png")), first)


def test_sample_refuses_a_folder_that_is_not_a_run(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("two red circles\n")
    result = runner.invoke(app, ["sample", str(tmp_path), "--prompts", str(prompts), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "not a run folder" in result.output


def test_run_refuses_a_bad_config_with_the_field_and_reason(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"evolve": {"mutation_ratio": 2}, "budget": {"max_rounds": 1}}))
    result = runner.invoke(app, ["run", str(bad)])
    assert result.exit_code == 2
    assert "evolve.mutation_ratio" in result.output and "less than or equal to 1" in result.output


def test_help_explains_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "run", "status", "sample"):
        assert command in result.output


def test_status_lists_teacher_faults(finished_run):
    from functools import partial

    from evolvedirector.store import teacher_calls
    from tests.ledger_writes import write_rows

    run_dir, _ = finished_run
    timeout = partial(teacher_calls.count_fault, teacher="atlas", kind="timeout")
    write_rows(run_dir / "evolve.db", timeout, timeout)
    result = runner.invoke(app, ["status", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "teacher faults" in result.output and "atlas timeout 2" in result.output


@pytest.mark.parametrize("exported, expected", [
    ({}, "1000"),
    ({"GOMP_SPINCOUNT": "300000"}, "300000"),  # the user's own value wins
    ({"OMP_WAIT_POLICY": "PASSIVE"}, None),  # GOMP_SPINCOUNT would override the user's policy
])
def test_the_command_shortens_openmp_spinning_unless_the_user_chose(exported, expected):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")} | exported
    out = subprocess.run([sys.executable, "-c", "import os, evolvedirector.cli; print(os.environ.get('GOMP_SPINCOUNT'))"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(expected)
