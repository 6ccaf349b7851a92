"""Every tensor handed to the transformer lives on the transformer's device.

A CPU has one device, so a tensor left on the CPU beside a model on a GPU goes unnoticed here
and crashes there (sampling once passed the scheduler's timesteps from the CPU to a CUDA model).
These tests put the transformer on the `meta` device, which holds no data, and check every
tensor argument of its first forward call against it; the call then stops, since a meta model
computes nothing worth going on with."""

from __future__ import annotations

import pytest
import torch

from evolvedirector.config import StudentConfig
from evolvedirector.student import Student, TextEncoder


class ReachedTheModel(Exception):
    """The forward call was reached with every tensor on the model's device."""


def tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors(item)


def on_meta(model: torch.nn.Module) -> torch.nn.Module:
    """The model on the meta device, checking the devices of its inputs at its first call."""
    model.to("meta")

    def check(module, args, kwargs):
        found = {name: t.device.type for name, t in (*((str(i), a) for i, a in enumerate(args)),
                                                      *kwargs.items()) for t in tensors(t)}
        misplaced = {name: device for name, device in found.items() if device != "meta"}
        assert not misplaced, f"tensors reached a model on meta from another device: {misplaced}"
        raise ReachedTheModel

    model.register_forward_pre_hook(check, with_kwargs=True)
    return model


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder(max_tokens=16)


@pytest.fixture
def student(text_encoder):
    return Student(StudentConfig(size="tiny", sample_steps=2), 32, text_encoder=text_encoder)


def test_the_check_fires_on_a_tensor_from_another_device(student):
    model = on_meta(student.model)
    with pytest.raises(AssertionError, match="timestep"):
        model(torch.zeros(1, 3, 32, 32, device="meta"), encoder_hidden_states=torch.zeros(1, 16, 384, device="meta"),
              timestep=torch.tensor([1]), added_cond_kwargs={"resolution": None, "aspect_ratio": None})


def test_sampling_hands_the_model_only_tensors_on_its_device(student):
    on_meta(student.ema_model)
    with pytest.raises(ReachedTheModel):
        student.generate(["a red circle on the left"], steps=2)


def test_the_training_loss_hands_the_model_only_tensors_on_its_device(student):
    model = on_meta(student.model)
    images = torch.zeros(2, 3, 32, 32, device="meta")
    with pytest.raises(ReachedTheModel):
        student.loss(model, images, ["a red circle on the left", "two blue squares"], torch.Generator(), 0.1)


def test_the_exported_pipeline_hands_its_transformer_only_tensors_on_its_device(student, tmp_path):
    """A pipeline whose text encoder stays on the CPU (offloaded) and transformer is elsewhere."""
    from evolvedirector.student.export import export_student
    from evolvedirector.student.pipeline import load_export

    pipe = load_export(export_student(student, tmp_path / "export"))
    on_meta(pipe.transformer)
    with pytest.raises(ReachedTheModel):
        pipe("a red circle on the left", num_inference_steps=2, generator=torch.Generator().manual_seed(0))
