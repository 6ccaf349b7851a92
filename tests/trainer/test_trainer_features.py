"""The feature cache: hits, and every bad entry recomputed, never served."""

import numpy as np
import pytest
import torch

from evolvedirector.store import ImageStore
from evolvedirector.trainer.features import (
    CachedTextEncoder, FeatureCache, ImageFeatures, feature_key, fit_to_size, module_identity, to_unit_range,
)


class CountingEncoder:
    """A text encoder with real weights to fingerprint, that counts the prompts it encodes."""

    def __init__(self, seed: int = 0):
        torch.manual_seed(seed)
        self.model = torch.nn.Embedding(1000, 8)
        self.max_tokens = 4
        self.dim = 8
        self.encoded: list[str] = []

    def encode(self, prompts):
        self.encoded.extend(prompts)
        ids = torch.tensor([[sum(p.encode()) + i for i in range(self.max_tokens)] for p in prompts]) % 1000
        with torch.no_grad():
            return self.model(ids), torch.ones(len(prompts), self.max_tokens, dtype=torch.long)


PROMPTS = ["a red circle", "two blue squares", "the letter A in green"]


def fresh(root, seed: int = 0) -> tuple[CachedTextEncoder, CountingEncoder]:
    encoder = CountingEncoder(seed)
    return CachedTextEncoder(encoder, FeatureCache(root)), encoder


def entry(cached: CachedTextEncoder, prompt: str):
    return cached.cache.path("text", feature_key("text", cached.identity, prompt))


def test_features_are_computed_once_then_read_from_disk(tmp_path):
    cached, encoder = fresh(tmp_path)
    states, mask = cached.encode(PROMPTS + PROMPTS[:1])
    assert sorted(encoder.encoded) == sorted(PROMPTS)  # each prompt once, even when repeated
    assert states.shape == (4, 4, 8) and mask.shape == (4, 4)
    torch.testing.assert_close(states[0], states[3])

    again, encoder = fresh(tmp_path)  # a new process: memory empty, disk full
    states_again, _ = again.encode(PROMPTS)
    assert encoder.encoded == []
    assert torch.equal(states_again, states[:3])
    assert again.cache.stats["hit"] == 3


@pytest.mark.parametrize("damage", ["delete", "truncate", "garbage"])
def test_a_missing_or_corrupt_entry_is_recomputed(tmp_path, damage):
    cached, _ = fresh(tmp_path)
    expected, _ = cached.encode(PROMPTS)
    path = entry(cached, PROMPTS[1])
    if damage == "delete":
        path.unlink()
    elif damage == "truncate":  # a write cut short (what the atomic rename prevents)
        path.write_bytes(path.read_bytes()[:-40])
    else:
        path.write_bytes(b"\xff" * 64)

    again, encoder = fresh(tmp_path)
    states, _ = again.encode(PROMPTS)
    assert encoder.encoded == [PROMPTS[1]]
    assert torch.equal(states, expected)
    assert again.cache.stats["missing" if damage == "delete" else "corrupt"] == 1
    # ... and the rewritten entry is good again.
    third, encoder = fresh(tmp_path)
    third.encode(PROMPTS)
    assert encoder.encoded == []


def test_another_inputs_entry_under_this_name_is_never_served(tmp_path):
    """A key collision (here forced by copying one entry over another's name): the key and the
    source stored inside the file do not match the request, so it is recomputed."""
    cached, _ = fresh(tmp_path)
    expected, _ = cached.encode(PROMPTS)
    entry(cached, PROMPTS[0]).write_bytes(entry(cached, PROMPTS[2]).read_bytes())

    again, encoder = fresh(tmp_path)
    states, _ = again.encode(PROMPTS)
    assert encoder.encoded == [PROMPTS[0]]
    assert torch.equal(states[0], expected[0]) and not torch.equal(states[0], expected[2])
    assert again.cache.stats["collision"] == 1


