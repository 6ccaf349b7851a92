"""What a trainer checkpoint is on disk, and how a trainer writes and reads one.

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
checkpoint is written to a temporary folder and published into place (store/folders.py); the
pointer is written atomically after it: a crash leaves the previous checkpoint and pointer,
never half of one.

`capture` takes what a checkpoint holds from a trainer, `write` puts it in a folder, `save`
writes and publishes one (the trainer's `step-N` here, a run's `checkpoints/round-R` in
loop/run_folder.py, which points its own `latest` once the round commits), `save_checkpoint`
adds the pointer; `load` and `resume` read one back. Every process calls them (gathering and
sharding state are collective); the main process writes.
"""

from __future__ import annotations

import copy
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import gather_object
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_model_state_dict, set_state_dict

from evolvedirector.store.durable import TMP_PREFIX
from evolvedirector.store.folders import point_latest, publish_folder

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


def capture(trainer, copied: bool = False) -> dict:
    """What a checkpoint holds: weights, EMA, optimizer, schedule, step, set version, RNG
    (collective). `copied`: cloned, so that training on does not change it (a snapshot that
    another thread writes while this one trains)."""
    model_state, optimizer_state = get_state_dict(
        trainer.model, trainer.raw_optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    rng = gather_object([rng_state()]) if trainer.accelerator.num_processes > 1 else [rng_state()]
    state = {"model": model_state, "ema": trainer.ema_state(model_state), "optimizer": optimizer_state,
             "schedule": trainer.schedule.state_dict(), "step": trainer.step, "version": trainer.version, "rng": rng}
    return copy.deepcopy(state) if copied else state


def write(trainer, folder: Path, state: dict | None = None) -> None:
    """Write a checkpoint to `folder`: the trainer as it is now, or a `capture` taken earlier."""
    if state is None:
        state = capture(trainer)
    if trainer.is_main:
        folder = Path(folder)
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        write_model_folder(unwrapped, state["model"], folder / "transformer")
        write_model_folder(unwrapped, state["ema"], folder / "transformer_ema")
        torch.save({"format": 2, "seed": trainer.seed, **{key: state[key] for key in
                    ("step", "version", "optimizer", "schedule", "rng")}}, folder / STATE)
    trainer.accelerator.wait_for_everyone()


def save(trainer, final: Path, state: dict | None = None) -> None:
    """`write` into a temporary folder beside `final`, then publish it as `final`."""
    final = Path(final)
    tmp = final.parent / f"{TMP_PREFIX}{final.name}"
    if trainer.is_main:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a crash mid-save
    trainer.accelerator.wait_for_everyone()
    write(trainer, tmp, state)
    if trainer.is_main:
        publish_folder(tmp, final)
    trainer.accelerator.wait_for_everyone()


def save_checkpoint(trainer, root: Path, keep: int = 2) -> Path:
    """Save `root/step-N`, point `root/latest` at it, and keep the `keep` newest (0: all)."""
    root = Path(root)
    name = checkpoint_name(trainer.step)
    save(trainer, root / name)
    if trainer.is_main:
        older = sorted(root.glob("step-*"))[:-keep] if keep else []
        point_latest(root / POINTER, name, [old for old in older if old.name != name])
    trainer.accelerator.wait_for_everyone()
    return root / name


def load(trainer, folder: Path) -> None:
    """Restore weights, EMA, optimizer, schedule, step, set version and RNG from `folder`."""
    folder = Path(folder)
    state = read_state(folder)
    model_state = read_model_state(folder / "transformer")
    ema_state = read_model_state(folder / "transformer_ema")
    options = StateDictOptions(full_state_dict=True)
    if trainer.fsdp:
        # Shard the EMA exactly as the parameters: load it as the model, copy the shards out.
        set_model_state_dict(trainer.model, ema_state, options=options)
        with torch.no_grad():
            torch._foreach_copy_(trainer.ema.shadows, [p.detach() for p in trainer.model.parameters()])
    else:
        trainer.student.ema_model.load_state_dict(ema_state)
    set_state_dict(trainer.model, trainer.raw_optimizer, model_state_dict=model_state,
                   optim_state_dict=state["optimizer"], options=options)
    trainer.schedule.load_state_dict(state["schedule"])
    trainer.step = int(state["step"])
    trainer.version = state["version"]
    # Global RNG (nothing in a step draws from it, but a student with dropout would): restored
    # when the checkpoint had as many processes, each from its own.
    if len(state["rng"]) == trainer.accelerator.num_processes:
        set_rng_state(state["rng"][trainer.rank])
    trainer.sync_ema()


def resume(trainer, root: Path) -> bool:
    """Load the checkpoint `root/latest` names, if there is one."""
    folder = latest(root)
    if folder is None:
        return False
    load(trainer, folder)
    return True


def latest(root: Path) -> Path | None:
    """The checkpoint `root/latest` names, or None when there is none yet."""
    pointer = Path(root) / POINTER
    if not pointer.is_file():
        return None
    folder = Path(root) / pointer.read_text().strip()
    if not (folder / STATE).is_file():
        raise FileNotFoundError(f"{pointer} names {folder}, which holds no {STATE}")
    return folder
