"""Features the trainer reads instead of recomputing: text-encoder states and VAE latents.

Both encoders are frozen, and the dynamic set shows each sample for many steps, so each feature
is computed once and kept on disk: `features/<kind>/ab/<key>.safetensors`, where the key is the
SHA-256 of (kind, encoder identity, input). The input is what the store holds for the sample
now: the prompt text for a text feature, the image's content hash and target size for a latent.
The file keeps, in its metadata, the key, the identity and the input it was computed from, and
a read checks all three against the request. So a missing, unreadable, stale (another encoder,
another format) or colliding entry is recomputed and rewritten; it is never served in place of
the right one, and never another sample's feature.

safetensors holds tensors and string metadata only: loading a feature cannot run code. Writes go
to a temporary file and are renamed into place, so a crash, or two ranks writing the same
feature at once, leave a whole file or none.

Pixels in the shapes world need no encoder: they are decoded from the (hash-checked) image store
and kept in memory only.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from evolvedirector.store.images import ImageStore, write_atomic

FORMAT = "1"  # bump when the layout of a feature changes: old entries then read as stale


def feature_key(kind: str, identity: str, source: str) -> str:
    return hashlib.sha256(json.dumps([FORMAT, kind, identity, source]).encode()).hexdigest()


def module_identity(module: torch.nn.Module, *extra: object) -> str:
    """A fingerprint of a frozen encoder: its class, config and (a sample of) its weights.

    Every parameter's name and shape and its first 4096 values are hashed: the same checkpoint
    always gives the same identity, a different one (other weights at the same path) almost surely
    another, and even T5-XXL's ~500 tensors hash in a fraction of a second.
    """
    digest = hashlib.sha256()
    digest.update(type(module).__qualname__.encode())
    config = getattr(module, "config", None)
    if config is not None:
        text = config.to_json_string() if hasattr(config, "to_json_string") else json.dumps(dict(config), default=str)
        digest.update(text.encode())
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().reshape(-1)[:4096].float().cpu().numpy().tobytes())
    digest.update(json.dumps([str(e) for e in extra]).encode())
    return digest.hexdigest()[:32]


class FeatureCache:
    """Content-keyed tensors on disk (when `root` is given), with a bounded in-memory layer."""

    def __init__(self, root: Path | None, memory_bytes: int = 2 << 30):
        self.root = None if root is None else Path(root)
        # Least recently used entries leave first. 2 GiB holds every feature of the shapes world
        # (24 kB a prompt) but only ~1000 T5-XXL captions (1.9 MB each): at full scale most reads
        # come from disk.
        self.memory: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self.memory_bytes = memory_bytes
        self._held = 0
        self.stats: Counter[str] = Counter()  # hit, computed, and why: missing, corrupt, stale, collision
        # The asynchronous loop renders captions in its own thread while the trainer reads them in
        # another: one at a time, which also keeps a tokenizer from being used by two at once.
        self._lock = threading.RLock()

    def path(self, kind: str, key: str) -> Path:
        assert self.root is not None
        return self.root / kind / key[:2] / f"{key}.safetensors"

    def get_or_compute(
        self, kind: str, identity: str, sources: list[str],
        compute: Callable[[list[str]], list[dict[str, torch.Tensor]]],
    ) -> list[dict[str, torch.Tensor]]:
        """The features of `sources` (one dict of tensors each); the missing ones are computed
        together, in one call of `compute`, and stored."""
        with self._lock:
            return self._get_or_compute(kind, identity, sources, compute)

    def _get_or_compute(self, kind, identity, sources, compute) -> list[dict[str, torch.Tensor]]:
        keys = [feature_key(kind, identity, source) for source in sources]
        found: dict[str, dict[str, torch.Tensor]] = {}
        missing: dict[str, str] = {}  # key -> source, each once
        for key, source in zip(keys, sources):
            if key in found or key in missing:
                continue
            features = self._read(kind, identity, key, source)
            if features is None:
                missing[key] = source
            else:
                found[key] = features
        if missing:
            computed = compute(list(missing.values()))
            if len(computed) != len(missing):
                raise RuntimeError(f"{kind} encoder returned {len(computed)} features for {len(missing)} inputs")
            for (key, source), features in zip(missing.items(), computed):
                features = {name: t.detach().cpu().contiguous().clone() for name, t in features.items()}
                self._write(kind, identity, key, source, features)
                found[key] = features
                self.stats["computed"] += 1
        return [found[key] for key in keys]

    def _read(self, kind: str, identity: str, key: str, source: str) -> dict[str, torch.Tensor] | None:
        if key in self.memory:
            self.memory.move_to_end(key)
            self.stats["hit"] += 1
            return self.memory[key]
        if self.root is None:
            self.stats["missing"] += 1
            return None
        path = self.path(kind, key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self.stats["missing"] += 1
            return None
        try:
            features = load_safetensors(data)
            with_meta = _metadata(data)
        except (SafetensorError, ValueError, OSError, json.JSONDecodeError):
            self.stats["corrupt"] += 1
            return None
        if with_meta.get("key") != key or with_meta.get("source") != source:
            # Another input's feature under this name: never serve it.
            self.stats["collision"] += 1
            return None
        if with_meta.get("identity") != identity or with_meta.get("format") != FORMAT or with_meta.get("kind") != kind:
            self.stats["stale"] += 1
            return None
        self._remember(key, features)
        self.stats["hit"] += 1
        return features

    def _write(self, kind: str, identity: str, key: str, source: str, features: dict[str, torch.Tensor]) -> None:
        self._remember(key, features)
        if self.root is None:
            return
        metadata = {"format": FORMAT, "kind": kind, "identity": identity, "key": key, "source": source}
        write_atomic(self.path(kind, key), save_safetensors(features, metadata=metadata))

    def _remember(self, key: str, features: dict[str, torch.Tensor]) -> None:
        if key in self.memory:
            self._held -= _nbytes(self.memory.pop(key))
        self.memory[key] = features
        self._held += _nbytes(features)
        while self._held > self.memory_bytes and len(self.memory) > 1:
            self._held -= _nbytes(self.memory.popitem(last=False)[1])


def _nbytes(features: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in features.values())


def _metadata(data: bytes) -> dict[str, str]:
    """The string metadata of a safetensors file (its JSON header's `__metadata__`)."""
    if len(data) < 8:
        raise ValueError("truncated safetensors header")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError("truncated safetensors header")
    return json.loads(data[8 : 8 + size]).get("__metadata__", {})


class CachedTextEncoder:
    """The student's text encoder behind the feature cache: the same `encode(prompts)` and `dim`,
    reading each prompt's (states, mask) from disk when its entry is valid."""

    def __init__(self, encoder, cache: FeatureCache):
        self.encoder = encoder
        self.cache = cache
        model = getattr(encoder, "model", None)
        max_tokens = getattr(encoder, "max_tokens", None)
        if isinstance(model, torch.nn.Module):
            self.identity = module_identity(model, type(encoder).__qualname__, max_tokens)
        else:  # an encoder without weights to fingerprint: trust its class and token budget only
            self.identity = f"{type(encoder).__qualname__}:{max_tokens}"

    def __getattr__(self, name: str):
        # dim, max_tokens, to(), ...: whatever the wrapped encoder has.
        return getattr(self.__dict__["encoder"], name)

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        def compute(missing: list[str]) -> list[dict[str, torch.Tensor]]:
            states, mask = self.encoder.encode(missing)
            return [{"states": s, "mask": m} for s, m in zip(states, mask)]

        features = self.cache.get_or_compute("text", self.identity, list(prompts), compute)
        return torch.stack([f["states"] for f in features]), torch.stack([f["mask"] for f in features])


def fit_to_size(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to cover (height, width), then centre-crop it to exactly that:
    how an image joins its aspect bucket, losing at most a thin border."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    scale = max(height / image.shape[0], width / image.shape[1])
    resized = Image.fromarray(image).resize(
        (max(width, round(image.shape[1] * scale)), max(height, round(image.shape[0] * scale))), Image.BICUBIC
    )
    left = (resized.width - width) // 2
    top = (resized.height - height) // 2
    return np.asarray(resized.crop((left, top, left + width, top + height)))


def to_unit_range(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 to a (3, H, W) float tensor in [-1, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 127.5 - 1.0


class ImageFeatures:
    """What the transformer trains on for a stored image at a bucket's size: the image itself in
    [-1, 1] (pixel space), or its VAE latents, cached on disk under (image hash, size, VAE)."""

    def __init__(self, images: ImageStore, cache: FeatureCache, encode: Callable[[torch.Tensor], torch.Tensor] | None,
                 identity: str | None = None):
        self.images = images
        self.cache = cache
        self.encode = encode  # None: pixel space
        self.identity = identity or "pixels"
        self._pixels = FeatureCache(None, memory_bytes=cache.memory_bytes)  # pixels: memory only
        self._sizes: dict[str, tuple[int, int]] = {}  # content-addressed, so a size never changes

    @classmethod
    def for_student(cls, images: ImageStore, cache: FeatureCache, student) -> ImageFeatures:
        """The features `student` trains on: its VAE's latents when it has one, else pixels."""
        space = getattr(student, "space", None)
        vae = getattr(space, "vae", None)
        if vae is None:
            return cls(images, cache, encode=None)
        return cls(images, cache, encode=student.encode_images,
                   identity=module_identity(vae, getattr(space, "scale", None)))

    def image_size(self, digest: str) -> tuple[int, int]:
        """(height, width) from the PNG header, without decoding the image."""
        if digest not in self._sizes:
            with Image.open(self.images.path(digest)) as image:
                self._sizes[digest] = (image.height, image.width)
        return self._sizes[digest]

    def get(self, digests: list[str], size: tuple[int, int]) -> torch.Tensor:
        sources = [f"{digest}@{size[0]}x{size[1]}" for digest in digests]

        def pixels(missing: list[str]) -> list[dict[str, torch.Tensor]]:
            # ImageStore.get checks every file against its hash: a damaged image fails loudly.
            return [{"x": to_unit_range(fit_to_size(self.images.get(s.split("@")[0]), size))} for s in missing]

        if self.encode is None:
            return torch.stack([f["x"] for f in self._pixels.get_or_compute("pixels", "pixels", sources, pixels)])

        def latents(missing: list[str]) -> list[dict[str, torch.Tensor]]:
            encoded = []
            for start in range(0, len(missing), 16):
                batch = torch.stack([p["x"] for p in pixels(missing[start : start + 16])])
                encoded.extend({"x": x} for x in self.encode(batch))
            return encoded

        return torch.stack([f["x"] for f in self.cache.get_or_compute("latents", self.identity, sources, latents)])