def test_a_stale_entry_from_another_encoder_is_recomputed(tmp_path):
    cached, _ = fresh(tmp_path, seed=0)
    cached.encode(PROMPTS)
    other, encoder = fresh(tmp_path, seed=1)  # other weights: another identity, other features
    assert other.identity != cached.identity
    states, _ = other.encode(PROMPTS)
    assert sorted(encoder.encoded) == sorted(PROMPTS)
    # Force the old encoder's file under the new identity's name: its metadata gives it away.
    from safetensors.torch import load as load_bytes
    from safetensors.torch import save as save_bytes

    old_path, new_path = entry(cached, PROMPTS[0]), entry(other, PROMPTS[0])
    tensors = load_bytes(old_path.read_bytes())
    new_path.write_bytes(save_bytes(tensors, metadata={
        "format": "1", "kind": "text", "identity": cached.identity,
        "key": feature_key("text", other.identity, PROMPTS[0]), "source": PROMPTS[0],
    }))
    third, encoder = fresh(tmp_path, seed=1)
    again, _ = third.encode(PROMPTS[:1])
    assert encoder.encoded == [PROMPTS[0]] and third.cache.stats["stale"] == 1
    assert torch.equal(again[0], states[0])


def test_memory_is_bounded_in_bytes(tmp_path):
    cache = FeatureCache(tmp_path, memory_bytes=3 * 4 * 8 * 4 + 100)  # about three prompts' states
    cached = CachedTextEncoder(CountingEncoder(), cache)
    cached.encode(PROMPTS + ["a fourth prompt", "a fifth one"])
    assert len(cache.memory) <= 3
    cached.encode(PROMPTS[:1])  # evicted from memory, still on disk: read, not recomputed
    assert cached.encoder.encoded.count(PROMPTS[0]) == 1


def test_identity_follows_the_weights():
    a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    b.load_state_dict(a.state_dict())
    assert module_identity(a) == module_identity(b)
    with torch.no_grad():
        b.weight[0, 0] += 1
    assert module_identity(a) != module_identity(b)


def test_image_features_pixels_and_cached_latents(tmp_path):
    images = ImageStore(tmp_path / "images")
    rng = np.random.default_rng(0)
    square = images.put(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    wide = images.put(rng.integers(0, 256, (20, 40, 3), dtype=np.uint8))

    pixels = ImageFeatures(images, FeatureCache(tmp_path / "features"), encode=None)
    assert pixels.image_size(wide) == (20, 40)
    x = pixels.get([square, wide], (16, 32))
    assert x.shape == (2, 3, 16, 32) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(pixels.get([square], (32, 32))[0], to_unit_range(images.get(square)))
    assert not (tmp_path / "features").exists()  # pixels are never written to disk

    calls = []

    def encode(batch):  # a stand-in VAE: 2x downsampling, 4 channels
        calls.append(len(batch))
        return torch.nn.functional.avg_pool2d(batch, 2).repeat(1, 2, 1, 1)[:, :4]

    latents = ImageFeatures(images, FeatureCache(tmp_path / "features"), encode=encode, identity="vae-1")
    first = latents.get([square, wide], (16, 32))
    assert first.shape == (2, 4, 8, 16) and calls == [2]
    again = ImageFeatures(images, FeatureCache(tmp_path / "features"), encode=encode, identity="vae-1")
    assert torch.equal(again.get([wide, square], (16, 32)), first.flip(0)) and calls == [2]
    # Another size is another feature; another VAE identity too.
    again.get([square], (32, 32))
    ImageFeatures(images, FeatureCache(tmp_path / "features"), encode=encode, identity="vae-2").get([square], (16, 32))
    assert calls == [2, 1, 1]
    # A damaged image is refused by the image store's hash check, not silently encoded.
    images.path(wide).write_bytes(images.path(square).read_bytes())
    with pytest.raises(ValueError, match="does not match its hash"):
        again.get([wide], (32, 32))


def test_fit_to_size_covers_then_crops_the_centre():
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    image[:, 15:25] = 255  # a white band in the middle quarter
    out = fit_to_size(image, (32, 32))  # scaled 1.6x to 32x64, then the middle 32 columns
    assert out.shape == (32, 32, 3)
    assert out[:, 10:22].min() > 200 and out[:, :4].max() < 50 and out[:, -4:].max() < 50
    assert fit_to_size(image, (20, 40)) is image
