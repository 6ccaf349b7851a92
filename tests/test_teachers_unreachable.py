"""Teachers that cannot be reached stop `evolvedirector run` with exit code 1 and one line per
teacher (who, its host, the fault kind and count, what to check), and no round is committed as if
it had gone well: against a port nothing listens on, an images API that answers 401 and one that
answers 402, on an open-world config. Mid-run, a teacher that answered round 0 and then fails
every call stops the run the same way, and the same command resumes once it answers. An empty
set is never "learned"."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
import yaml
from open_world_helpers import write_prompt_file
from typer.testing import CliRunner

from evolvedirector.cli import app
from evolvedirector.store import RoundRecord, Store
from evolvedirector.teachers.health import CALLS_BEFORE_GIVING_UP
from evolvedirector.testing.chat_server import OpenWorldChatServer
from evolvedirector.testing.fake_images_api import FakeImageAPI
from tests.helpers import free_port

pytestmark = pytest.mark.timeout(300)
runner = CliRunner()
KEY_ENV = "EVOLVEDIRECTOR_TEST_UNREACHABLE_KEY"
CONCURRENCY = 4  # each teacher's default: calls in flight at once
MAX_ATTEMPTS = 5  # the default retry.max_attempts
SEED_PROMPTS = 24  # of the file's 30, 6 held out: three times the calls a teacher is given up after


def openai_teacher(name: str, base_url: str, **fields) -> dict:
    """Default retries, timeouts and concurrency: what a user's config gets."""
    return {"name": name, "backend": "openai", "model": "fake-image", "base_url": base_url, "api_key_env": None,
            "cost_per_image": 0.04, "default_size": "32x32", **fields}


