"""What several test files share: the tiny run's config and the invariants every run keeps, and
a run started from the command line, counted in its store and killed at a state it reached."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evolvedirector.store import Store


def free_port() -> int:
    """A port nothing listens on: bound by the OS, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_config(out: Path, **budget) -> dict:
    return {
        "out": str(out),
        "seed": 3,
        "threads": 1,
        "world": {"image_size": 32, "heldout_per_domain": 2},
        "student": {"size": "tiny", "sample_steps": 2, "ema_decay": 0.9, "guidance": 2.0},
        "train": {"batch_size": 4, "lr": 1e-3, "warmup_steps": 2, "steps_per_round": 3},
        "evolve": {"seed_prompts": 12, "render_steps": 2},
        "budget": budget or {"max_rounds": 2},
    }


def check_run_invariants(store: Store, images_root: Path, redraws: bool = False) -> None:
    rounds = [r["round"] for r in store.rounds()]
    assert rounds == list(range(len(rounds)))
    # Every paid call is finished, once, with its image on disk; spend is the sum of their prices,
    # and of the calls a killed run left in flight (made again on resume: possibly billed twice).
    calls = store.conn.execute("SELECT * FROM teacher_calls").fetchall()
    assert all(c["status"] == "done" for c in calls)
    assert all((images_root / c["image_hash"][:2] / f"{c['image_hash']}.png").exists() for c in calls)
    prices = {"atlas": 0.04, "quill": 0.06, "tally": 0.03}
    in_flight = sum(prices[c["teacher"]] * c["remade"] for c in calls)
    assert store.possibly_billed()[1] == pytest.approx(in_flight)
    assert store.spend()[1] == pytest.approx(sum(prices[c["teacher"]] for c in calls) + in_flight)
    # Every training sample's image is one that was bought from its teacher.
    bought = {(c["teacher"], c["prompt"], c["image_hash"]) for c in calls}
    for s in store.conn.execute("SELECT * FROM samples"):
        assert (s["teacher"], s["prompt"], s["image_hash"]) in bought
    # Prompts in the active set are distinct. With redraws (evolve.redraw) a prompt may repeat, but
    # never with the same teacher's same image (except a letter's: glyphs are drawn unjittered, so
    # every correct image of a letter is the same one).
    active = store.active_samples()
    if redraws:
        drawn = [(s.prompt, s.teacher, s.image_hash) for s in active if s.domain != "text"]
        assert len(drawn) == len(set(drawn))
    else:
        assert len(active) == len({s.prompt for s in active})


def run_cli(config_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "evolvedirector.cli", "run", str(config_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def count(db: Path, table: str) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(db, timeout=5)
        try:
            return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:  # the schema is not written yet
        return 0


def kill_when(process: subprocess.Popen, condition, timeout: float = 120) -> None:
    """SIGKILL the run as soon as `condition()` holds: a state the run has reached (never a delay
    after one, which a busy machine may stretch past the moment meant)."""
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, "the run never reached the point to kill it at"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before the kill landed"


def judging(run_dir: Path, round: int):
    """Whether `round` has trained and its director is judging: its grid of what is judged is written."""
    return lambda: (run_dir / "rounds" / f"{round:04d}" / "judged.png").exists()
