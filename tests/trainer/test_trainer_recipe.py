"""The two recipe levers of the demo: noisier training timesteps, and a low-resolution first stage."""

import pytest
import torch
from pydantic import ValidationError

from evolvedirector.bench.train import RandomCaptions
from evolvedirector.config import StudentConfig, TrainConfig
from evolvedirector.student import Student
from evolvedirector.student.student import draw_timesteps
from evolvedirector.trainer import Trainer

PROMPTS = ["a red circle on the left", "two blue squares", "the letter A in red", "a green square at the top"]


def test_power_one_draws_what_uniform_timesteps_always_drew():
    drawn = draw_timesteps(64, 1000, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(drawn, torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("power", [0.5, 0.25])
def test_a_power_below_one_draws_noisier_timesteps_with_the_density_it_promises(power):
    drawn = draw_timesteps(20000, 1000, power, torch.Generator().manual_seed(0)).double()
    assert drawn.min() >= 0 and drawn.max() <= 999
    # P(t < T/4) = (1/4) ** (1 / power): 1/16 at 0.5, 1/256 at 0.25 (uniform: 1/4).
    assert (drawn < 250).double().mean().item() == pytest.approx(0.25 ** (1 / power), abs=0.01)
    assert drawn.mean().item() == pytest.approx(1000 / (1 + power), rel=0.02)  # E[u^p] = 1 / (1 + p)


@pytest.mark.parametrize("fields", [{"timestep_power": 0}, {"timestep_power": 1.5},
                                    {"low_res_side": 16}, {"low_res_steps": 10}])
def test_bad_recipe_fields_are_refused_by_name(fields):
    with pytest.raises(ValidationError) as caught:
        TrainConfig(**fields)
    assert any(name in str(caught.value) for name in fields)


def trainer(**train):
    torch.manual_seed(0)
    student = Student(StudentConfig(size="tiny", ema_decay=0.9), 32, text_encoder=RandomCaptions(16, 384))
    config = TrainConfig(batch_size=4, lr=1e-3, warmup_steps=2, **train)
    return student, Trainer(student, config, seed=5, device="cpu")


@pytest.mark.parametrize("side", [32, 48, 18])
def test_a_low_res_side_the_student_cannot_take_is_refused(side):
    with pytest.raises(ValueError, match="low_res_side"):
        trainer(low_res_side=side, low_res_steps=3)


def record_input_sizes(model) -> list[tuple[int, int]]:
    """The (height, width) of every input the model is called on, in order."""
    sizes, forward = [], model.forward

    def recording(x, *args, **kwargs):
        sizes.append(tuple(x.shape[-2:]))
        return forward(x, *args, **kwargs)

    model.forward = recording
    return sizes


def test_the_first_low_res_steps_train_on_smaller_images_then_full_size():
    student, low = trainer(low_res_side=16, low_res_steps=3)
    sizes = record_input_sizes(student.model)
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    low.train(images, PROMPTS, 5)
    assert sizes == [(16, 16)] * 3 + [(32, 32)] * 2
    assert low.training_size((32, 32), step=2) == (16, 16) and low.training_size((32, 32), step=3) == (32, 32)


def test_a_step_is_timed_at_the_size_it_will_train_at():
    student, fresh = trainer(low_res_side=16, low_res_steps=3)
    sizes = record_input_sizes(student.model)
    fresh.time_step(repeats=1)
    assert set(sizes) == {(16, 16)}
    sizes.clear()
    fresh.time_step(repeats=1, step=3)
    assert set(sizes) == {(32, 32)}


def test_the_timestep_power_changes_training_and_power_one_changes_nothing():
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    results = {}
    for power in (None, 1.0, 0.5):
        student, run = trainer() if power is None else trainer(timestep_power=power)
        run.train(images, PROMPTS, 3)
        results[power] = [p.detach().clone() for p in student.model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(results[None], results[1.0]))
    assert not all(torch.equal(a, b) for a, b in zip(results[None], results[0.5]))
