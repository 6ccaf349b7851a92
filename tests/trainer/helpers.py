"""A small run folder for trainer tests: config.yaml, a store with two committed rounds, images."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import yaml

from evolvedirector.config import dump_config, parse_config
from evolvedirector.store import ImageStore, NewSample, RoundRecord, Store
from evolvedirector.worlds.shapes import grammar


def tiny_train_config(out: Path, **train) -> dict:
    return {
        "out": str(out),
        "seed": 11,
        "threads": 1,
        "device": "cpu",
        "student": {"size": "tiny", "ema_decay": 0.9},
        "train": {"batch_size": 2, "lr": 1e-3, "warmup_steps": 2, "steps_per_round": 2, **train},
        "budget": {"max_rounds": 1},
    }


def make_run(folder: Path, samples: int = 10, **train) -> Path:
    """Round 0: `samples` prompts with random images; round 1: three deleted, four added."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(dump_config(parse_config(tiny_train_config(folder, **train))))
    store, images = Store(folder / "evolve.db"), ImageStore(folder / "images")
    rng = np.random.default_rng(0)
    prompts = grammar.all_prompts()

    def new(i: int) -> NewSample:
        digest = images.put(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        return NewSample(prompt=prompts[i], domain=grammar.parse(prompts[i]).domain, operation="seed",
                         teacher="atlas", image_hash=digest)

    store.commit_round(RoundRecord(round=0, started_at=time.time(), new_samples=[new(i) for i in range(samples)]))
    first = [s.id for s in store.active_samples()][:3]
    store.commit_round(RoundRecord(round=1, started_at=time.time(), deleted_ids=first,
                                   new_samples=[new(samples + i) for i in range(4)]))
    store.close()
    return folder
