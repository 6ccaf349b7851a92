"""Every path on CUDA: the loop and what reads its run (sample, eval, export), the trainer in bf16,
the diffusers teacher, the local VLM director, and the trainer under `accelerate launch`.

On a CPU a tensor left on the wrong device, a dtype only bf16 autocast produces, or a collective
only NCCL runs goes unnoticed. The CUDA cases are marked `gpu` and skip without a GPU (`make
gpu-check` runs them on a GPU machine; `pytest -m gpu` selects them). Where a test can also run on
a CPU it does, unmarked, so that `make test` exercises the test itself. Models are tiny and built
from configs, as in the CPU suite.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from evolvedirector.cli import app
from evolvedirector.config import DiffusersTeacherConfig, LocalDirectorConfig, StudentConfig, TrainConfig, parse_config
from evolvedirector.director import build_director
from evolvedirector.loop import Evolution
from evolvedirector.loop.run_folder import RunFolder
from evolvedirector.student.latest import load_latest_student
from evolvedirector.store import ImageStore, Store
from evolvedirector.student import Student, TextEncoder
from evolvedirector.student.pipeline import load_export
from evolvedirector.teachers import ImageRequest, Ledger, build_teacher
from evolvedirector.trainer import Trainer
from evolvedirector.trainer.checkpoint import STATE, WEIGHTS
from evolvedirector.worlds.shapes import grammar
from evolvedirector.worlds.shapes.render import render, render_mistake
from tests.director.director_tiny_vlm import build_tiny_llava_next, build_tiny_qwen2_vl
from tests.helpers import check_run_invariants, tiny_config
from tests.trainer.helpers import make_run
from tiny_models import build_tiny_sd_pipeline

NEEDS_GPU = "needs an NVIDIA GPU: `make gpu-check` runs these (README, On a GPU)"
requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason=NEEDS_GPU)
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, requires_gpu])]
PROMPTS = ["a red circle on the left", "three blue squares", "the letter T in green"]
runner = CliRunner()


def reset_accelerate() -> None:
    """accelerate keeps one device and precision per process: a state left by an earlier test on
    the CPU would silently keep a `device: cuda` trainer there."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def fresh_accelerate():
    reset_accelerate()
    yield
    reset_accelerate()


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder(max_tokens=16)


# -- the loop, and what reads its run ------------------------------------------------------------


@pytest.fixture(scope="module", params=DEVICES)
def loop_run(request, tmp_path_factory):
    """The tiny shapes-world run of the CPU tests, two rounds after the seed set, with `device` set:
    (device, run folder, round summaries, the devices the student's weights were on)."""
    device = request.param
    run_dir = tmp_path_factory.mktemp(f"loop-{device}") / "run"
    reset_accelerate()
    try:
        evolution = Evolution(parse_config({**tiny_config(run_dir, max_rounds=2), "device": device}))
        summaries = evolution.run()
        placed = {p.device.type for model in (evolution.student.model, evolution.student.ema_model)
                  for p in model.parameters()}
    finally:
        reset_accelerate()
    return device, run_dir, summaries, placed


def test_the_loop_trains_renders_judges_buys_and_commits_on_the_device(loop_run):
    device, run_dir, summaries, placed = loop_run
    assert placed == {device}
    assert [s.round for s in summaries] == [0, 1, 2]
    store = Store(run_dir / "evolve.db")
    check_run_invariants(store, run_dir / "images")
    for row in store.rounds()[1:]:
        assert row["judged"] > 0 and (run_dir / "rounds" / f"{row['round']:04d}" / "judged.png").exists()
        assert all(0.0 <= v <= 1.0 for v in row["metrics"]["accuracy"].values())
    store.close()
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "checkpoints/round-0002"


