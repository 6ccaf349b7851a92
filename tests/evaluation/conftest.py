"""A tiny finished run, evaluated once for the whole package: the evaluation tests share it.

Tests that write (votes, a second evaluation) work on their own copy (`run_copy`).
"""

import shutil

import pytest
import yaml
from typer.testing import CliRunner

from evolvedirector.cli import app
from tests.helpers import tiny_config


@pytest.fixture(scope="session")
def evaluated_run(tmp_path_factory):
    """(run folder, what `evolvedirector eval` printed) for a 2-round tiny run."""
    folder = tmp_path_factory.mktemp("evaluated")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(folder / "run", max_rounds=2)))
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["eval", str(folder / "run"), "--resamples", "200"])
    assert result.exit_code == 0, result.output
    return folder / "run", result.output


@pytest.fixture
def run_copy(evaluated_run, tmp_path):
    """A private copy of the evaluated run, for tests that add to it."""
    target = tmp_path / "run"
    shutil.copytree(evaluated_run[0], target)
    return target
