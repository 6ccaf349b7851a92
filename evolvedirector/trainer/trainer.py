"""The training loop, written out: agree on the set, draw this process's shard of the step's
batch, step, update the EMA. Read `_train` top to bottom, then `optimizer_step`.

`accelerate` owns the processes and the devices. One process on a CPU is plain PyTorch; under
`accelerate launch` the distributed strategy comes from accelerate's own config and flags (DDP,
or FSDP version 2 over GPUs and nodes), mixed precision (`train.mixed_precision`) and gradient
checkpointing (`train.gradient_checkpointing`) from the run's config.

Speed levers, each a `Trainer` argument whose default is right for the device (`bench train
--levers` measures them): fused AdamW on CUDA (`fused_adam`; on a CPU the optimizer is the one it
always was), the EMA as one foreach op, and no host sync inside the step (`sync_every`): on CUDA
the step copies its inputs from pinned memory without waiting and returns its loss as a device
tensor, which `_train` reads to the host every `sync_every` steps (on a CPU, where waiting costs
nothing, every step), so the GPU runs ahead of Python.

Experiment trackers (`log_with`, started by the caller with `accelerator.init_trackers`): each
step's loss and learning rate are logged when the loss is read, at the optimizer step's number
(1 for the first step), so a tracker costs no host sync of its own; the main process logs.

Determinism, which makes resumes exact: every random draw of a step (which samples, which
noise, which timesteps, which captions are dropped) comes from generators seeded by (seed,
step[, rank]) alone, so the step is the whole data position. The set is agreed at each call of
`train_on_samples`: the main process's version is broadcast, so every process switches to the
same version at the same step. A caller that follows a live set (loop/background.py, `launch
--follow`) passes `until`: asked before each step on the main process, its answer broadcast, so
every process leaves at the same step boundary, to come back with the newer version. Only the
main process writes checkpoints.

`train_seconds` sums the host time spent inside training steps (what `bench loop` calls busy).
"""

from __future__ import annotations

import copy
import itertools
import shutil
import threading
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedType
from accelerate.utils import broadcast_object_list, gather_object
from diffusers.optimization import get_constant_schedule_with_warmup
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_model_state_dict, set_state_dict

from evolvedirector.store.images import ImageStore
from evolvedirector.student.buckets import buckets_at
from evolvedirector.student.student import to_device
from evolvedirector.trainer import checkpoint as ckpt
from evolvedirector.trainer.features import CachedTextEncoder, FeatureCache, ImageFeatures, module_identity
from evolvedirector.trainer.sampling import BucketBatchSampler, seed_for


@dataclass
class TrainingSet:
    """One version of the set, as the loop trains on it: per sample its id, prompt and image
    size, and a loader of model-space tensors for some samples at one bucket's size."""

    version: int | None
    ids: list[int]
    prompts: list[str]
    sizes: list[tuple[int, int]]
    load: Callable[[list[int], tuple[int, int]], torch.Tensor]
    weights: list[float] | None = None  # each sample's relative chance of being drawn (None: equal)


SYNC_EVERY_CUDA = 20  # steps between two reads of the loss on a GPU: one host sync per 20 steps


