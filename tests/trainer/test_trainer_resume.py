"""Resumes are exact: one process in-process, and two processes under `accelerate launch`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from evolvedirector.config import StudentConfig, TrainConfig
from evolvedirector.store import ImageStore, NewSample, RoundRecord, Store
from evolvedirector.student.buckets import buckets_at, nearest_bucket
from evolvedirector.student import Student, TextEncoder
from evolvedirector.trainer import Trainer
from evolvedirector.trainer import checkpoint
from evolvedirector.trainer.checkpoint import STATE, WEIGHTS
from tests.helpers import free_port
from tests.trainer.helpers import make_run

CONFIG = TrainConfig(batch_size=2, lr=1e-3, warmup_steps=2)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models on a shared 2-core machine: several threads per process only fight each other
    # (a step took 40x longer with torch's default thread count under load).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder(max_tokens=16)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run") / "run")


def build(run: Path, text_encoder, seed: int = 3) -> Trainer:
    torch.manual_seed(0)
    student = Student(StudentConfig(size="tiny", ema_decay=0.9), 32, text_encoder=text_encoder)
    return Trainer(student, CONFIG, seed=seed, device="cpu", cache_dir=run / "features",
                   images=ImageStore(run / "images"))


def train_versions(trainer: Trainer, run: Path, until: int, chunk: int = 2) -> None:
    """What the launcher does: chunk k trains on set version min(k, 1)."""
    store = Store(run / "evolve.db")
    while trainer.step < until:
        version = min(trainer.step // chunk, 1)
        trainer.train_on_samples(store.active_samples(at_round=version), chunk, version=version)
    store.close()


def weights(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for m in (trainer.student.model, trainer.student.ema_model) for p in m.parameters()]


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def differs(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return any(not torch.equal(x, y) for x, y in zip(a, b))


def test_one_process_resume_is_exact_and_the_test_can_tell(run, text_encoder, tmp_path):
    uninterrupted = build(run, text_encoder)
    train_versions(uninterrupted, run, 6)
    expected = weights(uninterrupted)

    stopped = build(run, text_encoder)
    train_versions(stopped, run, 4)
    checkpoint.save_checkpoint(stopped, tmp_path / "ckpt")
    del stopped
    resumed = build(run, text_encoder)
    assert checkpoint.resume(resumed, tmp_path / "ckpt") and resumed.step == 4 and resumed.version == 1
    train_versions(resumed, run, 6)
    assert_same(weights(resumed), expected)
    # The optimizer's moments came back too, not just the weights.
    for a, b in zip(resumed.raw_optimizer.state.values(), uninterrupted.raw_optimizer.state.values()):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])

    # The comparison is sharp: a resume that loses the optimizer state, or another seed, differs.
    forgetful = build(run, text_encoder)
    checkpoint.resume(forgetful, tmp_path / "ckpt")
    forgetful.raw_optimizer.state.clear()
    train_versions(forgetful, run, 6)
    assert differs(weights(forgetful), expected)
    other_seed = build(run, text_encoder, seed=4)
    train_versions(other_seed, run, 6)
    assert differs(weights(other_seed), expected)


def test_checkpoint_pointer_names_a_whole_checkpoint(run, text_encoder, tmp_path):
    trainer = build(run, text_encoder)
    root = tmp_path / "ckpt"
    assert not checkpoint.resume(trainer, root)  # nothing yet: a fresh start
    # What a kill mid-save leaves (a temporary folder), and one between the rename and the pointer.
    for left in (root / ".tmp-step-00000002", root / "step-00000002"):
        left.mkdir(parents=True)
        (left / "half.bin").write_bytes(b"half of a file")
    for _ in range(3):
        train_versions(trainer, run, trainer.step + 2)
        checkpoint.save_checkpoint(trainer, root, keep=2)
        assert not any(root.glob("*/half.bin")) and not any(root.glob(".tmp-*"))  # replaced, never merged into
    assert (root / "latest").read_text().strip() == "step-00000006"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000004", "step-00000006"]
    state = torch.load(root / "step-00000006" / STATE, weights_only=True)
    assert state["step"] == 6 and state["version"] == 1 and len(state["rng"]) == 1
    # A pointer to a folder that is not a checkpoint is an error naming both, not a fresh start.
    (root / "latest").write_text("step-00000099\n")
    with pytest.raises(FileNotFoundError, match="step-00000099"):
        checkpoint.resume(trainer, root)


def test_multi_aspect_batches_share_one_shape(tmp_path, text_encoder):
    """Images of three shapes at a 64-px base: each step trains on one bucket's shape."""
    images, store = ImageStore(tmp_path / "images"), Store(tmp_path / "evolve.db")
    rng = np.random.default_rng(0)
    shapes = [(32, 64), (64, 64), (64, 32)] * 4  # h/w 0.5, 1, 2
    samples = [NewSample(prompt=f"prompt {i}", domain="object", operation="seed", teacher="atlas",
                         image_hash=images.put(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)))
               for i, shape in enumerate(shapes)]
    store.commit_round(RoundRecord(round=0, started_at=0.0, new_samples=samples))
    torch.manual_seed(0)
    student = Student(StudentConfig(size="tiny", ema_decay=0.9), 64, text_encoder=text_encoder)
    trainer = Trainer(student, CONFIG.model_copy(update={"multi_aspect": True}), device="cpu", images=images)
    trainer.batch_log = []
    trainer.train_on_samples(store.active_samples(), 6, version=0)
    expected = {s.id: nearest_bucket(*shape, buckets_at(64)) for s, shape in zip(store.active_samples(), shapes)}
    for entry in trainer.batch_log:
        assert {expected[i] for i in entry["ids"]} == {tuple(entry["bucket"])}
    assert len({tuple(e["bucket"]) for e in trainer.batch_log}) > 1
    # In the 32-px shapes world the scaled table has sides that are no multiple of the patch: refused.
    with pytest.raises(ValueError, match="train.multi_aspect"):
        Trainer(Student(StudentConfig(size="tiny"), 32, text_encoder=text_encoder),
                CONFIG.model_copy(update={"multi_aspect": True}), device="cpu")


