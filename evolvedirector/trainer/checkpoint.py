"""What a trainer checkpoint is on disk, and the one pointer that names the latest.

```
step-00000400/
  transformer/        the trained transformer (diffusers folder: config.json + safetensors)
  transformer_ema/    its exponential moving average (what draws images)
  trainer_state.pt    optimizer (full, by parameter name), schedule, step, set version, seed,
                      and every process's RNG state, as plain tensors and numbers
latest                "step-00000400": the checkpoint to resume from
```

Weights are full (not sharded) tensors, so a checkpoint resumes on any number of processes;
`trainer_state.pt` is read with `weights_only=True`, so a checkpoint can never run code. A
checkpoint is written to a temporary folder and renamed into place; the pointer is written
atomically after it: a crash leaves the previous checkpoint and pointer, never half of one.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from evolvedirector.store.durable import fsync_tree, rename_durably, write_atomic

WEIGHTS = "diffusion_pytorch_model.safetensors"  # diffusers' file name, so `from_pretrained` reads it
STATE = "trainer_state.pt"
POINTER = "latest"


def write_model_folder(model, state: dict[str, torch.Tensor], folder: Path) -> None:
    """A diffusers model folder from a full state dict (gathered from any sharding): the model's
    config, and the weights as safetensors."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_config(folder)
    save_file({name: t.detach().cpu().contiguous() for name, t in state.items()}, folder / WEIGHTS)


def read_model_state(folder: Path) -> dict[str, torch.Tensor]:
    path = Path(folder) / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint weights {path} are missing")
    return load_file(path)


def rng_state() -> dict:
    """This process's global random states, as tensors (loadable with weights_only=True)."""
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor(python_state, dtype=torch.int64),
        "python_version": version,
        "python_gauss": gauss,
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "numpy_rest": [kind, int(position), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"].tolist()), state["python_gauss"]))
    kind, position, has_gauss, cached = state["numpy_rest"]
    np.random.set_state((kind, state["numpy"].numpy().astype(np.uint32), position, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_state(folder: Path) -> dict:
    path = Path(folder) / STATE
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint state {path} is missing")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != 2:
        raise ValueError(f"{path} is not a trainer checkpoint this version reads (format 2)")
    return state


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def publish(tmp: Path, root: Path, name: str, keep: int = 2) -> Path:
    """Rename a finished checkpoint folder into place, point `latest` at it, prune old ones."""
    final = Path(root) / name
    shutil.rmtree(final, ignore_errors=True)  # left by a crash between rename and pointer
    fsync_tree(tmp)  # torch and safetensors do not fsync: a power cut could publish empty files
    rename_durably(Path(tmp), final)
    write_atomic(Path(root) / POINTER, (name + "\n").encode())
    for old in sorted(Path(root).glob("step-*"))[:-keep] if keep else []:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest(root: Path) -> Path | None:
    """The checkpoint `root/latest` names, or None when there is none yet."""
    pointer = Path(root) / POINTER
    if not pointer.is_file():
        return None
    folder = Path(root) / pointer.read_text().strip()
    if not (folder / STATE).is_file():
        raise FileNotFoundError(f"{pointer} names {folder}, which holds no {STATE}")
    return folder
