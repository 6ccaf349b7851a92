"""The open world end to end, on a CPU: a user's .jsonl prompt file (prompt + tag, 3 categories,
a held-out share), two teachers (a tiny random PixArt-α pipeline on disk, and an images API over
HTTP), a director served over the OpenAI chat protocol that answers in free text and now and then
with garbage, and a latent-space student (tiny T5, tiny VAE). `evolvedirector run` is killed with
SIGKILL inside round 2 and run again to the end; then `status` and `eval` are run on the folder."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from open_world_helpers import (
    CATEGORIES, build_prompt_t5, build_tiny_pixart, ledger_rows, run_config, write_prompt_file,
)
from tiny_models import build_tiny_vae

from evolvedirector.config import parse_config
from evolvedirector.testing.chat_server import OpenWorldChatServer
from evolvedirector.testing.fake_images_api import FakeImageAPI
from evolvedirector.worlds import OTHER, build_world
from evolvedirector.worlds.prompts.proposals import DUPLICATE, HELD_OUT, META, TOO_LONG, UNPRINTABLE, normalise

KEY_ENV = "EVOLVEDIRECTOR_TEST_IMAGES_KEY"
KEY = "sk-test-open-world-0123456789"


def cli(*args: str, out: Path) -> subprocess.Popen:
    """`python -m evolvedirector.cli ARGS`, its output to OUT (a file: a full pipe would block it)."""
    with open(out, "ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "evolvedirector.cli", *args], stdout=sink,
                                stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture
def spawn():
    """cli() whose processes are killed at the end of the test, should an assertion leave one running."""
    started: list[subprocess.Popen] = []

    def start(*args: str, out: Path) -> subprocess.Popen:
        started.append(cli(*args, out=out))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def rows(db: Path, sql: str) -> list[sqlite3.Row]:
    if not db.exists():  # connecting would create it
        return []
    conn = sqlite3.connect(db, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # the schema is not written yet
        return []
    finally:
        conn.close()


def generated_prompts(api: FakeImageAPI) -> Counter[str]:
    """Images the API generated (and so billed), per prompt: its own books."""
    with api.lock:
        return Counter(body.get("prompt") for route, body in api.bodies if route == "generate")


def wait_for(process: subprocess.Popen, condition, log: Path, timeout: float = 400) -> None:
    # A deadline only for a run that hangs: the wait ends as soon as the condition holds. 120 s was
    # passed on 2 cores shared with several busy programs.
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, "the run ended early:\n" + log.read_text()[-3000:]
        assert time.time() < deadline, "the run never got there:\n" + log.read_text()[-3000:]
        time.sleep(0.005)


@pytest.mark.timeout(1200)
def test_a_prompt_file_run_killed_resumed_and_evaluated(tmp_path, monkeypatch, spawn):
    started = time.time()
    prompts = write_prompt_file(tmp_path / "my-prompts.jsonl")
    t5 = build_prompt_t5(tmp_path / "t5")
    vae = build_tiny_vae(tmp_path / "vae")
    pixart = build_tiny_pixart(tmp_path / "pixart", t5, vae)
    monkeypatch.setenv(KEY_ENV, KEY)
    run, log = tmp_path / "run", tmp_path / "run.log"
    db = run / "evolve.db"
    file_keys = {normalise(p) for ps in CATEGORIES.values() for p in ps}

    with FakeImageAPI(api_key=KEY) as api:
        # The held-out share of the file, as the run will draw it; the server is told them, to propose them.
        data = run_config(run, prompts, t5, vae, pixart, api.url, "http://127.0.0.1:1/v1", KEY_ENV, max_rounds=3)
        heldout = build_world(parse_config(data)).heldout
        assert len(heldout) == 6 and {normalise(p) for p in heldout} <= file_keys
        with OpenWorldChatServer(seed=1, heldout=heldout) as chat:
            data["director"]["base_url"] = chat.base_url
            # The chat server answers from one random stream: the director's held-out judging would
            # shift the proposals this test counts refusals of (tests/test_heldout_judged.py tests it).
            data.setdefault("evolve", {})["heldout_judged"] = 0
            config = tmp_path / "config.yaml"
            config.write_text(yaml.safe_dump(data))

            # 1. Run; SIGKILL it inside round 2, as soon as round 2 starts buying teacher images.
            process = spawn("run", str(config), out=log)
            wait_for(process, lambda: len(rows(db, "SELECT round FROM rounds")) >= 2, log)
            calls_at_round_1 = len(ledger_rows(db))
            wait_for(process, lambda: len(ledger_rows(db)) > calls_at_round_1
                     or len(rows(db, "SELECT round FROM rounds")) >= 3, log)
            process.send_signal(signal.SIGKILL)
            process.wait()
            at_kill = {row["key"]: row for row in ledger_rows(db)}
            books_at_kill = generated_prompts(api)
            assert 2 <= len(rows(db, "SELECT round FROM rounds")) <= 3

            # 2. The same command resumes after the last committed round and finishes.
            process = spawn("run", str(config), out=log)
            assert process.wait(timeout=240) == 0, log.read_text()[-3000:]
            assert "resuming" in log.read_text()
            chat_books = Counter(chat.requests)
            run_seconds = time.time() - started

            conn = sqlite3.connect(db)
            conn.row_factory = sqlite3.Row
            assert [r["round"] for r in conn.execute("SELECT round FROM rounds ORDER BY round")] == [0, 1, 2, 3]
            samples = {s["id"]: dict(s) for s in conn.execute("SELECT * FROM samples")}
            refusals = [dict(r) for r in conn.execute("SELECT * FROM refusals")]
            calls = [dict(r) for r in conn.execute("SELECT * FROM teacher_calls")]
            spend = conn.execute("SELECT SUM(cost) FROM teacher_calls WHERE billed = 1").fetchone()[0]
            conn.close()

            # The director was asked every kind of question, and only those.
            assert all(chat_books[kind] > 0 for kind in ("verdict", "expand", "mutate", "categorize")), chat_books
            assert chat_books["unknown"] == 0

            # a. Director-written prompts, with lineage and categories.
            written = [s for s in samples.values() if s["operation"] in ("expand", "mutate")]
            assert {s["operation"] for s in written} == {"expand", "mutate"}, Counter(s["operation"] for s in written)
            for s in written:
                assert normalise(s["prompt"]) not in file_keys, s
                parent = samples[s["parent_id"]]  # lineage: the parent is a sample of the set
                assert parent["round_added"] < s["round_added"]
                if s["operation"] == "expand":
                    assert s["domain"] == parent["domain"], (s, parent)
                else:
                    assert s["domain"] in (*CATEGORIES, OTHER), s
            assert {s["domain"] for s in samples.values() if s["operation"] == "seed"} <= set(CATEGORIES)
            active = [s["prompt"] for s in samples.values() if s["round_deleted"] is None]
            assert len({normalise(p) for p in active}) == len(active)  # no duplicates in the set

            # b. The garbage the director wrote is refused, with reasons, and kept with its parent.
            reasons = Counter(r["reason"] for r in refusals)
            assert {META, DUPLICATE, TOO_LONG, UNPRINTABLE, HELD_OUT} <= set(reasons), reasons
            assert all(r["parent_id"] in samples and r["proposal"] for r in refusals)
            accepted = sum(s["operation"] != "seed" for s in samples.values())
            assert accepted > len(refusals), (accepted, reasons)  # most proposals still make it
            status = subprocess.run([sys.executable, "-m", "evolvedirector.cli", "status", str(run)],
                                    capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            assert status.returncode == 0, status.stderr
            assert f"proposals refused: {len(refusals)}" in status.stdout, status.stdout
            assert all(reason in status.stdout for reason in reasons), status.stdout

            # c. No teacher call paid twice.
            assert len({c["key"] for c in calls}) == len(calls)
            assert all(c["status"] == "done" for c in calls), Counter(c["status"] for c in calls)
            for key, before in at_kill.items():
                if before["status"] == "done":  # never bought again: the same row, the same image
                    after = next(c for c in calls if c["key"] == key)
                    assert (after["image_hash"], after["created_at"]) == (before["image_hash"], before["created_at"])
            pending_prompts = {r["prompt"] for r in at_kill.values()
                               if r["status"] == "pending" and r["teacher"] == "api"}
            books = generated_prompts(api)
            bought_twice = [p for p, n in books.items() if n > 1]  # pending at the kill, generated before it
            for prompt, n in books.items():
                assert n <= (2 if prompt in pending_prompts else 1), (prompt, n)
            done_before = {r["prompt"] for r in at_kill.values() if r["status"] == "done" and r["teacher"] == "api"}
            assert all(books[p] == books_at_kill[p] == 1 for p in done_before)
            assert {c["prompt"] for c in calls if c["teacher"] == "api"} == set(books)  # every image on the ledger
            assert spend == pytest.approx(sum(c["cost"] for c in calls))
            assert spend == pytest.approx(0.001 * sum(c["teacher"] == "pixart" for c in calls)
                                          + 0.04 * sum(c["teacher"] == "api" for c in calls))

            # e. Held-out prompts never enter the set, nor are they bought during the run.
            heldout_keys = {normalise(p) for p in heldout}
            assert not heldout_keys & {normalise(s["prompt"]) for s in samples.values()}
            assert not heldout_keys & {normalise(c["prompt"]) for c in calls}

            # d. Evaluation on the held-out prompts: win rates per teacher and category, and the report.
            evaluation = subprocess.run(
                [sys.executable, "-m", "evolvedirector.cli", "eval", str(run), "--limit", "4", "--resamples", "50"],
                capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )
            assert evaluation.returncode == 0, evaluation.stdout[-3000:] + evaluation.stderr[-3000:]
    results = json.loads((run / "eval" / "eval.json").read_text())
    assert set(results["win_rates"]) == {"pixart", "api"}
    for teacher, cells in results["win_rates"].items():
        categories = set(cells) - {"all"}
        assert categories and categories <= set(CATEGORIES), (teacher, cells)
        assert cells["all"]["n"] == 4 == sum(cells[c]["n"] for c in categories)
    assert results["n_prompts"] == 4 and set(results["categories"]) <= set(CATEGORIES)
    report = (run / "report.html").read_text()
    assert "Proposals the world refused" in report and all(c in report for c in CATEGORIES)
    print(f"run (build, run, kill, resume, checks): {run_seconds:.1f} s; total {time.time() - started:.1f} s; "
          f"{sum(r['status'] == 'pending' for r in at_kill.values())} calls pending at the kill, "
          f"{len(bought_twice)} generated twice by the API")


def test_quoted_proposals_reach_the_set_without_half_a_pair_of_quotes(tmp_path):
    from evolvedirector.director.parsing import parse_prompt_list, parse_single_prompt
    from evolvedirector.worlds.prompts import PromptsWorld, read_prompt_file

    world = PromptsWorld(read_prompt_file(write_prompt_file(tmp_path / "p.jsonl")), [], image_size=32)
    # What the scripted director's labelled mutation reply becomes in the set (seen in the run above).
    mutation = world.accept(parse_single_prompt('Prompt: "a vintage bicycle by a brick wall"'), set())
    assert mutation.prompt == "a vintage bicycle by a brick wall"
    [expansion] = parse_prompt_list('["\\"G I G G L E\\" painted on a wall"]', 2)
    assert world.accept(expansion, set()).prompt == '"G I G G L E" painted on a wall'