def test_gradient_checkpointing_gives_the_same_steps_and_bf16_runs(run, text_encoder):
    plain = build(run, text_encoder)
    train_versions(plain, run, 2)
    checkpointed = build(run, text_encoder)
    checkpointed.config = CONFIG.model_copy(update={"gradient_checkpointing": True})
    checkpointed.student.model.enable_gradient_checkpointing()
    assert checkpointed.student.model.is_gradient_checkpointing
    train_versions(checkpointed, run, 2)
    for a, b in zip(weights(plain), weights(checkpointed)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    # accelerate keeps one precision per process (a run has one trainer): reset it around this one.
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    try:
        torch.manual_seed(0)
        student = Student(StudentConfig(size="tiny", ema_decay=0.9), 32, text_encoder=text_encoder)
        bf16 = Trainer(student, CONFIG.model_copy(update={"mixed_precision": "bf16"}), device="cpu",
                       images=ImageStore(run / "images"))
        loss = bf16.train_on_samples(Store(run / "evolve.db").active_samples(at_round=0), 1, version=0)
        assert bf16.accelerator.mixed_precision == "bf16" and np.isfinite(loss)
        assert next(student.model.parameters()).dtype == torch.float32  # the master weights stay fp32
    finally:
        AcceleratorState._reset_state()


def test_bad_train_fields_are_named():
    from evolvedirector.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="train.mixed_precision"):
        parse_config({"train": {"mixed_precision": "fp16"}})


def launch(run: Path, out: Path, *extra: str) -> None:
    """`accelerate launch` with two gloo processes on this CPU.

    accelerate's `--cpu --num_processes 2` starts a single process (its multi-CPU path expects
    mpirun); `--multi_gpu` starts two through torchrun, and with no GPU the trainer runs them on
    the CPU with the gloo backend.
    """
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
        "-m", "evolvedirector.launch", str(run), "--out", str(out), "--batch-log", str(out / "log"), *extra,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "HF_HOME": str(out.parent / "hf-home")}  # no user accelerate config can change the launch
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def log(out: Path) -> dict[tuple[int, int], dict]:
    entries = {}
    for rank in (0, 1):
        for line in (out / "log" / f"batches-rank{rank}.jsonl").read_text().splitlines():
            entry = json.loads(line)
            entries[entry["step"], entry["rank"]] = entry
    return entries


@pytest.mark.timeout(300)
def test_two_processes_stopped_and_resumed_end_with_the_same_weights(tmp_path):
    run = make_run(tmp_path / "run")
    launch(run, tmp_path / "whole", "--steps", "6")
    launch(run, tmp_path / "parts", "--steps", "6", "--stop-after", "4")
    assert (tmp_path / "parts" / "latest").read_text().strip() == "step-00000004"
    launch(run, tmp_path / "parts", "--steps", "6")

    for name in ("transformer", "transformer_ema"):
        whole = load_file(tmp_path / "whole" / "step-00000006" / name / WEIGHTS)
        parts = load_file(tmp_path / "parts" / "step-00000006" / name / WEIGHTS)
        assert whole.keys() == parts.keys()
        assert all(torch.equal(whole[k], parts[k]) for k in whole), name
    # ... and the stop came after real training: the weights at step 4 are not those at step 6.
    at_four = load_file(tmp_path / "parts" / "step-00000004" / "transformer" / WEIGHTS)
    assert any(not torch.equal(at_four[k], whole[k]) for k in whole)
    whole_state = torch.load(tmp_path / "whole" / "step-00000006" / STATE, weights_only=True)
    parts_state = torch.load(tmp_path / "parts" / "step-00000006" / STATE, weights_only=True)
    for name, moments in whole_state["optimizer"]["state"].items():
        assert torch.equal(moments["exp_avg"], parts_state["optimizer"]["state"][name]["exp_avg"])
    assert len(whole_state["rng"]) == 2

    # Both processes switched from version 0 to version 1 at step 2, each drew its own half of
    # the same global batch, and the resumed run drew exactly the batches of the uninterrupted one.
    whole_log, parts_log = log(tmp_path / "whole"), log(tmp_path / "parts")
    assert whole_log == parts_log and len(whole_log) == 12
    store = Store(run / "evolve.db")
    for step in range(6):
        version = 0 if step < 2 else 1
        active = {s.id for s in store.active_samples(at_round=version)}
        ranks = [whole_log[step, rank] for rank in (0, 1)]
        assert [r["version"] for r in ranks] == [version, version]
        ids = ranks[0]["ids"] + ranks[1]["ids"]
        assert set(ids) <= active and len(set(ids)) == 4  # 10 or 11 samples: no repeats in a batch
    assert not list((tmp_path / "parts").glob(".tmp-*"))
    shutil.rmtree(tmp_path / "hf-home", ignore_errors=True)


# FSDP's resume is tested on a GPU (tests/gpu/test_gpu_paths.py): accelerate 1.15 cannot run it on a
# CPU (with fsdp_version 1 its plugin finds no device; with 2 and cpu=True it silently prepares
# DDP), and torch's own fully_shard, which does work on a CPU with gloo, is not the trainer's path.