def build_optimizer(model: torch.nn.Module, config, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW; `fused`: one fused kernel per step for all parameters (the parameters must be on a
    device with fused kernels by the first step). Not fused, torch picks as it always has: foreach
    on CUDA, one tensor at a time on a CPU."""
    extra = {"fused": True} if fused else {}
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, eps=config.adam_eps,
                             **extra)


class LossReader:
    """The losses of steps not yet read, left on the device until `every` of them are waiting;
    then one read (one host sync) brings them all, and `on_step` is called for each in step order.
    `total` and `count` sum what has been read, as Python floats in step order (the same sum as
    reading each step's loss at once)."""

    def __init__(self, every: int = 1, on_step: Callable[[float], None] | None = None):
        if every < 1:
            raise ValueError(f"sync_every must be >= 1, got {every}")
        self.every, self.on_step = every, on_step
        self.pending: list[torch.Tensor] = []
        self.total, self.count = 0.0, 0

    def add(self, loss: torch.Tensor) -> None:
        self.pending.append(loss)
        if len(self.pending) >= self.every:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        values = torch.stack(self.pending).tolist() if len(self.pending) > 1 else [self.pending[0].item()]
        self.pending = []
        for value in values:
            self.total += value
            self.count += 1
            if self.on_step is not None:
                self.on_step(value)


class EMA:
    """Exponential moving average of the trained weights, one shadow tensor per parameter.

    Without FSDP the shadows are the parameters of `student.ema_model` itself (it draws images at
    once); under FSDP each process keeps the EMA of its own shard, and `gather` assembles it.
    The warm-up keeps early EMA weights from being mostly the random initialisation.
    """

    def __init__(self, trained: list[torch.Tensor], shadows: list[torch.Tensor], decay: float, foreach: bool = True):
        if [t.shape for t in trained] != [s.shape for s in shadows]:
            raise ValueError("EMA shadows do not match the trained parameters")
        self.trained, self.shadows, self.decay = trained, shadows, decay
        self.foreach = foreach  # False: one lerp per tensor (only to measure what the foreach op saves)

    @torch.no_grad()
    def update(self, step: int) -> None:
        # The weight is a Python float: no device tensor is read, so no host sync.
        decay = min(self.decay, (1 + step) / (10 + step))
        if self.foreach:
            torch._foreach_lerp_(self.shadows, [p.detach() for p in self.trained], 1.0 - decay)
        else:
            for shadow, p in zip(self.shadows, self.trained):
                shadow.lerp_(p.detach(), 1.0 - decay)


def compile_student(model: torch.nn.Module, scope: str, mode: str) -> None:
    """torch.compile the transformer in place (a DDP or FSDP wrapper calls the compiled module).
    'blocks' compiles each of `transformer_blocks`: they share their code, so one compilation (and
    one recompile per new shape) serves all of them, where 'model' traces the whole depth at once."""
    if scope == "off":
        return
    if scope == "model":
        model.compile(mode=mode)
        return
    blocks = getattr(model, "transformer_blocks", None)
    if not blocks:
        raise ValueError(f"train.compile: blocks needs a model with transformer_blocks; {type(model).__name__} "
                         "has none (use compile: model)")
    for block in blocks:
        block.compile(mode=mode)


class Trainer:
    def __init__(self, student, config, *, seed: int = 0, device: str = "auto", cache_dir: Path | None = None,
                 images: ImageStore | None = None, fused_adam: bool | None = None, sync_every: int | None = None,
                 foreach_ema: bool = True, log_with: Sequence[str] = (), logging_dir: Path | None = None):
        """`fused_adam` (None: on CUDA) and `sync_every` (None: every step on a CPU,
        SYNC_EVERY_CUDA steps on a GPU) are speed levers (see the module's docstring);
        `foreach_ema=False` only serves to measure the foreach EMA. `log_with`: accelerate's
        tracker names, writing local files under `logging_dir`."""
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device: cuda was asked for, but torch sees no CUDA GPU (torch.cuda.is_available() is "
                             "False); set device: auto or cpu")
        self.student = student
        self.config = config
        self.seed = seed
        self.accelerator = Accelerator(
            cpu=device == "cpu" or (device == "auto" and not torch.cuda.is_available()),
            mixed_precision=config.mixed_precision,
            log_with=list(log_with) or None,
            project_dir=logging_dir,
        )
        self.fsdp = self.accelerator.distributed_type == DistributedType.FSDP
        if self.fsdp and not self.accelerator.is_fsdp2:
            raise ValueError("FSDP needs fsdp_version: 2 in the accelerate config (the trainer's EMA and "
                             "checkpoints read parameters as DTensors)")
        if self.fsdp:
            # `accelerate launch --use_fsdp` turns cpu_ram_efficient_loading on by default: a path for
            # Transformers models that re-broadcasts rank 0's weights by parameter name and fails on a
            # diffusers model's root-level parameter (PixArt's scale_shift_table). Nothing is gained
            # here: every process builds the same student from the same seed or checkpoint.
            self.accelerator.state.fsdp_plugin.cpu_ram_efficient_loading = False
        # Features: text states (and VAE latents) cached on disk beside the run; pixels in memory.
        self.features = FeatureCache(cache_dir)
        if not isinstance(student.text, CachedTextEncoder):
            student.text = CachedTextEncoder(student.text, self.features)
        self.image_store = images
        self.image_features = None if images is None else self._image_features(images)
        self.buckets()  # a bad bucket table fails here, not at the first step
        self._check_low_res()
        if config.gradient_checkpointing:
            student.model.enable_gradient_checkpointing()

        on_cuda = self.device.type == "cuda"
        self.fused_adam = on_cuda if fused_adam is None else fused_adam
        self.sync_every = (SYNC_EVERY_CUDA if on_cuda else 1) if sync_every is None else sync_every
        if self.sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {self.sync_every}")
        # Reading the loss less often only pays if nothing else waits for the device: inputs then
        # go through pinned memory without blocking (a copy from pageable memory syncs the stream).
        self.non_blocking = on_cuda and self.sync_every > 1
        # Built on the parameters where they are now; accelerate moves them in place (fused
        # kernels only need them on the device by the first step).
        self.raw_optimizer = build_optimizer(student.model, config, fused=self.fused_adam)
        # The schedule counts optimizer steps whatever the number of processes, so it is stepped
        # here rather than prepared (accelerate would step it once per process).
        self.schedule = get_constant_schedule_with_warmup(self.raw_optimizer, num_warmup_steps=config.warmup_steps)
        self.model, self.optimizer = self.accelerator.prepare(student.model, self.raw_optimizer)
        compile_student(self.accelerator.unwrap_model(self.model), config.compile, config.compile_mode)
        student.ema_model.to(self.device)
        trained = list(self.model.parameters())
        shadows = [p.detach().clone() for p in trained] if self.fsdp else list(student.ema_model.parameters())
        self.ema = EMA(trained, shadows, student.config.ema_decay, foreach=foreach_ema)
        self.step = 0
        self.version: int | None = None  # the set version trained on last
        self.train_seconds = 0.0  # host time inside training steps, summed
        # Trackers take one step number at a time, rising: the loop logs a round from its own thread
        # beside a trainer that trains on in another (loop/tracking.py).
        self.log_lock = threading.Lock()
        self.logged_step = 0
        self.batch_log: list[dict] | None = None  # set to a list to record (step, version, rank, ids)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def buckets(self) -> tuple[tuple[int, int], ...]:
        """The shapes batches are drawn in: the student's square canvas (single scale), or PixArt's
        aspect buckets scaled to it."""
        side = self.student.image_size
        if not self.config.multi_aspect:
            return ((side, side),)
        buckets = buckets_at(side)
        cell = self._cell()
        for height, width in buckets:
            if height % cell or width % cell:
                raise ValueError(f"train.multi_aspect: bucket {height}x{width} at a {side}-px base is not a "
                                 f"multiple of {cell} pixels (latent cell x patch size)")
        return buckets

    def _cell(self) -> int:
        """Pixels per side of one transformer token: the VAE's cell times the patch size."""
        space = getattr(self.student, "space", None)
        return getattr(space, "pixels_per_cell", 1) * self.student.model.config.patch_size

    def _check_low_res(self) -> None:
        side, base, cell = self.config.low_res_side, self.student.image_size, self._cell()
        if side is not None and (side % cell or side >= base):
            raise ValueError(f"train.low_res_side: {side} must be below the image size {base} and a multiple of "
                             f"{cell} pixels (latent cell x patch size)")

    def training_size(self, bucket: tuple[int, int], step: int | None = None, cell: int | None = None) -> tuple[int, int]:
        """The size a batch of `bucket` trains at on optimizer step `step` (0 for the first; default:
        the next): scaled by low_res_side / image_size during the first low_res_steps steps, each side
        rounded to whole tokens (`cell` units, default the student's), then the bucket itself."""
        step = self.step if step is None else step
        if self.config.low_res_side is None or step >= self.config.low_res_steps:
            return bucket
        cell = cell or self._cell()
        scale = self.config.low_res_side / self.student.image_size
        return tuple(max(cell, round(side * scale / cell) * cell) for side in bucket)

    # -- training --------------------------------------------------------------------------

    def train(self, images: torch.Tensor, prompts: list[str], steps: int,
              on_step: Callable[[float], None] | None = None) -> float:
        """`steps` optimizer steps on an in-memory set: `images` (N, C, H, W) in model space, one
        per prompt. Returns the mean loss."""
        if len(prompts) != len(images) or not prompts:
            raise ValueError(f"need as many prompts as images, and at least one (got {len(prompts)}, {len(images)})")
        size = tuple(images.shape[-2:])

        def load(index: list[int], bucket: tuple[int, int]) -> torch.Tensor:
            # Sizes here are the model space's (latent cells with a VAE), as the images are.
            if bucket == size:
                return images[index]
            return torch.nn.functional.interpolate(images[index], size=bucket, mode="area")

        data = TrainingSet(None, list(range(len(prompts))), list(prompts), [size] * len(prompts), load)
        return self._train(data, steps, on_step, buckets=(size,), cell=self.student.model.config.patch_size)

    def train_on_samples(self, samples: list, steps: int, *, version: int | None = None,
                         on_step: Callable[[float], None] | None = None,
                         until: Callable[[], bool] | None = None) -> float:
        """`steps` optimizer steps on one version of the store's set (samples with id, prompt and
        image_hash), or fewer: it stops at the first step boundary where `until()` (asked on the
        main process) is true. Under several processes the main process's (version, samples) is
        used by all: they switch versions together, at this step."""
        if self.image_features is None:
            raise ValueError("Trainer was built without an image store; pass images=ImageStore(...)")
        rows = [(s.id, s.prompt, s.image_hash, s.domain) for s in samples]
        version, rows = self._from_main((version, rows))
        if not rows:
            raise ValueError(f"set version {version} is empty: nothing to train on")
        hashes = [h for _, _, h, _ in rows]
        sizes = [self.image_features.image_size(h) for h in hashes]
        weights = None
        if self.config.balance_domains:
            # Each domain gets an equal share of the batches, however many samples it holds.
            per_domain = Counter(domain for *_, domain in rows)
            weights = [1.0 / per_domain[domain] for *_, domain in rows]
        data = TrainingSet(version, [i for i, *_ in rows], [p for _, p, *_ in rows], sizes,
                           lambda index, bucket: self.image_features.get([hashes[i] for i in index], bucket), weights)
        return self._train(data, steps, on_step, buckets=self.buckets(), until=until)

    def _train(self, data: TrainingSet, steps: int, on_step, buckets, until=None, cell: int | None = None) -> float:
        sampler = BucketBatchSampler(data.sizes, buckets, self.config.batch_size,
                                     self.accelerator.num_processes, self.seed, weights=data.weights)
        self.version = data.version
        self.model.train()
        losses = self.loss_reader(self._logging_steps(on_step))
        done = 0
        for _ in range(steps):
            if until is not None and self._from_main(until() if self.is_main else None):
                break
            started = time.perf_counter()
            # This process's slice of the step's global batch, all of one shape.
            bucket, index = sampler.local_batch(self.step, self.rank)
            index = index.tolist()
            bucket = self.training_size(bucket, cell=cell)
            x = data.load(index, bucket)
            prompts = [data.prompts[i] for i in index]
            if self.batch_log is not None:
                self.batch_log.append({"step": self.step, "version": data.version, "rank": self.rank,
                                       "bucket": list(bucket), "ids": [data.ids[i] for i in index]})
            losses.add(self.optimizer_step(x, prompts))  # read to the host every sync_every steps
            self.train_seconds += time.perf_counter() - started
            done += 1
        losses.flush()
        if self.fsdp:
            self.sync_ema()  # the student draws with the EMA: give it the gathered weights
        return losses.total / max(done, 1)

    def loss_reader(self, on_step: Callable[[float], None] | None = None) -> LossReader:
        """How `_train` (and `bench train`) read the step losses: every `sync_every` steps."""
        return LossReader(self.sync_every, on_step)

    def _logging_steps(self, on_step: Callable[[float], None] | None) -> Callable[[float], None] | None:
        """`on_step`, after each read loss has gone to the trackers with its step's number and
        learning rate (losses are read in step order, from the step after the current one)."""
        if not self.accelerator.trackers:
            return on_step
        steps = itertools.count(self.step + 1)

        def log(loss: float) -> None:
            step = next(steps)
            with self.log_lock:
                self.accelerator.log({"train/loss": loss, "train/lr": self.lr_at(step)}, step=step)
                self.logged_step = step
            if on_step is not None:
                on_step(loss)

        return log

    def lr_at(self, step: int) -> float:
        """The learning rate optimizer step `step` (1 for the first) trains with."""
        return self.schedule.base_lrs[0] * self.schedule.lr_lambdas[0](step - 1)

    def optimizer_step(self, x: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """One step on this process's slice of a batch: `x` in model space, all of one shape, one
        prompt each. Forward and backward, gradient clipping, AdamW, the warm-up schedule, the EMA.
        Returns the loss averaged over the processes, a 0-d tensor on the device: nothing in the
        step waits for the device (with `non_blocking`), reading the loss does. `bench train` times
        this very method."""
        # Noise, timesteps and caption dropout: seeded by (seed, step, rank), so a resumed run
        # draws the same ones and each process draws its own.
        generator = torch.Generator().manual_seed(seed_for(self.seed, "noise", self.step, self.rank))
        loss = self.student.loss(self.model, to_device(x, self.device, self.non_blocking), prompts, generator,
                                 self.config.caption_dropout, timestep_power=self.config.timestep_power,
                                 non_blocking=self.non_blocking)
        self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.ema.update(self.step)
        return self.accelerator.reduce(loss.detach(), reduction="mean")

    def time_step(self, repeats: int = 3, at_least: float = 0.0, step: int | None = None) -> float:
        """Seconds of one step's forward and backward at the run's batch size: the median of
        `repeats` or more, as many as `at_least` seconds take, after one warm-up. On placeholder
        data (empty captions, blank images of the first bucket at the size optimizer step `step`
        trains at, default the next); weights, optimizer, EMA and step count are untouched and the
        gradients dropped, so a run that measures this computes what it would have without."""
        height, width = self.training_size(self.buckets()[0], step)
        x = torch.zeros(self.config.batch_size, self.student.channels, *self.student.grid_shape(height, width))
        prompts = [""] * len(x)
        was_training = self.model.training
        self.model.train()
        seconds: list[float] = []
        while len(seconds) < repeats + 1 or (sum(seconds[1:]) < at_least and len(seconds) < 200):
            started = time.perf_counter()
            loss = self.student.loss(self.model, to_device(x, self.device), prompts, torch.Generator().manual_seed(0),
                                     0.0)
            self.accelerator.backward(loss)
            self.optimizer.zero_grad(set_to_none=True)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            seconds.append(time.perf_counter() - started)
        self.model.train(was_training)
        return statistics.median(seconds[1:])

    # -- checkpoints -----------------------------------------------------------------------

    def save(self, folder: Path, state: dict | None = None) -> None:
        """Write a checkpoint to `folder` (see `checkpoint.py`): the trainer as it is now, or a
        `state()` taken earlier. Every process calls it (gathering sharded state is collective);
        the main process writes."""
        if state is None:
            state = self.state()
        if self.is_main:
            folder = Path(folder)
            unwrapped = self.accelerator.unwrap_model(self.model)
            ckpt.write_model_folder(unwrapped, state["model"], folder / "transformer")
            ckpt.write_model_folder(unwrapped, state["ema"], folder / "transformer_ema")
            torch.save({"format": 2, "seed": self.seed, **{key: state[key] for key in
                        ("step", "version", "optimizer", "schedule", "rng")}}, folder / ckpt.STATE)
        self.accelerator.wait_for_everyone()

    def state(self, copied: bool = False) -> dict:
        """What a checkpoint holds: weights, EMA, optimizer, schedule, step, set version, RNG
        (collective). `copied`: cloned, so that training on does not change it (a snapshot that
        another thread writes while this one trains)."""
        model_state, optimizer_state = get_state_dict(
            self.model, self.raw_optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        rng = gather_object([ckpt.rng_state()]) if self.accelerator.num_processes > 1 else [ckpt.rng_state()]
        state = {"model": model_state, "ema": self._ema_state(model_state), "optimizer": optimizer_state,
                 "schedule": self.schedule.state_dict(), "step": self.step, "version": self.version, "rng": rng}
        return copy.deepcopy(state) if copied else state

    def load(self, folder: Path) -> None:
        """Restore weights, EMA, optimizer, schedule, step, set version and RNG from `folder`."""
        folder = Path(folder)
        state = ckpt.read_state(folder)
        model_state = ckpt.read_model_state(folder / "transformer")
        ema_state = ckpt.read_model_state(folder / "transformer_ema")
        options = StateDictOptions(full_state_dict=True)
        if self.fsdp:
            # Shard the EMA exactly as the parameters: load it as the model, copy the shards out.
            set_model_state_dict(self.model, ema_state, options=options)
            with torch.no_grad():
                torch._foreach_copy_(self.ema.shadows, [p.detach() for p in self.model.parameters()])
        else:
            self.student.ema_model.load_state_dict(ema_state)
        set_state_dict(self.model, self.raw_optimizer, model_state_dict=model_state,
                       optim_state_dict=state["optimizer"], options=options)
        self.schedule.load_state_dict(state["schedule"])
        self.step = int(state["step"])
        self.version = state["version"]
        # Global RNG (nothing in a step draws from it, but a student with dropout would): restored
        # when the checkpoint had as many processes, each from its own.
        if len(state["rng"]) == self.accelerator.num_processes:
            ckpt.set_rng_state(state["rng"][self.rank])
        if self.fsdp:
            self.sync_ema()

    def save_checkpoint(self, root: Path, keep: int = 2) -> Path:
        """Save `root/step-N` (temporary folder, then rename) and point `root/latest` at it."""
        root = Path(root)
        name = ckpt.checkpoint_name(self.step)
        tmp = root / f".tmp-{name}"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)  # left by a crash mid-save
        self.accelerator.wait_for_everyone()
        self.save(tmp)
        if self.is_main:
            ckpt.publish(tmp, root, name, keep=keep)
        self.accelerator.wait_for_everyone()
        return root / name

    def resume(self, root: Path) -> bool:
        """Load the checkpoint `root/latest` names, if there is one."""
        folder = ckpt.latest(root)
        if folder is None:
            return False
        self.load(folder)
        return True

    # -- the pieces ------------------------------------------------------------------------

    def sync_ema(self) -> None:
        """Under FSDP, gather the sharded EMA into `student.ema_model` (collective)."""
        if self.fsdp:
            self.student.ema_model.load_state_dict(self._ema_state(None), strict=False)

    def _ema_state(self, model_state: dict | None) -> dict[str, torch.Tensor]:
        if not self.fsdp:
            return self.student.ema_model.state_dict()
        names = [name for name, _ in self.accelerator.unwrap_model(self.model).named_parameters()]
        state = dict(model_state or {})  # buffers come from the model
        state.update({name: s.full_tensor().cpu() for name, s in zip(names, self.ema.shadows)})
        return state

    def _from_main(self, payload):
        """The main process's `payload`, on every process."""
        if self.accelerator.num_processes == 1:
            return payload
        box = [payload if self.is_main else None]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def _image_features(self, images: ImageStore) -> ImageFeatures:
        space = getattr(self.student, "space", None)
        vae = getattr(space, "vae", None)
        if vae is None:
            return ImageFeatures(images, self.features, encode=None)
        return ImageFeatures(images, self.features, encode=self.student.encode_images,
                             identity=module_identity(vae, getattr(space, "scale", None)))
