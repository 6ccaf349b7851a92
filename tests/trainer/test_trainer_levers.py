"""The trainer's speed levers on a CPU: each switch does what it says and changes no number it
should not (the CPU defaults are the trainer as it always was), and `bench train --levers` prints
every row of its ladder."""

import re

import pytest
import torch
from typer.testing import CliRunner

import evolvedirector.trainer.trainer as trainer_module
from evolvedirector.bench.train import REFERENCE_ROWS, RandomCaptions, batch_label, lever_ladder
from evolvedirector.cli import app
from evolvedirector.config import StudentConfig, TrainConfig
from evolvedirector.student import Student
from evolvedirector.trainer import Trainer
from evolvedirector.trainer.timing import SYNC_EVERY_CUDA, LossReader
from evolvedirector.trainer.trainer import EMA, compile_student

PROMPTS = ["a red circle on the left", "two blue squares", "the letter A in red"] * 2


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fresh(config: TrainConfig | None = None, **levers):
    torch.manual_seed(0)
    student = Student(StudentConfig(size="tiny", ema_decay=0.9), 32, text_encoder=RandomCaptions(16, 384))
    config = config or TrainConfig(batch_size=4, lr=1e-3, warmup_steps=2)
    return student, Trainer(student, config, seed=5, device="cpu", **levers)


def images():
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_cpu_defaults_are_the_trainer_as_it_was():
    _, trainer = fresh()
    group = trainer.raw_optimizer.param_groups[0]
    # AdamW as torch picks it on a CPU (one tensor at a time), a loss read every step, nothing pinned.
    assert not group["fused"] and group["foreach"] is None
    assert trainer.sync_every == 1 and not trainer.non_blocking and trainer.ema.foreach
    assert SYNC_EVERY_CUDA > 1


def test_reading_the_loss_every_n_steps_changes_no_number():
    """Losses read in bursts: on_step sees the same values in the same order, the mean returned is
    the same float to the bit, and so are the weights."""
    seen = {}
    means = {}
    weights = {}
    for every in (1, 4):
        student, trainer = fresh(sync_every=every)
        values: list[float] = []
        means[every] = trainer.train(images(), PROMPTS, 10, on_step=values.append)
        seen[every] = values
        weights[every] = [p.detach().clone() for p in student.ema_model.parameters()]
    assert len(seen[1]) == 10 and seen[4] == seen[1]
    assert means[4] == means[1] == sum(seen[1]) / 10
    assert all(torch.equal(a, b) for a, b in zip(weights[1], weights[4]))


def test_the_step_returns_the_loss_on_the_device_and_the_reader_reads_it_in_bursts():
    _, trainer = fresh(sync_every=3)
    x = images()[:4]
    loss = trainer.optimizer_step(x, PROMPTS[:4])
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0
    calls = []
    reader = LossReader(3, on_step=calls.append)
    for value in (1.0, 2.0, 3.0, 4.0):
        reader.add(torch.tensor(value))
        assert len(calls) == (3 if value >= 3 else 0)  # nothing read until three are waiting
    reader.flush()
    assert calls == [1.0, 2.0, 3.0, 4.0] and reader.total == 10.0 and reader.count == 4
    with pytest.raises(ValueError, match="sync_every"):
        fresh(sync_every=0)


