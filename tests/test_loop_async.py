"""The asynchronous round (`evolve.overlap: async`): the trainer trains on in its own thread, on
committed versions only, and a run killed mid-round resumes as loop/round.py's
`overlapped_round` says."""

from pathlib import Path

import pytest
import yaml

from evolvedirector.config import parse_config
from evolvedirector.loop import Evolution
from evolvedirector.store import Store
from evolvedirector.trainer import checkpoint as ckpt
from tests.helpers import check_run_invariants, count, judging, kill_when, run_cli, tiny_config


def async_config(out: Path, **budget) -> dict:
    data = tiny_config(out, **budget)
    data["evolve"].update(overlap="async", seed_prompts=30)
    data["train"]["steps_per_round"] = 6
    return data


def test_the_trainer_trains_on_without_gaps_and_only_on_committed_versions(tmp_path):
    evolution = Evolution(parse_config(async_config(tmp_path / "run", max_rounds=3)))
    evolution.trainer.batch_log = []
    summaries = evolution.run()
    assert [s.round for s in summaries] == [0, 1, 2, 3]

    store = Store(tmp_path / "run" / "evolve.db")
    check_run_invariants(store, tmp_path / "run" / "images")
    rounds = store.rounds()
    log = evolution.trainer.batch_log
    assert [entry["step"] for entry in log] == list(range(len(log)))  # every step once, in order
    versions = [entry["version"] for entry in log]
    assert versions == sorted(versions) and versions[0] == 0
    for version in set(versions) - {0}:
        # A version is trained on only once committed, and its round's checkpoint came before.
        first = versions.index(version)
        assert first >= rounds[version]["train_step"]
        active = {s.id for s in store.active_samples(at_round=version)}
        assert all(set(entry["ids"]) <= active for entry in log if entry["version"] == version)
    for r in rounds[1:]:
        # A round's snapshot comes steps_per_round steps after the previous one at the earliest,
        # and its checkpoint holds the trainer's state at the round's train_step.
        assert r["train_step"] >= 6 * r["round"]
    last = rounds[-1]
    assert ckpt.read_state(tmp_path / "run" / last["checkpoint"])["step"] == last["train_step"]
    assert sum(s.steps for s in summaries) == last["train_step"]
    store.close()


def committed(db: Path, through: int) -> dict:
    """Everything rounds 0..through committed: their rows, set versions, verdicts and refusals."""
    store = Store(db)
    try:
        return {
            "rounds": store.rounds()[: through + 1],
            "versions": [[(s.id, s.prompt, s.teacher, s.image_hash) for s in store.active_samples(at_round=r)]
                         for r in range(through + 1)],
            "verdicts": [dict(v) for v in store.all_verdicts() if v["round"] <= through],
            "refusals": [dict(r) for r in store.all_refusals() if r["round"] <= through],
            "calls": [dict(c) for c in store.conn.execute("SELECT * FROM teacher_calls ORDER BY key")],
        }
    finally:
        store.close()


# Two 5-round runs in subprocesses: on 2 cores shared with several busy programs (a fresh-clone
# `make test` beside other suites) they took more than 300 s; a passing run is no slower for it.
@pytest.mark.timeout(900)
def test_kill_9_mid_round_then_resume_keeps_every_committed_round_and_pays_nothing_twice(tmp_path):
    data = async_config(tmp_path / "run", max_rounds=5)
    data["train"]["steps_per_round"] = 20
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(data))
    db = tmp_path / "run" / "evolve.db"

    kill_when(run_cli(config_path), judging(tmp_path / "run", 3))  # the trainer trains on meanwhile
    last = count(db, "rounds") - 1
    assert 2 <= last < 5, "killed after the run's last round: nothing was in flight"
    before = committed(db, last)
    checkpoint = tmp_path / "run" / before["rounds"][-1]["checkpoint"]
    # The last committed round's checkpoint is the trainer at that round's train_step.
    assert ckpt.read_state(checkpoint)["step"] == before["rounds"][-1]["train_step"]

    process = run_cli(config_path)
    _, stderr = process.communicate(timeout=780)
    assert process.returncode == 0, stderr.decode()[-2000:]
    after = committed(db, last)
    # Exactly what was committed: every round's row, set version, verdict and refusal ...
    for part in ("rounds", "versions", "verdicts", "refusals"):
        assert after[part] == before[part], part
    # ... and the ledger: calls finished before the kill are kept as they were (one finished
    # later, or made again, is the kill's in-flight call).
    finished = [c for c in before["calls"] if c["status"] == "done"]
    assert [c for c in after["calls"] if c["key"] in {f["key"] for f in finished}] == finished
    store = Store(db)
    assert store.last_round() == 5
    check_run_invariants(store, tmp_path / "run" / "images")
    rows = store.rounds()
    # The resumed trainer started from the checkpoint: its next round trained at least
    # steps_per_round steps past it.
    assert rows[last + 1]["train_step"] >= rows[last]["train_step"] + 20
    store.close()


def test_a_trainer_that_fails_in_its_thread_fails_the_round_that_waits_on_it(tmp_path):
    import asyncio

    from evolvedirector.loop.background import BackgroundTrainer

    evolution = Evolution(parse_config(async_config(tmp_path / "run", max_rounds=1)))
    try:
        samples = list(evolution.store.active_samples())  # empty: nothing is committed yet
        training = BackgroundTrainer(evolution.trainer, evolution.student, 6, 0, samples, threads=1).start()
        with pytest.raises(ValueError, match="set version 0 is empty"):
            asyncio.run(training.snapshot())
        training.stop()
        with pytest.raises(ValueError, match="set version 0 is empty"):
            asyncio.run(training.capture())  # a later request gets the same error at once
    finally:
        evolution.store.close()
        evolution.lock.release()
