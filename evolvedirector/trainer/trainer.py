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
nothing, every step), so the GPU runs ahead of Python (timing.py).

Experiment trackers (`log_with`, started by the caller with `accelerator.init_trackers`): each
step's loss and learning rate are logged when the loss is read, at the optimizer step's number
(1 for the first step), so a tracker costs no host sync of its own; the main process logs.

Determinism, which makes resumes exact: every random draw of a step (which samples, which
noise, which timesteps, which captions are dropped) comes from generators seeded by (seed,
step[, rank]) alone, so the step is the whole data position. The set is agreed at each call of
`train_on_samples`: the main process's version is broadcast, so every process switches to the
same version at the same step. A caller that follows a live set (loop/background.py, `launch
--follow`) passes `until`: asked before each step on the main process, its answer broadcast, so
every process leaves at the same step boundary, to come back with the newer version.
Checkpoints, which only the main process writes, are checkpoint.py's.

`train_seconds` sums the host time spent inside training steps (what `bench loop` calls busy).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedType
from accelerate.utils import broadcast_object_list
from diffusers.optimization import get_constant_schedule_with_warmup

from evolvedirector.store.images import ImageStore
from evolvedirector.student.buckets import buckets_at
from evolvedirector.student.student import to_device
from evolvedirector.trainer import checkpoint as ckpt
from evolvedirector.trainer import timing
from evolvedirector.trainer.features import CachedTextEncoder, FeatureCache, ImageFeatures
from evolvedirector.seeds import seed_for
from evolvedirector.trainer.sampling import BucketBatchSampler
from evolvedirector.trainer.timing import SYNC_EVERY_CUDA, LossReader


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


def build_optimizer(model: torch.nn.Module, config, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW; `fused`: one fused kernel per step for all parameters (the parameters must be on a
    device with fused kernels by the first step). Not fused, torch picks as it always has: foreach
    on CUDA, one tensor at a time on a CPU."""
    extra = {"fused": True} if fused else {}
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, eps=config.adam_eps,
                             **extra)


def build_accelerator(config, device: str, log_with: Sequence[str] = (), logging_dir: Path | None = None
                      ) -> Accelerator:
    """The run's devices and processes: the CPU or the GPUs (`device`), mixed precision from the
    config, and the distributed strategy from `accelerate launch` (FSDP only as version 2)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda was asked for, but torch sees no CUDA GPU (torch.cuda.is_available() is "
                         "False); set device: auto or cpu")
    accelerator = Accelerator(
        cpu=device == "cpu" or (device == "auto" and not torch.cuda.is_available()),
        mixed_precision=config.mixed_precision,
        log_with=list(log_with) or None,
        project_dir=logging_dir,
    )
    if accelerator.distributed_type == DistributedType.FSDP:
        if not accelerator.is_fsdp2:
            raise ValueError("FSDP needs fsdp_version: 2 in the accelerate config (the trainer's EMA and "
                             "checkpoints read parameters as DTensors)")
        # `accelerate launch --use_fsdp` turns cpu_ram_efficient_loading on by default: a path for
        # Transformers models that re-broadcasts rank 0's weights by parameter name and fails on a
        # diffusers model's root-level parameter (PixArt's scale_shift_table). Nothing is gained
        # here: every process builds the same student from the same seed or checkpoint.
        accelerator.state.fsdp_plugin.cpu_ram_efficient_loading = False
    return accelerator


def from_main(accelerator: Accelerator, payload):
    """The main process's `payload`, on every process (collective)."""
    if accelerator.num_processes == 1:
        return payload
    box = [payload if accelerator.is_main_process else None]
    broadcast_object_list(box, from_process=0)
    return box[0]


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
        self.student = student
        self.config = config
        self.seed = seed
        self.accelerator = build_accelerator(config, device, log_with, logging_dir)
        self.fsdp = self.accelerator.distributed_type == DistributedType.FSDP
        # Features: text states (and VAE latents) cached on disk beside the run; pixels in memory.
        self.features = FeatureCache(cache_dir)
        if not isinstance(student.text, CachedTextEncoder):
            student.text = CachedTextEncoder(student.text, self.features)
        self.image_store = images
        self.image_features = None if images is None else ImageFeatures.for_student(images, self.features, student)
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
        version, rows = from_main(self.accelerator, (version, rows))
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
            if until is not None and from_main(self.accelerator, until() if self.is_main else None):
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

    # -- timing.py and checkpoint.py, as the loop and the benches call them ----------------

    def time_step(self, repeats: int = 3, at_least: float = 0.0, step: int | None = None) -> float:
        return timing.time_step(self, repeats, at_least, step)

    def state(self, copied: bool = False) -> dict:
        return ckpt.capture(self, copied)

    def save(self, folder: Path, state: dict | None = None) -> None:
        ckpt.write(self, folder, state)

    def load(self, folder: Path) -> None:
        ckpt.load(self, folder)

    # -- the pieces ------------------------------------------------------------------------

    def sync_ema(self) -> None:
        """Under FSDP, gather the sharded EMA into `student.ema_model` (collective)."""
        if self.fsdp:
            self.student.ema_model.load_state_dict(self.ema_state(), strict=False)

    def ema_state(self, model_state: dict | None = None) -> dict[str, torch.Tensor]:
        """The EMA weights as one full state dict (gathered from the shards under FSDP, with the
        buffers of `model_state`)."""
        if not self.fsdp:
            return self.student.ema_model.state_dict()
        names = [name for name, _ in self.accelerator.unwrap_model(self.model).named_parameters()]
        state = dict(model_state or {})  # buffers come from the model
        state.update({name: s.full_tensor().cpu() for name, s in zip(names, self.ema.shadows)})
        return state
