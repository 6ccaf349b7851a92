"""The run's first line: what it will do and how long that takes here, from a measurement that
changes nothing the run computes."""

import copy

import pytest
import torch

from evolvedirector.bench.train import RandomCaptions
from evolvedirector.config import RunConfig, StudentConfig, TrainConfig
from evolvedirector.loop import plan
from evolvedirector.student import Student
from evolvedirector.trainer import Trainer

PROMPTS = ["a red circle on the left", "two blue squares", "the letter A in red"] * 2


def fresh():
    torch.manual_seed(0)
    student = Student(StudentConfig(size="tiny", ema_decay=0.9), 32, text_encoder=RandomCaptions(16, 384))
    return student, Trainer(student, TrainConfig(batch_size=4, lr=1e-3, warmup_steps=2), seed=5, device="cpu")


def images():
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_measuring_changes_nothing_the_run_computes():
    plain_student, plain = fresh()
    measured_student, measured = fresh()
    plain.train(images(), PROMPTS, 2)
    measured.train(images(), PROMPTS, 2)
    before = copy.deepcopy(measured.optimizer.state_dict())
    rng = torch.get_rng_state()

    result = plan.measure(measured, measured_student, prompts=3, repeats=2)

    assert result.step_seconds > 0 and result.render_seconds > 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert measured.step == 2 and all(p.grad is None for p in measured.model.parameters())
    assert str(measured.optimizer.state_dict()) == str(before)
    plain.train(images(), PROMPTS, 3)
    measured.train(images(), PROMPTS, 3)
    for a, b in zip(plain_student.model.parameters(), measured_student.model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(plain_student.ema_model.parameters(), measured_student.ema_model.parameters()):
        assert torch.equal(a, b)


def config(**budget) -> RunConfig:
    return RunConfig.model_validate({
        "train": {"steps_per_round": 100, "batch_size": 16},
        "evolve": {"select_ratio": 0.5, "render_steps": 4, "seed_prompts": 10},
        "student": {"sample_steps": 10},
        "budget": budget,
    })


def test_the_estimate_counts_training_renders_and_evaluation():
    measured = plan.Measured(step_seconds=0.1, render_seconds=0.01)
    # 100 steps x 0.1 s + (ceil(0.5 x 11) = 6 judged x 4 steps + 8 held-out x 10 steps) x 0.01 s
    assert plan.round_seconds(config(max_rounds=3), measured, set_size=11, heldout=8) == pytest.approx(10 + 1.04)
    line = plan.plan_line(config(max_rounds=3), 0, measured, set_size=11, heldout=8)
    assert line.startswith("plan: rounds 1-3 after the seed round, each 100 training steps at batch 16, ")
    assert "(300 steps in all): about 33 s on this machine" in line
    resumed = plan.plan_line(config(max_rounds=30), 12, measured, set_size=11, heldout=8)
    assert resumed.startswith("plan: rounds 12-30, ") and "about 3.5 min" in resumed  # 19 x 11.04 s = 210 s
    assert "until the budget is spent" in plan.plan_line(config(max_dollars=5), 0, measured, 11, 8)


def test_time_left_follows_the_rounds_measured():
    assert plan.time_left(config(max_rounds=5), 2, [30.0, 50.0]) == ", about 2.0 min left"
    assert plan.time_left(config(max_rounds=5), 5, [30.0]) == ""
    assert plan.time_left(config(max_dollars=5), 2, [30.0]) == ""


def test_the_asynchronous_plan_says_training_goes_on_while_the_director_judges():
    overlapped = config(max_rounds=3)
    overlapped.evolve.overlap = "async"
    line = plan.plan_line(overlapped, 0, plan.Measured(step_seconds=0.1, render_seconds=0.01), set_size=11, heldout=8)
    assert line.startswith("plan: rounds 1-3 after the seed round, each 100 training steps or more at batch 16, "
                           "while the director judges 50% of the set (300 steps or more in all): about ")


def test_the_estimate_times_low_resolution_steps_apart():
    low = config(max_rounds=3)
    low.train = low.train.model_copy(update={"low_res_side": 16, "low_res_steps": 150})
    measured = plan.Measured(step_seconds=0.1, render_seconds=0.01, low_res_step_seconds=0.04)
    # Renders 1.04 s a round (as above); round 1: 100 low steps, round 2: 50 low and 50 full, round 3: 100 full.
    estimates = plan.round_estimates(low, 0, measured, set_size=11, heldout=8)
    assert estimates == pytest.approx([4 + 1.04, 2 + 5 + 1.04, 10 + 1.04])
    line = plan.plan_line(low, 0, measured, set_size=11, heldout=8)
    assert "each 100 training steps at batch 16 (the first 150 at 16 px)" in line
    assert "about 24 s on this machine (measured: 0.100 s per training step (0.040 s at 16 px)" in line
    resumed = plan.Measured(step_seconds=0.1, render_seconds=0.01, first_step=200)  # past the low steps
    assert plan.round_estimates(low, 3, resumed, set_size=11, heldout=8) == pytest.approx([11.04])


def test_time_left_adds_what_rounds_took_beyond_their_estimates_to_the_rounds_left():
    # Round 1 took 5 s more than its estimate: so is each round left expected to.
    assert plan.time_left(config(max_rounds=3), 1, [10.0], [5.0, 8.0, 11.0]) == ", about 29 s left"
    assert plan.time_left(config(max_rounds=3), 2, [10.0, 11.0], [5.0, 8.0, 11.0]) == ", about 15 s left"
