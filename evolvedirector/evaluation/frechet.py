"""Fréchet distances between two sets of images, computed with torchmetrics.

Two feature networks:
- `RandomConvFeatures` (always available, offline): a small convolutional net whose weights are
  drawn once from a fixed seed and never trained. Its Fréchet distance is **not FID**: it measures
  how far apart two image sets are in colour, edge and layout statistics, is comparable only with
  itself (same seed, same version), and says nothing about what an Inception network would see.
  It is reported as "FD-randconv".
- `TorchScriptInception` (FID proper): the Inception-v3 FID network, loaded from a TorchScript
  file the user supplies (`inception-2015-12-05.pt`, the file StyleGAN2-ADA and clean-fid
  publish; called as `net(uint8 images, return_features=True)` -> 2048 features). torchmetrics'
  built-in Inception needs torch-fidelity (and its weights from the network), which this project
  does not depend on; a plain state dict cannot be used for the same reason: building the network
  around it needs torch-fidelity's module.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

RANDCONV_NAME = "FD-randconv"
RANDCONV_DESCRIPTION = (
    "Fréchet distance on the pooled activations of a fixed, randomly initialised (seed 0, never "
    "trained) 3-layer conv net at 64x64 pixels; not FID, comparable only with itself"
)


class RandomConvFeatures(nn.Module):
    """Three 3x3 stride-2 convolutions with ReLU; the features are each layer's channel means.

    Weights come from numpy's PCG64 generator with a fixed seed, so they are the same on every
    machine and torch version. The first layer's means keep colour information (what most
    shapes-world mistakes change), the later ones edges and layout.
    """

    def __init__(self, seed: int = 0, size: int = 64, channels: Sequence[int] = (32, 64, 128)):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.size = size
        self.convs = nn.ModuleList()
        previous = 3
        for width in channels:
            conv = nn.Conv2d(previous, width, kernel_size=3, stride=2, padding=1)
            fan_in = previous * 9
            weight = rng.standard_normal((width, previous, 3, 3)) * np.sqrt(2.0 / fan_in)  # He init
            conv.weight.data = torch.from_numpy(weight.astype(np.float32))
            conv.bias.data.zero_()
            self.convs.append(conv)
            previous = width
        self.requires_grad_(False).eval()
        self.num_features = int(sum(channels))  # torchmetrics reads this instead of probing

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> float64 (N, num_features)."""
        x = images.float() / 127.5 - 1.0
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        pooled = []
        for conv in self.convs:
            x = F.relu(conv(x))
            pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1).double()


class InceptionUnavailable(ValueError):
    """The file given for FID proper cannot serve as the Inception FID network."""


class TorchScriptInception(nn.Module):
    """The FID Inception network from a user-supplied TorchScript file (uint8 in, 2048 features out)."""

    FEATURES = 2048

    def __init__(self, path: Path):
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise InceptionUnavailable(f"Inception file {path} does not exist")
        hint = (
            "FID proper needs the Inception-v3 FID network saved with TorchScript "
            "(inception-2015-12-05.pt, as published with StyleGAN2-ADA and clean-fid); a state dict "
            "cannot be used without torch-fidelity, which this project does not install"
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=DeprecationWarning)  # torch.jit is deprecated, still works
                warnings.simplefilter("ignore", category=FutureWarning)
                self.net = torch.jit.load(str(path), map_location="cpu")
        except Exception as error:  # a zip without TorchScript, a pickle, random bytes
            raise InceptionUnavailable(f"{path} is not a TorchScript file ({type(error).__name__}). {hint}") from None
        self.net.eval()
        probe = torch.zeros((2, 3, 299, 299), dtype=torch.uint8)
        try:
            features = self._call(probe)
        except Exception as error:
            raise InceptionUnavailable(
                f"{path} does not accept uint8 images (N, 3, H, W) ({type(error).__name__}: {error}). {hint}"
            ) from None
        if features.ndim != 2 or features.shape != (2, self.FEATURES):
            raise InceptionUnavailable(
                f"{path} returns features of shape {tuple(features.shape)} for 2 images, "
                f"not (2, {self.FEATURES}). {hint}"
            )
        self.num_features = self.FEATURES

    def _call(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net(images, return_features=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._call(images).double()


def _batches(images: Sequence[np.ndarray]):
    """uint8 NCHW tensors, one per run of images of the same shape (teachers may draw other sizes)."""
    groups: dict[tuple, list[np.ndarray]] = {}
    for image in images:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected (H, W, 3) uint8 images, got {image.dtype} {image.shape}")
        groups.setdefault(image.shape, []).append(image)
    for group in groups.values():
        yield torch.from_numpy(np.stack(group)).permute(0, 3, 1, 2).contiguous()


def frechet_distance(real: Sequence[np.ndarray], generated: Sequence[np.ndarray], feature: nn.Module) -> float:
    """Fréchet distance between the feature Gaussians of two image sets (torchmetrics' FID code)."""
    from torchmetrics.image.fid import FrechetInceptionDistance  # slow import: only when asked for

    if len(real) < 2 or len(generated) < 2:
        raise ValueError(f"a Fréchet distance needs at least 2 images per set, got {len(real)} and {len(generated)}")
    metric = FrechetInceptionDistance(feature=feature, normalize=False)
    for batch in _batches(real):
        metric.update(batch, real=True)
    for batch in _batches(generated):
        metric.update(batch, real=False)
    try:
        return float(metric.compute())
    except torch.linalg.LinAlgError:
        # torchmetrics takes the eigenvalues of the non-symmetric product of the covariances, which
        # fails to converge when they are rank-deficient (fewer images than features, duplicated
        # features). The same trace through symmetric matrices is stable.
        return symmetric_frechet(*_statistics(metric, "real"), *_statistics(metric, "fake"))


def _statistics(metric, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance from the sums torchmetrics accumulated, as its `compute` forms them."""
    n = getattr(metric, f"{which}_features_num_samples")
    mean = (getattr(metric, f"{which}_features_sum") / n).unsqueeze(0)
    cov = (getattr(metric, f"{which}_features_cov_sum") - n * mean.t().mm(mean)) / (n - 1)
    return mean.squeeze(0), cov


def symmetric_frechet(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1 S2)^½), with Tr (S1 S2)^½ = Tr (S1^½ S2 S1^½)^½ (symmetric)."""
    values, vectors = torch.linalg.eigh(sigma1)
    root = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    inner = root @ sigma2 @ root
    trace_root = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_root)
