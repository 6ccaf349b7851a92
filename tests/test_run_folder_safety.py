"""A run folder has one writer at a time; a damaged, foreign or emptied folder is refused in one
line, never restarted over; a killed run's leftovers are tidied on the next start."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from evolvedirector.cli import app
from evolvedirector.config import parse_config
from evolvedirector.loop import Evolution
from evolvedirector.loop.run_lock import LOCK_FILE, RunFolderInUse, RunLock
from evolvedirector.store import Store
from tests.helpers import check_run_invariants, count, run_cli, tiny_config

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A tiny run of the seed round and one more, to copy and damage."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    evolution = Evolution(parse_config(tiny_config(run_dir, max_rounds=1)))
    evolution.run()
    evolution.store.close()  # its write-ahead log folded into evolve.db: the copies are whole
    return run_dir


@pytest.fixture
def run_dir(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def config_file(run_dir: Path, tmp_path: Path, **budget) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(run_dir, **(budget or {"max_rounds": 2}))))
    return path


def cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE and not p.name.endswith(("-wal", "-shm"))}


def assert_refused_in_one_line(code: int, output: str, *needles: str) -> None:
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for needle in needles:
        assert needle in lines[0], output


# -- one writer per run folder -------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from evolvedirector.loop.run_lock import RunLock
    lock = RunLock(sys.argv[1], command="holder-for-the-test").acquire()
    print("held", flush=True)
    time.sleep(600)
""")