def test_fused_adamw_when_asked_trains_the_same_steps():
    plain_student, plain = fresh()
    fused_student, fused = fresh(fused_adam=True)
    assert fused.raw_optimizer.param_groups[0]["fused"]
    plain.train(images(), PROMPTS, 4)
    fused.train(images(), PROMPTS, 4)
    assert fused.raw_optimizer.state  # the fused kernel ran (a CPU has one)
    for a, b in zip(plain_student.model.parameters(), fused_student.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_ema_is_one_foreach_op_and_the_per_tensor_loop_agrees():
    trained = [torch.randn(3, 4), torch.randn(5)]
    shadows = [[t.clone() * 0 for t in trained] for _ in range(2)]
    EMA(trained, shadows[0], 0.99).update(50)
    EMA(trained, shadows[1], 0.99, foreach=False).update(50)
    assert all(torch.equal(a, b) for a, b in zip(*shadows))
    assert not torch.equal(shadows[0][0], torch.zeros(3, 4))


def test_bench_train_levers_prints_every_row_and_the_best_last(monkeypatch):
    # torch.compile on a CPU takes a minute per mode: here only that the trainer is asked for each.
    modes = []
    monkeypatch.setattr(trainer_module, "compile_student",
                        lambda model, scope, mode: scope != "off" and modes.append((scope, mode)))
    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(app, ["bench", "train", "--levers", "--size", "tiny", "--steps", "2",
                                          "--batch-size", "2", "--lever-batches", "4,8", "--device", "cpu",
                                          "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    labels = [label for label, _ in lever_ladder(2, SYNC_EVERY_CUDA)]
    labels += [batch_label(4), batch_label(8)] + [label for label, _ in REFERENCE_ROWS]
    number = r"[\d.e+-]+"
    for label in labels:
        row = next((line for line in lines if line.startswith(label + " ")), None)
        assert row is not None, f"no row {label!r} in:\n{result.output}"
        assert re.search(rf"\s(\d+)\s+({number})\s+({number})\s+({number})\s", row[len(label):]), row
    assert sorted(set(modes)) == [("blocks", "default"), ("blocks", "max-autotune"), ("blocks", "reduce-overhead")]
    assert lines[-2].startswith("best: ")
    match = re.fullmatch(r"images/s=(\S+) mfu=(\S+)", lines[-1])
    assert match and float(match.group(1)) > 0 and 0 < float(match.group(2)) < 1, lines[-1]


def test_bench_train_switches_each_lever():
    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(app, ["bench", "train", "--size", "tiny", "--steps", "2", "--batch-size", "2",
                                          "--device", "cpu", "--threads", "1", "--fused-adam", "--sync-every", "3",
                                          "--per-tensor-ema", "--caption-mask", "full"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert "fused AdamW, loss read every 3 steps, eager, per-tensor EMA, full captions" in result.output
    assert re.fullmatch(r"images/s=\S+ mfu=\S+", result.output.strip().splitlines()[-1])
    bad = CliRunner().invoke(app, ["bench", "train", "--compile-mode", "fast"])
    assert bad.exit_code != 0 and "--compile-mode" in bad.output


def test_compile_blocks_compiles_each_block_and_trains_as_eager_does():
    """train.compile: blocks compiles every transformer block in place (not the model around them),
    and the compiled step computes what the eager one does."""
    eager_student, eager = fresh()
    config = TrainConfig(batch_size=4, lr=1e-3, warmup_steps=2, compile="blocks")
    compiled_student, compiled = fresh(config)
    blocks = compiled_student.model.transformer_blocks
    assert all(block._compiled_call_impl is not None for block in blocks)
    assert compiled_student.model._compiled_call_impl is None
    assert all(block._compiled_call_impl is None for block in eager_student.model.transformer_blocks)
    eager.train(images(), PROMPTS, 2)
    compiled.train(images(), PROMPTS, 2)
    for a, b in zip(eager_student.model.parameters(), compiled_student.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_compile_scopes_and_a_model_without_blocks():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    compile_student(model, "off", "default")
    assert model._compiled_call_impl is None
    compile_student(model, "model", "default")
    assert model._compiled_call_impl is not None
    with pytest.raises(ValueError, match="transformer_blocks"):
        compile_student(torch.nn.Linear(2, 2), "blocks", "default")
    with pytest.raises(ValueError, match="compile"):
        TrainConfig(compile="everything")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a CUDA GPU")
def test_device_cuda_without_a_gpu_is_refused_not_run_on_the_cpu():
    student = Student(StudentConfig(size="tiny"), 32, text_encoder=RandomCaptions(16, 384))
    with pytest.raises(ValueError, match="device: cuda was asked for, but torch sees no CUDA GPU"):
        Trainer(student, TrainConfig(batch_size=4), device="cuda")
