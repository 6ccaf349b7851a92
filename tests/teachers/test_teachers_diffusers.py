"""A local diffusers pipeline as a teacher: a tiny random StableDiffusionPipeline built from
configs, saved to a folder and loaded by path (nothing downloaded), one copy per device."""

import asyncio

import numpy as np
import pytest
from tiny_models import build_tiny_sd_pipeline

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    return build_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny-sd"))


def diffusers_teacher(path, **fields):
    from evolvedirector.config import DiffusersTeacherConfig
    from evolvedirector.teachers import build_teacher

    return build_teacher(DiffusersTeacherConfig(**{
        "name": "tiny-sd", "backend": "diffusers", "model": str(path), "devices": ["cpu", "cpu"], "steps": 2,
        "guidance": 1.0, "cost_per_image": 0.001, **fields,
    }))


def test_a_pipeline_loaded_by_path_draws_through_the_ledger_on_every_copy(tiny_pipeline, store, images, buy):
    teacher = diffusers_teacher(tiny_pipeline)
    assert teacher.concurrency == 2
    purchases = buy(teacher, ["a red circle", "two blue squares", "a green triangle", "the letter A"])
    assert all(p.image_hash is not None for p in purchases)
    drawn = [images.get(p.image_hash) for p in purchases]
    assert all(image.shape == (32, 32, 3) and image.dtype == np.uint8 for image in drawn)
    assert all(n > 0 for n in teacher.calls_per_copy)  # the calls were spread over both copies
    assert store.spend() == (4, pytest.approx(0.004))

    from evolvedirector.teachers import ImageRequest

    again, other_seed = asyncio.run(teacher.generate([ImageRequest("a red circle", 0, 32),
                                                      ImageRequest("a red circle", 1, 32)]))
    np.testing.assert_array_equal(again.image, drawn[0])  # deterministic per (prompt, seed)
    assert not np.array_equal(other_seed.image, drawn[0])


def test_a_pipeline_error_is_recorded_and_counted_not_raised(tiny_pipeline, store, buy):
    teacher = diffusers_teacher(tiny_pipeline, devices=["cpu"], sizes={32: "36x36"})  # not a multiple of 8
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is None and purchase.error.startswith("pipeline_error")
    assert store.fault_counts() == {"tiny-sd": {"pipeline_error": 1}}
    assert store.spend() == (0, 0)