def hold_lock(run_dir: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_writer_is_refused_naming_the_holder_and_readers_are_not(run_dir, tmp_path):
    before = snapshot(run_dir)
    holder = hold_lock(run_dir)
    try:
        code, output = cli("run", config_file(run_dir, tmp_path))
        assert_refused_in_one_line(code, output, f"{run_dir} is in use by pid {holder.pid}", "holder-for-the-test")
        code, output = cli("eval", run_dir, "--limit", "2")
        assert_refused_in_one_line(code, output, f"in use by pid {holder.pid}")
        code, output = cli("status", run_dir)  # reads only: no lock
        assert code == 0 and "rounds committed: 2" in output, output
    finally:
        holder.kill()
        holder.wait()
    assert snapshot(run_dir) == before  # the refused writers changed nothing


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    holder = hold_lock(tmp_path / "run")
    with pytest.raises(RunFolderInUse, match=f"in use by pid {holder.pid} "):
        RunLock(tmp_path / "run").acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert str(holder.pid) in (tmp_path / "run" / LOCK_FILE).read_text()  # the stale holder's line is still there
    with RunLock(tmp_path / "run", command="the next writer"):
        line = (tmp_path / "run" / LOCK_FILE).read_text()
        assert f'"pid": {os.getpid()}' in line and "the next writer" in line
        with pytest.raises(RunFolderInUse, match=f"pid {os.getpid()} "):  # held again, by this process
            RunLock(tmp_path / "run").acquire()
    RunLock(tmp_path / "run").acquire().release()  # and free once released


# A second `evolvedirector run`, its imports done, that starts when told (a line on stdin).
SECOND_RUN = textwrap.dedent("""
    import sys
    import evolvedirector.loop.evolve
    from evolvedirector.cli import app
    sys.stdin.readline()
    app(["run", sys.argv[1]])
""")


def test_two_runs_on_one_folder_one_buys_the_other_is_refused(tmp_path):
    """The issue's probe: a second `run` while the first buys its seed set no longer settles the
    first one's pending calls (paying again); it stops at once, and the first finishes intact."""
    data = tiny_config(tmp_path / "run", max_rounds=2)
    data["evolve"]["seed_prompts"] = 300
    data["train"]["steps_per_round"] = 50
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    db = tmp_path / "run" / "evolve.db"
    second = subprocess.Popen([sys.executable, "-c", SECOND_RUN, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    first = run_cli(path)
    try:
        while count(db, "teacher_calls") < 30:
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            time.sleep(0.01)
        assert count(db, "rounds") == 0  # the first is buying its seed set
        output, _ = second.communicate("go\n", timeout=120)
        assert first.poll() is None, "the first run ended before the second tried: the probe proves nothing"
        assert second.returncode == 2, output
        assert f"is in use by pid {first.pid} " in output and f"(evolvedirector run {path}, started " in output
        _, stderr = first.communicate(timeout=240)
        assert first.returncode == 0, stderr.decode()[-2000:]
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
    store = Store(db)
    assert store.last_round() == 2
    check_run_invariants(store, tmp_path / "run" / "images")  # every call done once, every image there


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; run the tests as a user")
def test_a_read_only_folder_is_refused(run_dir, tmp_path):
    run_dir.chmod(0o555)
    try:
        code, output = cli("run", config_file(run_dir, tmp_path))
    finally:
        run_dir.chmod(0o755)
    assert_refused_in_one_line(code, output, f"cannot write to the run folder {run_dir}")


# -- damaged, foreign or emptied folders ---------------------------------------------------------

def test_a_store_that_is_not_sqlite_is_refused_and_kept(run_dir, tmp_path):
    (run_dir / "evolve.db").write_bytes(b"this is not a database\n" * 100)
    before = snapshot(run_dir)
    for args in (["run", config_file(run_dir, tmp_path)], ["status", run_dir], ["eval", run_dir]):
        assert_refused_in_one_line(*cli(*args), f"{run_dir / 'evolve.db'} is not an SQLite database")
    assert snapshot(run_dir) == before


def test_a_truncated_store_is_refused_and_kept(run_dir, tmp_path):
    db = run_dir / "evolve.db"
    size = db.stat().st_size
    with db.open("r+b") as handle:
        handle.truncate(size // 2)
    before = snapshot(run_dir)
    assert_refused_in_one_line(*cli("run", config_file(run_dir, tmp_path)), f"{db} is damaged")
    assert_refused_in_one_line(*cli("status", run_dir), f"{db} is damaged")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("how", ["zero bytes", "deleted", "rows deleted"])
def test_an_emptied_store_beside_a_previous_runs_files_is_refused(run_dir, tmp_path, how):
    db = run_dir / "evolve.db"
    if how == "zero bytes":
        db.write_bytes(b"")
    elif how == "deleted":
        db.unlink()
    else:
        conn = sqlite3.connect(db)
        for table in ("candidates", "verdicts", "refusals", "rounds", "teacher_calls", "samples"):
            conn.execute(f"DELETE FROM {table}")
        conn.commit()
        conn.close()
    before = snapshot(run_dir)
    state = "missing" if how == "deleted" else "empty"
    code, output = cli("run", config_file(run_dir, tmp_path))
    assert_refused_in_one_line(code, output, f"{run_dir} holds a previous run's files", f"{db} is {state}",
                               "restore evolve.db or choose another --out")
    assert_refused_in_one_line(*cli("status", run_dir), f"{db} is {state}")
    assert snapshot(run_dir) == before  # no image bought again, nothing restarted over


def test_a_foreign_config_yaml_in_out_is_refused_and_kept(tmp_path):
    out = tmp_path / "someone-elses"
    out.mkdir()
    (out / "config.yaml").write_text("name: my-web-app\nreplicas: 3\n")
    code, output = cli("run", config_file(out, tmp_path))
    assert_refused_in_one_line(code, output, f"{out / 'config.yaml'} is not a valid EvolveDirector run config",
                               "name: Extra inputs are not permitted")
    assert (out / "config.yaml").read_text() == "name: my-web-app\nreplicas: 3\n"
    assert not (out / "evolve.db").exists()
    with pytest.raises(ValueError, match="is not a valid EvolveDirector run config"):  # the loop itself refuses it too
        Evolution(parse_config(tiny_config(out)))
    assert (out / "config.yaml").read_text() == "name: my-web-app\nreplicas: 3\n"


def test_a_run_whose_config_became_invalid_is_not_resumed_but_still_shown(run_dir, tmp_path):
    (run_dir / "config.yaml").write_text("name: my-web-app\n")
    assert_refused_in_one_line(*cli("run", config_file(run_dir, tmp_path)), "is not a valid EvolveDirector run config")
    code, output = cli("status", run_dir)
    assert code == 0 and "rounds committed: 2" in output, output


def test_a_missing_image_of_the_active_set_is_named_instead_of_failing_every_resume(run_dir, tmp_path):
    store = Store(run_dir / "evolve.db")
    sample = store.active_samples()[5]
    store.close()
    (run_dir / "images" / sample.image_hash[:2] / f"{sample.image_hash}.png").unlink()
    assert_refused_in_one_line(*cli("run", config_file(run_dir, tmp_path)),
                               f"image {sample.image_hash} of sample {sample.id} ")


def test_a_missing_committed_checkpoint_is_named(run_dir, tmp_path):
    shutil.rmtree(run_dir / "checkpoints" / "round-0001")
    assert_refused_in_one_line(*cli("run", config_file(run_dir, tmp_path)),
                               "checkpoints/round-0001, the checkpoint of committed round 1, is missing")


# -- leftovers of a killed run -------------------------------------------------------------------

def test_a_start_removes_temporary_files_and_points_latest_at_the_store(run_dir, tmp_path):
    image = next((run_dir / "images").glob("*/*.png"))
    leftovers = [image.parent / ".tmp-abc123.png", run_dir / "rounds" / "0001" / ".tmp-x.png",
                 run_dir / ".tmp-q1w2.yaml", run_dir / "checkpoints" / ".tmp-round-0002" / "trainer_state.pt"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half of a file")
    # A kill after round 2's checkpoint was saved but before it committed, and one between a
    # commit and the pointer's write: the pointer names the round before the store's.
    shutil.copytree(run_dir / "checkpoints" / "round-0001", run_dir / "checkpoints" / "round-0002")
    shutil.copytree(run_dir / "checkpoints" / "round-0001", run_dir / "checkpoints" / "round-0000")
    (run_dir / "checkpoints" / "latest").write_text("checkpoints/round-0000\n")

    code, output = cli("run", config_file(run_dir, tmp_path, max_rounds=1))  # nothing left to run: it only opens
    assert code == 0, output
    assert "removed 4 temporary files" in output and "checkpoints/latest names checkpoints/round-0001" in output
    assert not any(path.exists() for path in leftovers) and image.exists()
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "checkpoints/round-0001"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["latest", "round-0001"]
    store = Store(run_dir / "evolve.db")
    check_run_invariants(store, run_dir / "images")


def test_commits_fsync_the_files_and_the_folder_that_names_them(tmp_path, monkeypatch):
    from evolvedirector.store import write_atomic
    from evolvedirector.store.folders import point_latest, publish_folder

    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    tmp = tmp_path / "ckpt" / ".tmp-step-00000004"
    (tmp / "transformer").mkdir(parents=True)
    (tmp / "transformer" / "weights.safetensors").write_bytes(b"w" * 100)
    (tmp / "trainer_state.pt").write_bytes(b"s" * 100)
    publish_folder(tmp, tmp_path / "ckpt" / "step-00000004")
    point_latest(tmp_path / "ckpt" / "latest", "step-00000004")
    ckpt, tmp = (tmp_path / "ckpt").resolve(), tmp.resolve()
    renamed = synced.index(ckpt)  # the folder that holds the checkpoint's new name, after the rename
    assert set(synced[:renamed]) == {tmp / "trainer_state.pt", tmp / "transformer" / "weights.safetensors",
                                     tmp / "transformer", tmp}  # all of it durable before it is published
    assert synced[-1] == ckpt and (ckpt / "latest").read_text() == "step-00000004\n"  # then the pointer

    synced.clear()
    write_atomic(tmp_path / "new" / "file.txt", b"x")
    assert synced[0] == tmp_path.resolve()  # the new folder's name
    assert synced[-1] == (tmp_path / "new").resolve()  # the file's name, after the rename
