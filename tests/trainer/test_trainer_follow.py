"""`launch --follow`: two processes beside a live loop switch to a newly committed version at the
same step, the first step boundary after the commit."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from evolvedirector.store import ImageStore, NewSample, RoundRecord, Store
from evolvedirector.worlds.shapes import grammar
from tests.trainer.helpers import make_run
from tests.trainer.test_trainer_resume import free_port, log


def start_following(run: Path, out: Path, steps: int) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
        "-m", "evolvedirector.launch", str(run), "--out", str(out), "--batch-log", str(out / "log"),
        "--steps", str(steps), "--chunk", "2", "--follow",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_HOME": str(out.parent / "hf-home")}
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def commit_round_2(run: Path) -> set[int]:
    """The loop commits round 2: two samples added. Returns the new version's sample ids."""
    store, images = Store(run / "evolve.db"), ImageStore(run / "images")
    rng = np.random.default_rng(2)
    prompts = grammar.all_prompts()[40:42]
    store.commit_round(RoundRecord(round=2, started_at=time.time(), new_samples=[
        NewSample(prompt=p, domain=grammar.parse(p).domain, operation="seed", teacher="atlas",
                  image_hash=images.put(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))) for p in prompts]))
    ids = {s.id for s in store.active_samples()}
    store.close()
    return ids


@pytest.mark.timeout(900)  # two trainers on 2 cores shared with busy programs; ends when done
def test_two_processes_following_a_live_run_switch_at_the_same_step(tmp_path):
    run = make_run(tmp_path / "run")
    out = tmp_path / "follow"
    process = start_following(run, out, steps=600)
    deadline = time.time() + 300
    while not (out / "latest").exists():  # the first chunk is done: training is under way
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.time() < deadline, "the trainer never wrote its first checkpoint"
        time.sleep(0.01)
    newest = commit_round_2(run)
    _, stderr = process.communicate(timeout=480)
    assert process.returncode == 0, stderr[-3000:]

    entries = log(out)
    steps = sorted({step for step, _ in entries})
    assert steps == list(range(600))
    versions = [[entries[step, rank]["version"] for rank in (0, 1)] for step in steps]
    assert all(a == b for a, b in versions), "the processes trained on different versions at one step"
    flat = [a for a, _ in versions]
    # The newest version from the start (1, not 0), then 2 from one step on, on both processes.
    assert flat[0] == 1 and flat[-1] == 2 and flat == sorted(flat)
    switch = flat.index(2)
    assert 2 <= switch < 600
    assert all(set(entries[step, rank]["ids"]) <= newest for step in steps[switch:] for rank in (0, 1))
