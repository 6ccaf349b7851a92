"""A failing command prints one line that names the cause, exits with 2 for bad input, and shows
the traceback only with --debug (the installed command's entry point, in a subprocess)."""

import os
import subprocess
import sys

import yaml

from evolvedirector.cli import one_line


def evolvedirector(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("EVOLVEDIRECTOR_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "evolvedirector.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def config_file(tmp_path, name="run", **fields):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"out": str(tmp_path / name), "budget": {"max_rounds": 1}, **fields}))
    return path


def test_a_failure_past_validation_is_one_line_naming_the_field_with_exit_code_2(tmp_path):
    # A hub id shaped like org/name passes the config's checks and fails when the model loads.
    config = config_file(tmp_path, student={"text_encoder": "nobody/no-such-t5"})
    result = evolvedirector("run", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: ") and "student.text_encoder: cannot load nobody/no-such-t5" in lines[0]
    assert "--debug" in lines[1]

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("")
    config = config_file(tmp_path, "open", world={"name": "prompts", "prompts": str(prompts)})
    result = evolvedirector("run", str(config), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout.startswith(f"error: {prompts}")
    assert "Traceback" not in result.stderr


def test_a_director_field_of_another_backend_is_refused_before_the_run_starts(tmp_path):
    config = config_file(tmp_path, director={"backend": "shapes", "mode": "pointwise"})
    result = evolvedirector("run", str(config), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stdout + result.stderr
    assert f"invalid configuration in {config}" in result.stdout
    assert "  director: Value error, mode is only used by backends 'openai' and 'local'" in result.stdout
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_traceback(tmp_path):
    config = config_file(tmp_path, student={"text_encoder": "nobody/no-such-t5"})
    result = evolvedirector("--debug", "run", str(config), cwd=tmp_path)
    assert result.returncode == 1  # Python's own exit code for an uncaught exception
    assert "Traceback (most recent call last)" in result.stderr and "student.text_encoder" in result.stderr


def test_one_line_names_a_library_error_and_cuts_long_messages():
    assert one_line(OSError("no such\n  file")) == "OSError: no such file"
    assert one_line(ValueError("seed: too big")) == "seed: too big"
    assert len(one_line(RuntimeError("x" * 5000))) == 400


def test_a_start_that_failed_before_buying_takes_the_corrected_config(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from evolvedirector.cli import app
    from tests.helpers import tiny_config

    monkeypatch.delenv("CLI_ERRORS_UNSET_KEY", raising=False)
    broken = tiny_config(tmp_path / "run", max_rounds=0)
    broken["director"] = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                          "api_key_env": "CLI_ERRORS_UNSET_KEY"}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(broken))
    first = CliRunner().invoke(app, ["run", str(path)])
    assert first.exit_code == 2 and first.output.startswith("error: director.api_key_env: the environment variable "
                                                             "CLI_ERRORS_UNSET_KEY is not set")
    assert (tmp_path / "run" / "config.yaml").is_file()  # written before the director failed

    path.write_text(yaml.safe_dump(tiny_config(tmp_path / "run", max_rounds=0)))  # the shapes director
    second = CliRunner().invoke(app, ["run", str(path)])
    assert second.exit_code == 0, second.output
    assert "resuming with its saved config" not in second.output
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["director"]["backend"] == "shapes"