def write_config(tmp_path: Path, teachers: list[dict], chat_url: str, max_rounds: int = 1, **evolve) -> Path:
    data = {
        "out": str(tmp_path / "run"), "seed": 5, "device": "cpu", "threads": 1,
        "world": {"name": "prompts", "prompts": str(write_prompt_file(tmp_path / "prompts.jsonl")),
                  "heldout_share": 0.2, "image_size": 32},
        "teachers": teachers,
        "director": {"backend": "openai", "base_url": chat_url, "model": "open-world-director",
                     "structured_output": "none", "retries": 1, "backoff_s": 0.01, "timeout_s": 20,
                     "panel_size": 32, "concurrency": 1},
        "student": {"size": "tiny", "sample_steps": 2, "ema_decay": 0.9, "guidance": 2.0},
        "train": {"batch_size": 4, "lr": 1e-3, "warmup_steps": 1, "steps_per_round": 2},
        "evolve": {"seed_prompts": SEED_PROMPTS, "select_ratio": 0.5, "extend_num": 3, "mutation_ratio": 1.0,
                   "render_steps": 2, "heldout_judged": 0, **evolve},  # the counts here are of the set's calls
        "budget": {"max_rounds": max_rounds},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def table(run: Path, sql: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(run / "evolve.db")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def error_line(output: str, teacher: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith(f"error: teacher {teacher} at ")]
    assert len(lines) == 1, output
    return lines[0]


def calls_made(line: str) -> int:
    return int(re.search(r"; (\d+) calls? made", line).group(1))


def test_teachers_that_cannot_be_reached_stop_the_run_at_once_with_a_line_each(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-the-wrong-key")
    down = free_port()
    with FakeImageAPI(api_key="sk-test-the-right-key") as refusing, FakeImageAPI() as broke, \
            OpenWorldChatServer(seed=1) as chat:
        broke.fail_from("generate", "402")
        config = write_config(tmp_path, [
            openai_teacher("down", f"http://127.0.0.1:{down}/v1"),
            openai_teacher("badkey", f"{refusing.url}/v1", api_key_env=KEY_ENV),
            openai_teacher("broke", f"{broke.url}/v1"),
        ], chat.base_url)
        # Past the preflight (which would stop at `down`'s free call, tests/test_check.py): round 0's own lines.
        result = runner.invoke(app, ["run", str(config), "--no-check"])
        asked = {"badkey": refusing.requests["generate"], "broke": broke.requests["generate"]}
        director_asked = sum(chat.requests.values())
    output = result.output
    assert result.exit_code == 1, output
    assert "stopped:" not in output and "learned the whole set" not in output and "Traceback" not in output
    run = tmp_path / "run"
    assert table(run, "SELECT * FROM rounds") == []  # round 0 was not committed
    assert table(run, "SELECT * FROM teacher_calls") == []  # nothing billed: nothing kept from asking again
    faults = {(r["teacher"], r["kind"]): r["count"] for r in table(run, "SELECT * FROM teacher_faults")}

    # What makes it fast: each teacher is asked a few calls, not the round's 24, each retried no more
    # than it is owed (401 and 402 never).
    line = error_line(output, "down")
    assert line.startswith(f"error: teacher down at 127.0.0.1:{down} failed every call of round 0 (faults: "
                           f"connection {faults['down', 'connection']}; ")
    assert CALLS_BEFORE_GIVING_UP <= calls_made(line) < CALLS_BEFORE_GIVING_UP + CONCURRENCY
    assert faults["down", "connection"] <= MAX_ATTEMPTS * (CALLS_BEFORE_GIVING_UP + CONCURRENCY)
    assert f"check teachers.0.base_url (http://127.0.0.1:{down}/v1) and that its server at 127.0.0.1:{down} is up" \
        in line
    for name, server, kind, status, check in [
        ("badkey", refusing, "auth", 401, f"check the API key in the environment variable {KEY_ENV} "
                                          "(teachers.1.api_key_env)"),
        ("broke", broke, "out_of_credits", 402, "the account is out of credits"),
    ]:
        line = error_line(output, name)
        host = server.url.removeprefix("http://")
        assert line.startswith(f"error: teacher {name} at {host} failed every call of round 0 (faults: "
                               f"{kind} {asked[name]}; {asked[name]} calls made, {SEED_PROMPTS - asked[name]} not "
                               f"tried; last: {kind}: HTTP {status} "), line
        first = 1 if kind == "out_of_credits" else CALLS_BEFORE_GIVING_UP  # no later call could be paid
        assert first <= asked[name] < first + CONCURRENCY
        assert check in line and line.endswith("then run the same command again to resume")
        assert faults[name, kind] == asked[name]
    assert "sk-test-the-wrong-key" not in output
    assert director_asked == 0  # nothing bought, nothing to select among


@pytest.mark.parametrize("overlap", ["serial", "async"])
def test_a_teacher_that_fails_mid_run_stops_it_and_the_same_command_resumes_once_it_answers(tmp_path, overlap):
    with FakeImageAPI() as api, OpenWorldChatServer(seed=1) as chat:
        # Round 0's seed images, then every generation fails: a server that went wrong mid-run.
        api.fail_from("generate", "500", after=SEED_PROMPTS)
        config = write_config(tmp_path, [openai_teacher("api", f"{api.url}/v1")], chat.base_url, overlap=overlap)
        result = runner.invoke(app, ["run", str(config)])
        tried = api.requests["generate"] - SEED_PROMPTS
        run = tmp_path / "run"
        assert result.exit_code == 1, result.output
        assert [r["round"] for r in table(run, "SELECT round FROM rounds")] == [0]  # round 1 not committed
        line = error_line(result.output, "api")
        host = api.url.removeprefix("http://")
        assert line.startswith(f"error: teacher api at {host} failed every call of round 1 (faults: server_error "
                               f"{tried}; "), line
        assert f"the server at {host} kept failing (HTTP 5xx)" in line
        assert line.endswith(f" (settings: {run / 'config.yaml'}), then run the same command again to resume")
        # A teacher that answered before keeps its retries: every call made was tried each time it may be.
        assert tried >= MAX_ATTEMPTS * calls_made(line) > 0
        assert "stopped:" not in result.output
        assert all(r["status"] == "done" and r["round"] == 0 for r in table(run, "SELECT * FROM teacher_calls"))

        api.heal()
        again = runner.invoke(app, ["run", str(config)])
    assert again.exit_code == 0, again.output
    assert f"resuming {run} after round 0" in again.output
    assert "stopped: max_rounds=1 reached" in again.output
    assert [r["round"] for r in table(run, "SELECT round FROM rounds")] == [0, 1]
    calls = table(run, "SELECT * FROM teacher_calls")
    assert any(c["round"] == 1 for c in calls) and all(c["status"] == "done" for c in calls)
    assert table(run, "SELECT COUNT(*) AS n FROM samples WHERE round_added = 1")[0]["n"] > 0


def test_a_seed_round_that_bought_nothing_is_not_committed_nor_called_learned(tmp_path):
    with FakeImageAPI() as api, OpenWorldChatServer(seed=1) as chat:
        api.fail_from("generate", "refuse")  # the teacher answers: it refuses every prompt
        config = write_config(tmp_path, [openai_teacher("api", f"{api.url}/v1")], chat.base_url)
        result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 1, result.output
    assert "learned the whole set" not in result.output and "stopped:" not in result.output
    last = result.output.splitlines()[-1]
    assert last.startswith("error: round 0 bought no teacher image, so there is nothing to train on and it is not "
                           f"committed: teacher api answered {SEED_PROMPTS} calls with no image ({SEED_PROMPTS} "
                           "refused or failed jobs; last: refused: HTTP 400 "), last
    assert table(tmp_path / "run", "SELECT * FROM rounds") == []


def test_an_empty_set_left_by_an_older_version_is_a_failure_not_learning(tmp_path):
    """A round 0 committed with no image (as versions that did not refuse it did): the next run says
    so with exit code 1, never that the student learned the whole set."""
    with OpenWorldChatServer(seed=1) as chat:
        config = write_config(tmp_path, [openai_teacher("api", f"http://127.0.0.1:{free_port()}/v1")],
                              chat.base_url, max_rounds=3)
        run = tmp_path / "run"
        run.mkdir()
        store = Store(run / "evolve.db")
        store.commit_round(RoundRecord(round=0, started_at=0.0, new_samples=[], metrics={}))
        store.close()
        result = runner.invoke(app, ["run", str(config), "--no-check"])  # past the preflight's line for the port
    assert result.exit_code == 1, result.output
    assert "learned the whole set" not in result.output
    assert result.output.splitlines()[-1].startswith(
        f"error: the set of {run} is empty: round 0 was committed without a teacher image (0 teacher calls failed; "
        "faults: none counted), and a committed round is not bought again")
