"""Fréchet distances: the offline random-conv features, and FID proper from a TorchScript file."""

import numpy as np
import pytest
import torch

from evolvedirector.evaluation.frechet import (
    InceptionUnavailable, RandomConvFeatures, TorchScriptInception, frechet_distance,
)
from evolvedirector.worlds.shapes.render import render

# The FID network comes as TorchScript, which torch marks deprecated but still loads.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def shapes(prompts, seed):
    import random

    rng = random.Random(seed)
    return [render(p, 32, rng) for p in prompts]


def test_random_conv_features_are_fixed_by_the_seed():
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    first, again, other = RandomConvFeatures(seed=0), RandomConvFeatures(seed=0), RandomConvFeatures(seed=1)
    assert torch.equal(first(images), again(images))
    assert not torch.allclose(first(images), other(images))
    assert first(images).shape == (3, first.num_features)


def test_distance_is_small_for_the_same_kind_of_images_and_large_for_others():
    features = RandomConvFeatures()
    red = ["a red circle on the left", "a red square at the top", "a red triangle in the center"] * 4
    blue = [p.replace("red", "blue") for p in red]
    same = frechet_distance(shapes(red, 0), shapes(red, 1), features)  # other jitter, same content
    different = frechet_distance(shapes(red, 0), shapes(blue, 0), features)
    assert frechet_distance(shapes(red, 0), shapes(red, 0), features) == pytest.approx(0, abs=1e-3)
    assert different > 5 * same


def test_distance_refuses_too_few_images():
    image = np.full((32, 32, 3), 255, np.uint8)
    with pytest.raises(ValueError, match="at least 2 images"):
        frechet_distance([image], [image, image], RandomConvFeatures())


class FakeInception(torch.nn.Module):
    """Stands in for the FID network's TorchScript interface: uint8 images in, 64 features out
    (the real one gives 2048; the test narrows the expected width, since the Fréchet distance of
    2048-wide features costs about a minute on a loaded 2-core machine)."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        pooled = x.float().mean(dim=(2, 3))
        return pooled.repeat(1, 22)[:, :64] / 255.0


class WrongWidth(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return x.float().mean(dim=(2, 3))


def test_fid_proper_runs_on_a_torchscript_network(tmp_path, monkeypatch):
    monkeypatch.setattr(TorchScriptInception, "FEATURES", 64)
    path = tmp_path / "inception.pt"
    torch.jit.script(FakeInception()).save(str(path))
    network = TorchScriptInception(path)
    assert network.num_features == 64
    red = ["a red circle on the left", "a red square at the top"] * 3
    blue = [p.replace("red", "blue") for p in red]
    assert frechet_distance(shapes(red, 0), shapes(blue, 0), network) > 0


def test_fid_proper_names_what_is_missing(tmp_path):
    with pytest.raises(InceptionUnavailable, match="does not exist"):
        TorchScriptInception(tmp_path / "absent.pt")
    state_dict = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.zeros(2, 2)}, state_dict)
    with pytest.raises(InceptionUnavailable, match="not a TorchScript file.*torch-fidelity"):
        TorchScriptInception(state_dict)
    narrow = tmp_path / "narrow.pt"
    torch.jit.script(WrongWidth()).save(str(narrow))
    with pytest.raises(InceptionUnavailable, match=r"\(2, 3\) for 2 images, not \(2, 2048\)"):
        TorchScriptInception(narrow)


def test_the_symmetric_fallback_agrees_with_torchmetrics_where_both_work():
    from torchmetrics.image.fid import _compute_fid

    from evolvedirector.evaluation.frechet import symmetric_frechet

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(200, 8, generator=generator, dtype=torch.float64)
    b = torch.randn(200, 8, generator=generator, dtype=torch.float64) * 1.5 + 0.3
    stats = (a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))
    assert symmetric_frechet(*stats) == pytest.approx(float(_compute_fid(*stats)), rel=1e-6)