def cli_sample(run_dir: Path, out: Path, tmp_path: Path) -> list[np.ndarray]:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    result = runner.invoke(app, ["sample", str(run_dir), "--prompts", str(prompts), "--out", str(out), "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png", "00002.png"]
    return [np.asarray(Image.open(out / f"{i:05d}.png")) for i in range(len(PROMPTS))]


def assert_close_images(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    """The same weights and noise on two devices: equal up to float rounding (TF32 convolutions on
    a GPU), a few levels of 255 at most on average."""
    for x, y in zip(a, b):
        assert x.shape == y.shape == (32, 32, 3) and x.dtype == y.dtype == np.uint8
        assert np.abs(x.astype(int) - y.astype(int)).mean() < 3


def test_the_students_weights_sample_on_the_device_as_on_the_cpu(loop_run, tmp_path):
    device, run_dir, _, _ = loop_run
    # `sample` draws with the student on the CPU, whatever device the run trained on.
    on_cpu = cli_sample(run_dir, tmp_path / "cli", tmp_path)
    store = Store(run_dir / "evolve.db")
    student, _ = load_latest_student(run_dir, RunFolder(run_dir).load_config(), store)
    store.close()
    assert all(torch.isfinite(p).all() for p in student.ema_model.parameters())
    student.ema_model.to(device)
    assert_close_images(student.generate(PROMPTS, seed=7), on_cpu)


def test_eval_of_a_run_trained_on_the_device(loop_run):
    _, run_dir, _, _ = loop_run
    result = runner.invoke(app, ["eval", str(run_dir), "--limit", "4", "--resamples", "20", "--one-order"])
    assert result.exit_code == 0, result.output
    results = json.loads((run_dir / "eval" / "eval.json").read_text())
    assert results["n_prompts"] == 4


def test_the_export_loads_and_draws_on_the_device(loop_run, tmp_path):
    device, run_dir, _, _ = loop_run
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    pipe = load_export(tmp_path / "export").to(device)
    assert pipe.transformer.device.type == device
    drawn = pipe(PROMPTS, generator=torch.Generator().manual_seed(7), output_type="pt").images
    assert drawn.device.type == device and torch.isfinite(drawn).all() and drawn.abs().max() <= 1
    as_arrays = pipe(PROMPTS, generator=torch.Generator().manual_seed(7), output_type="np").images
    assert_close_images(as_arrays, cli_sample(run_dir, tmp_path / "cli", tmp_path))


# -- the trainer in bf16 --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trainer_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("trainer") / "run")


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_training_steps_move_fp32_weights_on_the_device(device, trainer_run, text_encoder, fresh_accelerate):
    torch.manual_seed(0)
    student = Student(StudentConfig(size="tiny", ema_decay=0.9), 32, text_encoder=text_encoder)
    before = [p.detach().clone() for p in (*student.model.parameters(), *student.ema_model.parameters())]
    config = TrainConfig(batch_size=2, lr=1e-3, warmup_steps=2, mixed_precision="bf16")
    trainer = Trainer(student, config, device=device, images=ImageStore(trainer_run / "images"))
    assert trainer.device.type == device and trainer.accelerator.mixed_precision == "bf16"
    computed_in = set()
    first_linear = next(m for m in student.model.modules() if isinstance(m, torch.nn.Linear))
    first_linear.register_forward_hook(lambda module, args, output: computed_in.add(output.dtype))

    store = Store(trainer_run / "evolve.db")
    loss = trainer.train_on_samples(store.active_samples(at_round=0), 3, version=0)
    store.close()
    assert np.isfinite(loss) and computed_in == {torch.bfloat16}  # autocast ran the step in bf16 ...
    after = [*student.model.parameters(), *student.ema_model.parameters()]
    assert {(p.device.type, p.dtype) for p in after} == {(device, torch.float32)}  # ... on fp32 master weights
    assert all(torch.isfinite(p).all() for p in after)
    moved = [not torch.equal(a, b.detach().cpu()) for a, b in zip(before, after)]
    half = len(moved) // 2
    assert any(moved[:half]) and any(moved[half:])  # the trained weights and their average both moved


# -- the diffusers teacher ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    return build_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny-sd"))


@pytest.mark.parametrize("copies", [1, 2])
@pytest.mark.parametrize("device", DEVICES)
def test_the_diffusers_teacher_draws_through_the_ledger_on_each_copy(device, copies, tiny_pipeline, tmp_path):
    devices = [f"{device}:0" if device == "cuda" else device] * copies
    teacher = build_teacher(DiffusersTeacherConfig(
        name="tiny-sd", backend="diffusers", model=str(tiny_pipeline), devices=devices, steps=2, guidance=1.0,
        cost_per_image=0.001,
    ))
    assert {pipeline.device.type for _, pipeline in teacher._free.queue} == {device}  # the pool of copies
    store, images = Store(tmp_path / "evolve.db"), ImageStore(tmp_path / "images")
    requests = [ImageRequest(p, 0, 32) for p in [*PROMPTS, "two yellow triangles"]]
    purchases = asyncio.run(Ledger(store, images).buy(teacher, requests, round=0))
    assert all(p.image_hash is not None for p in purchases), [p.error for p in purchases]
    drawn = [images.get(p.image_hash) for p in purchases]
    assert all(image.shape == (32, 32, 3) and image.dtype == np.uint8 for image in drawn)
    assert all(n > 0 for n in teacher.calls_per_copy)
    assert store.spend() == (4, pytest.approx(0.004))
    store.close()

    seeds = [ImageRequest(PROMPTS[0], 0, 32), ImageRequest(PROMPTS[0], 1, 32)]
    again, other_seed = asyncio.run(teacher.generate(seeds))
    assert np.abs(again.image.astype(int) - drawn[0]).max() <= 1  # per (prompt, seed), whichever copy drew it
    assert not np.array_equal(other_seed.image, drawn[0])


# -- the local VLM director -----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["llava-next", "qwen2-vl"])
def tiny_vlm(request, tmp_path_factory):
    build = {"llava-next": build_tiny_llava_next, "qwen2-vl": build_tiny_qwen2_vl}[request.param]
    return build(tmp_path_factory.mktemp(request.param))


@pytest.mark.parametrize("device", DEVICES)
def test_the_local_director_judges_scores_and_proposes_on_the_device(device, tiny_vlm):
    rng = random.Random(0)
    prompts = [grammar.random_prompt(rng) for _ in range(6)]
    items = [(p, render(p, 32, rng), render_mistake(p, 32, rng)) for p in prompts]
    settings = {"backend": "local", "model": str(tiny_vlm), "device": device, "max_tokens": 16, "retries": 1,
                "panel_size": 64, "batch_size": 4}
    director = build_director(LocalDirectorConfig(**settings), seed=0)
    assert {p.device.type for p in director.model.parameters()} == {device}
    assert director.dtype == (torch.bfloat16 if device == "cuda" else torch.float32)

    async def judge():
        return await asyncio.gather(*(director.compare(p, a, b) for p, a, b in items))

    verdicts = asyncio.run(judge())
    assert {v.winner for v in verdicts} <= {"A", "B"} and director.batcher.batches == 2  # batches of 4 and 2
    assert director.stats["parse_failures"] == 0  # a verdict is read from logits, never unreadable
    expanded = asyncio.run(director.expand(prompts[0], 3))  # generated text (noise from a random model)
    assert isinstance(expanded, list) and isinstance(asyncio.run(director.mutate(prompts[0])), str)

    pointwise = build_director(LocalDirectorConfig(**settings, mode="pointwise"), seed=0)

    async def score():
        return await asyncio.gather(*(pointwise.score(p, image) for p, good, bad in items for image in (good, bad)))

    scores = asyncio.run(score())
    assert all(0.0 <= s <= 1.0 for s in scores) and len(set(scores)) > 1


# -- the trainer under accelerate launch ----------------------------------------------------------


def launcher(strategy: str, processes: int) -> list[str]:
    """The command that starts `processes` trainers on this machine's GPUs."""
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                  "--main_process_port", "0"]
    if strategy == "fsdp2":
        return [*accelerate, "--use_fsdp", "--fsdp_version", "2"]
    if processes > 1:
        return [*accelerate, "--multi_gpu"]
    # accelerate refuses --multi_gpu with one process; torchrun with one gives the trainer the same
    # NCCL process group (accelerate wraps the model in DDP only from two processes up).
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]


