"""`evolvedirector check CONFIG [--buy-one]`, and the same free checks as `run` starts: every part
of a config is reached with its key before anything is bought, each failure one line naming the
part and what to change, exit 0 only when every part that can be checked works."""

from __future__ import annotations

import sqlite3

import pytest
import yaml
from open_world_helpers import write_prompt_file
from typer.testing import CliRunner

from evolvedirector.cli import app
from evolvedirector.testing.chat_server import OpenWorldChatServer
from tests.helpers import free_port
from tests.teachers.fakes.bfl_api import FakeBFL

pytestmark = pytest.mark.timeout(300)
runner = CliRunner()
KEY = "bfl-test-key"


def write_config(tmp_path, bfl_url: str, chat_url: str, **director) -> str:
    data = {
        "out": str(tmp_path / "run"), "seed": 1, "device": "cpu", "threads": 1,
        "world": {"name": "prompts", "prompts": str(write_prompt_file(tmp_path / "prompts.jsonl")),
                  "heldout_share": 0.2, "image_size": 32},
        "teachers": [
            {"name": "flux", "backend": "bfl", "model": "flux-pro-1.1", "api_key_env": "BFL_API_KEY",
             "cost_per_image": 0.04, "base_url": bfl_url, "poll_interval_s": 0.01},
        ],
        "director": {"backend": "openai", "base_url": chat_url, "model": "open-world-director",
                     "structured_output": "none", "retries": 1, "backoff_s": 0.01, "timeout_s": 20,
                     "panel_size": 32, **director},
        "student": {"size": "tiny", "sample_steps": 2},
        "train": {"batch_size": 4, "steps_per_round": 2},
        "evolve": {"seed_prompts": 12, "render_steps": 2, "heldout_judged": 0},
        "budget": {"max_rounds": 1, "max_dollars": 2.0},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def row(output: str, part: str, check: str) -> str:
    return next(line for line in output.splitlines() if part in line and check in line)


def test_check_reaches_every_part_and_buys_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("BFL_API_KEY", KEY)
    with FakeBFL(KEY, credits=50) as bfl, OpenWorldChatServer(seed=0) as chat:
        result = runner.invoke(app, ["check", write_config(tmp_path, bfl.url, chat.base_url)])
        chat_calls = sum(chat.requests.values())
    output = result.output
    assert result.exit_code == 0, output
    assert "│ ok " in row(output, "teacher flux", "free check") and "50 credits" in output  # GET /v1/credits
    assert "│ ok " in row(output, "director", "models") and "│ ok " in row(output, "director", "judge")
    assert bfl.billed == 0 and bfl.submits == [] and chat_calls == 1  # one judge question, no image
    assert "estimate: the seed round asks 12 prompts of 1 teacher: 12 calls, $0.48; the run stops at $2, 1 rounds" \
        in output
    assert "all 3 checks passed" in output
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_wrong_key_and_a_director_without_logprobs_are_a_line_each(tmp_path, monkeypatch):
    monkeypatch.setenv("BFL_API_KEY", "bfl-the-wrong-key")
    with FakeBFL(KEY) as bfl, OpenWorldChatServer(seed=0, logprobs=False) as chat:
        result = runner.invoke(app, ["check", write_config(tmp_path, bfl.url, chat.base_url, mode="pointwise")])
    output = result.output
    assert result.exit_code == 1, output
    host = bfl.url.removeprefix("http://")
    [teacher_line] = [line for line in output.splitlines() if line.startswith("error: teacher flux")]
    assert teacher_line.startswith(f"error: teacher flux at {host}: free check failed (auth: HTTP 403")
    assert "check the API key in the environment variable BFL_API_KEY (teachers.0.api_key_env)" in teacher_line
    [director_line] = [line for line in output.splitlines() if line.startswith("error: director")]
    assert "logprobs failed" in director_line and "the server returned no logprobs" in director_line
    assert "bfl-the-wrong-key" not in output and bfl.billed == 0


def test_buy_one_buys_one_image_per_teacher_on_the_record(tmp_path, monkeypatch):
    monkeypatch.setenv("BFL_API_KEY", KEY)
    with FakeBFL(KEY) as bfl, OpenWorldChatServer(seed=0) as chat:
        result = runner.invoke(app, ["check", write_config(tmp_path, bfl.url, chat.base_url), "--buy-one"])
    assert result.exit_code == 0, result.output
    assert "│ ok " in row(result.output, "teacher flux", "one image") and "all 4 checks passed" in result.output
    assert bfl.billed == 1 and (tmp_path / "run" / "preflight" / "evolve.db").is_file()


def test_run_stops_in_seconds_on_a_wrong_key_before_buying_and_no_check_skips_it(tmp_path, monkeypatch):
    monkeypatch.setenv("BFL_API_KEY", "bfl-the-wrong-key")
    with FakeBFL(KEY) as bfl, OpenWorldChatServer(seed=0) as chat:
        config = write_config(tmp_path, bfl.url, chat.base_url)
        result = runner.invoke(app, ["run", config])
        asked_before = dict(bfl.requests)
        skipped = runner.invoke(app, ["run", config, "--no-check"])
    assert result.exit_code == 1, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert line.startswith("error: teacher flux at ") and "free check failed (auth: HTTP 403" in line
    assert sum(asked_before.values()) == 1 and bfl.submits == []  # one free call, nothing submitted
    with sqlite3.connect(tmp_path / "run" / "evolve.db") as db:
        assert db.execute("SELECT COUNT(*) FROM teacher_calls").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM rounds").fetchone() == (0,)
    # Skipped, the run itself meets the wrong key at its first submits and stops with round 0's line.
    assert skipped.exit_code == 1 and "failed every call of round 0" in skipped.output, skipped.output


def test_run_lists_an_unset_key_beside_a_director_that_is_down(tmp_path, monkeypatch):
    """One try shows both things to fix: the unset key is not left for the next try to find."""
    monkeypatch.delenv("BFL_API_KEY", raising=False)
    with FakeBFL(KEY) as bfl:
        config = write_config(tmp_path, bfl.url, f"http://127.0.0.1:{free_port()}/v1")
        result = runner.invoke(app, ["run", config])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, result.output
    assert errors[0].startswith("error: teacher flux at ") and "setup failed" in errors[0] and "BFL_API_KEY" in errors[0]
    assert errors[1].startswith("error: director at 127.0.0.1:") and "models failed (connection" in errors[1]
    assert sum(bfl.requests.values()) == 0 and bfl.submits == []


def test_an_unset_key_alone_is_left_to_the_runs_own_error(tmp_path, monkeypatch):
    monkeypatch.delenv("BFL_API_KEY", raising=False)
    with FakeBFL(KEY) as bfl, OpenWorldChatServer(seed=0) as chat:
        result = runner.invoke(app, ["run", write_config(tmp_path, bfl.url, chat.base_url)])
    # The run's own error, which `main` prints as one line: it names the field.
    assert isinstance(result.exception, ValueError), result.output
    assert str(result.exception).startswith("teachers.flux.api_key_env: the environment variable BFL_API_KEY")
    assert "setup failed" not in result.output and bfl.submits == []


def test_a_local_pipeline_is_not_loaded_to_learn_that_it_has_no_free_check(monkeypatch):
    """`run`'s preflight would load every copy of a diffusers teacher, throw it away, and the run
    would load it again: a teacher with no server and no free call is not built to be checked."""
    import asyncio

    import diffusers

    from evolvedirector.config import DiffusersTeacherConfig
    from evolvedirector.loop.preflight import NOT_CHECKED, check_teacher
    from evolvedirector.teachers import build_teacher

    class Pipeline:
        def to(self, device):
            return self

        def set_progress_bar_config(self, **_):
            pass

    loads = []
    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained",
                        classmethod(lambda cls, model, **_: loads.append(model) or Pipeline()))
    config = DiffusersTeacherConfig(name="sd", backend="diffusers", model="a/pipeline", devices=["cpu", "cpu"])
    [check] = asyncio.run(check_teacher(0, config))
    assert (check.part, check.host, check.status) == ("teacher sd", "local", NOT_CHECKED) and loads == []
    build_teacher(config)  # what the run itself does: one copy per device
    assert loads == ["a/pipeline", "a/pipeline"]


def test_a_server_that_ignores_structured_output_is_refused_with_that_sentence(tmp_path, monkeypatch):
    # The scripted open-world server answers free text ("(B) fits the prompt better."), whatever
    # structured_output asks: as `transformers serve` does.
    monkeypatch.setenv("BFL_API_KEY", KEY)
    with FakeBFL(KEY) as bfl, OpenWorldChatServer(seed=0, a_rate=0.0) as chat:
        config = write_config(tmp_path, bfl.url, chat.base_url, structured_output="structured_outputs")
        checked = runner.invoke(app, ["check", config])
        ran = runner.invoke(app, ["run", config])
        submits = list(bfl.submits)
    for result in (checked, ran):
        assert result.exit_code == 1, result.output
        [line] = [line for line in result.output.splitlines() if line.startswith("error: director")]
        assert "judge failed (ignored_structure: the reply" in line and "is not A or B" in line
        assert "set director.structured_output: none, or serve the model with vLLM or SGLang" in line
    assert submits == []  # refused before anything was bought