def launch(strategy: str, processes: int, run: Path, out: Path, steps: int) -> str:
    script = Path(__file__).with_name("deterministic_trainer.py")
    command = [*launcher(strategy, processes), str(script), str(run), "--out", str(out), "--steps", str(steps),
               "--batch-log", str(out / "log")]
    repository = str(Path(__file__).resolve().parents[2])  # the script imports evolvedirector from here
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
           "HF_HOME": str(run.parent / "hf-home"),  # no user accelerate config can change the launch
           "PYTHONPATH": os.pathsep.join(filter(None, [repository, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def batches(out: Path, steps: range) -> dict[tuple[int, int], dict]:
    entries = {}
    for path in sorted((out / "log").glob("batches-rank*.jsonl")):
        for entry in map(json.loads, path.read_text().splitlines()):
            if entry["step"] in steps:
                entries[entry["step"], entry["rank"]] = entry
    return entries


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / WEIGHTS)


def tensors(tree, name: str = ""):
    """(path, tensor) for every tensor in a nested state dict."""
    if isinstance(tree, torch.Tensor):
        yield name, tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from tensors(value, f"{name}/{key}")
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from tensors(value, f"{name}/{index}")


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_the_launched_trainer_resumes_exactly_on_gpus(strategy, tmp_path):
    """Six steps in one run, and again from that run's checkpoint at step 4: the same weights, EMA,
    optimizer moments and batches. One process per GPU, two at most; with FSDP 2 the EMA is kept
    per shard and checkpoints gather full state dicts (accelerate refuses FSDP on a CPU)."""
    processes = min(2, torch.cuda.device_count())
    run = make_run(tmp_path / "run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "device": "cuda"}))

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    launch(strategy, processes, run, whole, steps=6)
    assert sorted(p.name for p in whole.glob("step-*")) == ["step-00000004", "step-00000006"]
    shutil.copytree(whole / "step-00000004", resumed / "step-00000004")
    (resumed / "latest").write_text("step-00000004\n")
    assert "resumed from" in launch(strategy, processes, run, resumed, steps=6)

    for name in ("transformer", "transformer_ema"):
        expected = load_weights(whole / "step-00000006" / name)
        got = load_weights(resumed / "step-00000006" / name)
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) for k in expected), name
    at_four, at_six = (load_weights(whole / step / "transformer") for step in ("step-00000004", "step-00000006"))
    assert any(not torch.equal(at_four[k], at_six[k]) for k in at_four)  # the two steps after the resume trained
    expected_state, got_state = (torch.load(d / "step-00000006" / STATE, weights_only=True) for d in (whole, resumed))
    assert (got_state["step"], got_state["version"]) == (6, 1)
    expected_moments, got_moments = dict(tensors(expected_state["optimizer"])), dict(tensors(got_state["optimizer"]))
    assert expected_moments and expected_moments.keys() == got_moments.keys()
    assert all(torch.equal(expected_moments[k], got_moments[k]) for k in expected_moments)
    assert batches(resumed, range(4, 6)) == batches(whole, range(4, 6))
    assert len(batches(whole, range(6))) == 6 * processes
