"""The shared trainer: every trainable component (tokenizers, generators, probes, third-party plugins)
trains through :func:`train`, so they all get the same optimiser, schedule, checkpoints and resume.

A component declares its training as a :class:`TrainingTask` (``training_task()`` on its base class);
the core builds it, trains it (:func:`fit_component`), caches the result and traces one of its steps for
``hitbench validate``'s memory estimate (:mod:`hitvideo_bench.memory`).

Determinism: the batch order is a function of ``(seed, epoch)`` only, the global RNG is seeded
once and saved in every checkpoint, so a run interrupted after any checkpoint and resumed ends with
bit-identical weights on CPU. Checkpoints are written atomically (a new folder renamed over the old).

Distributed: under ``torchrun`` (``torch.distributed`` initialised by :func:`init_distributed`) every
rank takes its share of each global batch. ``train.strategy: ddp`` (the default) keeps the whole model
and optimizer on every rank and averages gradients with
:class:`torch.nn.parallel.DistributedDataParallel`'s reducer semantics (all-reduce of the gradients
after backward); only rank 0 writes checkpoints. ``train.strategy: fsdp`` shards the task's
:meth:`~TrainingTask.shard_units` over the ranks (:mod:`hitvideo_bench.sharding`) and every rank writes
its shards of each checkpoint, which resumes at any number of ranks.

Gradient accumulation: with ``train.micro_batch``, each rank's share of a step's batch is cut into
micro-batches; the task's step runs once per micro-batch, each loss weighted by its micro-batch's share,
and the optimizer updates once, after the last. For a loss that is a mean over the batch's items and a
step without random draws, that is the update of the whole batch (up to float summation order).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors.torch import load_file, save_file

from . import sharding
from .errors import BadInput

CHECKPOINT = "checkpoint"


class TrainConfig(BaseModel):
    """Optimisation settings, embedded as ``train:`` in a trainable component's config."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    steps: int = Field(200, ge=0, description="optimizer steps (per group)")
    batch_size: int = Field(8, ge=1, description="global batch size (split over processes)")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = Field(0, ge=0, description="linear LR warm-up, then cosine decay")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final LR as a share of lr")
    grad_clip: float | None = Field(1.0, gt=0, description="max gradient norm per group; null = off")
    ema: float | None = Field(None, gt=0, lt=1, description="EMA decay of the weights; the EMA weights are kept")
    checkpoint_every: int = Field(100, ge=1)
    eval_every: int = Field(0, ge=0, description="call the curve evaluation every N steps; 0 = off")
    log_every: int = Field(10, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    grad_checkpointing: bool = Field(False, description="recompute activations in backward (less memory)")
    num_workers: int = Field(0, ge=0, description="data-loading worker processes (video decoding off the main one)")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="under torchrun: ddp = every process holds the whole model and optimizer state; fsdp = "
        "each holds 1/N of them (the task's shard_units, FSDP2), with sharded checkpoints")
    micro_batch: int | None = Field(
        None, ge=1, description="clips per forward/backward on each process: its share of batch_size is cut into "
        "micro-batches whose gradients add up to one update (gradient accumulation); null = the whole share at once")
    cpu_offload: bool = Field(False, description="fsdp: keep the shards, their gradients and the optimizer state in "
                              "CPU memory (the optimizer steps on the CPU)")

    @model_validator(mode="after")
    def _fsdp_settings(self) -> TrainConfig:
        if self.cpu_offload and self.strategy != "fsdp":
            raise ValueError(f"cpu_offload: true needs strategy fsdp (got strategy {self.strategy})")
        if self.strategy == "fsdp" and self.precision == "fp16":
            raise ValueError("precision: 'fp16' is not supported with strategy fsdp (allowed: fp32, bf16)")
        return self


class TrainingTask(ABC):
    """How a component trains: what the shared trainer (:func:`train`) and the memory estimate call.

    Implement :meth:`modules` and :meth:`training_step`; :attr:`data` is what the trainer iterates (a map-style
    dataset; the default collate turns video items into ``{"video", "captions", "attrs"}``). A task built with
    ``shapes_only`` (for the memory estimate, on a device with no memory behind it) has no data: it must not load
    files or read data, and :meth:`example_batch` gives the batch to trace instead.
    """

    #: the map-style dataset the trainer iterates (None for a task built with ``shapes_only``)
    data: Any = None

    @abstractmethod
    def modules(self) -> dict[str, torch.nn.Module]:
        """What is checkpointed (and, under ``torchrun``, kept in sync across processes)."""

    def param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """One AdamW optimiser and LR schedule per group (e.g. ``"main"`` and ``"disc"``); default: every parameter
        of :meth:`modules` in ``"main"``."""
        return {"main": [p for module in self.modules().values() for p in module.parameters()]}

    @abstractmethod
    def training_step(self, batch: Any, step: int, trainer: Trainer) -> dict[str, Any]:
        """Compute the losses, call ``trainer.step(loss, group)`` once per group it updates, and return the values
        to log (tensors or floats: the trainer reads them after the step, so a step never waits for the device)."""

    def collate(self, items: list[Any]) -> Any:
        """A batch from dataset items (default: :func:`collate_videos`)."""
        return collate_videos(items)

    def example_batch(self, batch: int, shape: Any) -> Any:
        """A batch of ``batch`` items as :meth:`training_step` gets it (random or zero tensors, made on the memory
        estimate's device): ``shape`` is the clip shape ``(T, H, W)`` for a tokenizer, the per-layer token grids
        ``[(t, h, w), ...]`` for a generator. Not implemented: memory not estimated."""
        raise NotImplementedError

    def trace_step(self, steps: int) -> int:
        """The step the memory estimate traces (the costliest of ``steps``; default the last)."""
        return max(steps - 1, 0)

    def held_modules(self) -> list[torch.nn.Module]:
        """Frozen networks the step keeps in memory beside :meth:`modules` (e.g. a perceptual-loss network)."""
        return []

    def memory_notes(self) -> tuple[int, list[str]]:
        """Bytes held outside every module (e.g. a frozen text encoder kept out of the module tree), and notes for
        the memory estimate."""
        return 0, []

    def summary(self) -> dict[str, Any]:
        """What the training summary adds (e.g. which loss terms were on)."""
        return {}

    def finish(self) -> None:
        """Called once training ends (e.g. to switch activation checkpointing off again)."""

    def shard_units(self) -> list[torch.nn.Module]:
        """The submodules ``train.strategy: fsdp`` shards, each on its own (e.g. transformer blocks, embeddings and
        heads): a unit is gathered when it is called (``unit(...)``) and freed after, so the step must call it as a
        module, never reach into its parameters. Parameters of :meth:`modules` outside every unit stay whole on
        every process (keep them small). Default: each module of :meth:`modules` is one unit (the step calls it).
        :meth:`param_groups` must list the parameters the modules hold when it is called (sharding replaces them)."""
        return list(self.modules().values())


# ------------------------------------------------------------------------------------------ distributed


_local_only = 0  # depth of nested local_training() blocks


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside ``torchrun`` and inside :func:`local_training`."""
    if not _local_only and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@contextlib.contextmanager
def local_training() -> Iterator[None]:
    """Train in this process alone, with no collective calls, even under ``torchrun``: for what one
    rank trains on its own (e.g. an evaluation probe, which only rank 0 needs) while the others wait."""
    global _local_only
    _local_only += 1
    try:
        yield
    finally:
        _local_only -= 1


def is_main_process() -> bool:
    return world()[0] == 0


def init_distributed(device: torch.device | None = None) -> torch.device:
    """Initialise ``torch.distributed`` when launched by ``torchrun`` (nccl on CUDA, gloo on CPU).

    Returns the device this process should use (its local GPU under nccl).
    """
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return device or default_device()
    use_cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every process (a no-op outside ``torchrun``)."""
    if world()[1] > 1:
        torch.distributed.barrier()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Average gradients over processes (one flat all-reduce, as DDP's reducer does)."""
    _, size = world()
    grads = [p.grad for p in params if p.grad is not None]
    if size == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def _broadcast_modules(modules: dict[str, torch.nn.Module]) -> None:
    """Start every rank from rank 0's weights."""
    if world()[1] == 1:
        return
    for module in modules.values():
        for tensor in list(module.parameters()) + list(module.buffers()):
            torch.distributed.broadcast(tensor.data, src=0)


# ------------------------------------------------------------------------------------------ data order


class StepBatches(torch.utils.data.Sampler):
    """Index lists of this rank's share of the global batches ``start .. steps-1``, each share cut into
    micro-batches of ``micro_batch`` items (one list per share without).

    Step ``s`` uses epoch ``s // batches_per_epoch`` of a permutation seeded by ``(seed, epoch)``.
    The order depends on nothing else, so a resumed run sees exactly the batches it would have seen.
    """

    def __init__(self, size: int, batch_size: int, seed: int, start: int, steps: int, micro_batch: int | None = None):
        if size == 0:
            raise BadInput("training data is empty")
        self.size, self.seed, self.start, self.steps = size, seed, start, steps
        self.batch_size = min(batch_size, size)
        self.per_epoch = size // self.batch_size
        self.rank, self.world_size = world()
        share = len(range(self.rank, self.batch_size, self.world_size))
        micro = min(micro_batch or share, share) or 1
        #: share of this rank's batch in each of a step's micro-batches (the weights of their losses)
        self.weights = [(min(i + micro, share) - i) / share for i in range(0, share, micro)] or [1.0]
        self.micro = micro

    def batch(self, step: int) -> list[int]:
        epoch, j = divmod(step, self.per_epoch)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.size, generator=g)
        indices = perm[j * self.batch_size:(j + 1) * self.batch_size].tolist()
        return indices[self.rank::self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            indices = self.batch(step)
            for i in range(len(self.weights)):
                yield indices[i * self.micro:(i + 1) * self.micro]

    def __len__(self) -> int:
        return max(self.steps - self.start, 0) * len(self.weights)


def collate_videos(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Default collate of dataset items ``{video, caption, attrs}``."""
    return {"video": torch.stack([it["video"] for it in items]),
            "captions": [it.get("caption", "") for it in items],
            "attrs": [it.get("attrs", {}) for it in items]}


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


# ------------------------------------------------------------------------------------------ trainer


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_lr_ratio`` at ``steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def autocast_dtype(precision: str, device_type: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on a device type; None: no autocast (fp32, and fp16 off CUDA)."""
    if precision == "fp32" or (precision == "fp16" and device_type != "cuda"):
        return None
    return torch.bfloat16 if precision == "bf16" else torch.float16


class Trainer:
    """Optimisers, schedules, precision, gradient accumulation, sharding and checkpoints for one task (see the module
    docstring)."""

    def __init__(self, task: TrainingTask, cfg: TrainConfig, device: torch.device):
        self.task, self.config, self.device = task, cfg, torch.device(device)
        self.modules = task.modules()
        _broadcast_modules(self.modules)  # every rank starts from rank 0's weights (before sharding them)
        #: the FSDP units (``train.strategy: fsdp``); None under ddp
        self.units: list[torch.nn.Module] | None = None
        self._wrapped: list[torch.nn.Module] = []  # what FSDP wraps (the units and the modules holding them)
        if cfg.strategy == "fsdp":
            self.units = sharding.task_units(task, self.modules)
            if world()[1] > 1:
                self._wrapped = sharding.shard(self.units, self.modules, cfg.precision, cfg.cpu_offload, self.device)
        self.groups = {name: [p for p in params if p.requires_grad] for name, params in task.param_groups().items()}
        self.optimizers = {name: self._optimizer(params) for name, params in self.groups.items()}
        self.schedulers = {name: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
                           for name, opt in self.optimizers.items()}
        fp16 = cfg.precision == "fp16" and self.device.type == "cuda"
        self.scalers = {name: torch.amp.GradScaler(self.device.type, enabled=fp16) for name in self.groups}
        self.ema: dict[str, torch.Tensor] | None = None
        if cfg.ema:
            self.ema = {k: v.detach().clone() for k, v in self._state().items() if v.is_floating_point()}
        self.step_count = 0
        self.grad_norms: dict[str, float] = {}
        self._weight, self._last = 1.0, True  # the current micro-batch's share of this rank's batch; the last?
        self._held: dict[str, list[torch.Tensor | None]] = {}  # gradients of earlier micro-batches, per group

    def _optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """AdamW over ``params``; under fsdp the units' (sharded) parameters and the rest (whole) in two parameter
        groups, each homogeneous for AdamW's batched kernels."""
        cfg = self.config
        if self.units is None:
            groups: Any = params
        else:
            current = {id(p) for module in self.modules.values() for p in module.parameters()}
            stale = [p for p in params if id(p) not in current]
            if stale:
                raise BadInput(f"{type(self.task).__name__}.param_groups() lists {len(stale)} parameter(s) its modules "
                               "no longer hold: under train.strategy fsdp it must list the parameters the modules hold "
                               "when it is called (sharding replaces them)")
            units = sharding.unit_parameters(self.units)
            groups = [{"params": part} for part in ([p for p in params if id(p) in units],
                                                     [p for p in params if id(p) not in units]) if part]
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for the configured precision (a no-op in fp32, and for fp16 on CPU)."""
        dtype = autocast_dtype(self.config.precision, self.device.type)
        return contextlib.nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    def micro_batch(self, weight: float, last: bool) -> None:
        """Set by :func:`train` before each micro-batch: its share of this rank's batch, and whether it is the
        step's last (where :meth:`step` updates)."""
        self._weight, self._last = weight, last

    def step(self, loss: torch.Tensor, group: str = "main") -> None:
        """Backward ``loss`` and update the parameters of ``group`` (clip, optimiser, schedule); on a micro-batch
        before a step's last, keep the gradients for the update instead."""
        if group not in self.optimizers:
            raise KeyError(f"unknown parameter group {group!r}; the task declares {sorted(self.optimizers)}")
        params = self.groups[group]
        self.optimizers[group].zero_grad(set_to_none=True)  # drops what another group's backward left here
        self.scalers[group].scale(loss if self._weight == 1 else loss * self._weight).backward()
        held = self._held.pop(group, None)
        if held is not None:
            _add_grads(params, held)
        if not self._last:
            self._held[group] = [p.grad for p in params]
            for p in params:
                p.grad = None
            return
        self._update(group)

    def finish_step(self) -> None:
        """After a step's last micro-batch: update a group whose step the task took on earlier micro-batches only."""
        for group in list(self._held):
            _add_grads(self.groups[group], self._held.pop(group))
            self._update(group)

    def _update(self, group: str) -> None:
        """Average the gradients over processes, clip, step the optimiser and the schedule of ``group``."""
        opt, scaler, params = self.optimizers[group], self.scalers[group], self.groups[group]
        if self.units is None:
            _all_reduce_grads(params)
        else:  # the units' gradients were reduce-scattered in backward
            _all_reduce_grads([p for p in params if not sharding.is_sharded(p)])
        if self.config.grad_clip:
            scaler.unscale_(opt)
            self.grad_norms[group] = (
                float(torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)) if self.units is None
                else sharding.clip_grad_norm(params, self.config.grad_clip, self.device))
        scaler.step(opt)
        scaler.update()
        self.schedulers[group].step()
        for p in params:  # no stale gradient of this group leaks into another group's backward
            p.grad = None

    def _state(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{k}": v for name, module in self.modules.items() for k, v in module.state_dict().items()}

    def update_ema(self) -> None:
        if self.ema is None:
            return
        decay = self.config.ema
        with torch.no_grad():
            for k, v in self._state().items():
                if k in self.ema:
                    self.ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)

    def apply_ema(self) -> None:
        """Copy the EMA weights into the modules (done once training ends)."""
        if self.ema is None:
            return
        for name, module in self.modules.items():
            prefix = f"{name}."
            state = module.state_dict()
            state.update({k[len(prefix):]: v for k, v in self.ema.items() if k.startswith(prefix)})
            module.load_state_dict(state)

    def release(self) -> None:
        """Once training ends: free the optimiser state and, under fsdp, gather the units back into whole weights
        on every process and take FSDP off them (a collective call)."""
        if self.units is None:
            return
        self.optimizers.clear()
        self.schedulers.clear()
        if self._wrapped:
            sharding.unshard_in_place(self._wrapped, self.modules, self.device)
            self._wrapped = []

    # -------------------------------------------------------------------------------- checkpoints

    def _trainer_state(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {"step": self.step_count,
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "ema": self.ema is not None,
                "extra": extra}

    def save(self, folder: Path, extra: dict[str, Any]) -> None:
        """Write weights, optimiser state and trainer state to ``folder`` atomically: under ddp rank 0 writes them
        (safetensors weights, ``state.pt``); under fsdp every rank writes its shards (torch.distributed.checkpoint)
        and rank 0 the trainer state. Either way into a temporary folder renamed over ``folder`` once complete."""
        main = is_main_process()
        if self.units is None and not main:
            return
        folder = Path(folder)
        tmp = folder.with_name(f".{folder.name}.tmp")
        if main:
            folder.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        state = self._trainer_state(extra)
        if self.units is None:
            weights = {k: v.detach().contiguous().cpu().clone() for k, v in self._state().items()}
            save_file(weights, str(tmp / "weights.safetensors"))
            if self.ema is not None:
                save_file({k: v.cpu().contiguous() for k, v in self.ema.items()}, str(tmp / "ema.safetensors"))
            state["optimizers"] = {k: o.state_dict() for k, o in self.optimizers.items()}
        else:
            state["param_groups"] = sharding.hyperparameters(self.optimizers)
            barrier()  # rank 0 has made the temporary folder
            sharding.save_sharded(tmp, self.modules, self.optimizers, self.ema)
        if main:
            torch.save(state, tmp / sharding.TRAINER_STATE)
            _replace_folder(tmp, folder)
        if self.units is not None:
            barrier()  # every rank sees the new checkpoint before it goes on

    def load(self, folder: Path) -> dict[str, Any]:
        """Restore a checkpoint written by :meth:`save` (under fsdp at any number of processes); returns its
        ``extra`` dict."""
        folder = Path(folder)
        found, strategy = sharding.checkpoint_format(folder), self.config.strategy
        if found != strategy:
            raise BadInput(f"{folder}: a checkpoint of train.strategy {found}, but this run has train.strategy "
                           f"{strategy}: resume with strategy {found}, or delete the folder to start over")
        state = torch.load(folder / sharding.TRAINER_STATE, weights_only=True, map_location="cpu")
        if self.units is None:
            weights = load_file(str(folder / "weights.safetensors"))
            for name, module in self.modules.items():
                prefix = f"{name}."
                module.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
            if self.ema is not None and (folder / "ema.safetensors").exists():
                self.ema = {k: v.to(self.device) for k, v in load_file(str(folder / "ema.safetensors")).items()}
            for k, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][k])
        else:
            sharding.load_sharded(folder, self.modules, self.optimizers, self.ema if state["ema"] else None,
                                  state["param_groups"])
        for k, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][k])
        for k, scaler in self.scalers.items():
            scaler.load_state_dict(state["scalers"][k])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.step_count = int(state["step"])
        return state["extra"]


def _add_grads(params: list[torch.nn.Parameter], held: list[torch.Tensor | None]) -> None:
    """Add gradients kept from earlier micro-batches to the parameters' own."""
    for p, g in zip(params, held):
        if g is not None:
            p.grad = g if p.grad is None else p.grad.add_(g)


def _replace_folder(tmp: Path, folder: Path) -> None:
    """Rename the complete ``tmp`` over ``folder``, keeping the old one aside until then (see :func:`_recover`)."""
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _recover(folder: Path) -> None:
    """Finish an interrupted checkpoint swap (crash between the two renames)."""
    old = folder.with_name(f".{folder.name}.old")
    if not folder.exists() and old.exists():
        os.replace(old, folder)


def train(task: TrainingTask, data: torch.utils.data.Dataset, cfg: TrainConfig, *, workdir: Path,
          device: torch.device | str, seed: int, progress: bool = True,
          eval_fn: Callable[[int], dict[str, float]] | None = None) -> dict[str, Any]:
    """Train ``task`` for ``cfg.steps`` steps on ``data``; resume from ``workdir`` if it holds a checkpoint.

    Returns ``{"steps", "final": {loss: value}, "losses": [...], "curve": [...], "seconds", "precision",
    "resumed_from_step"}`` (None when it started from scratch); a resume is also said on stderr, which is the
    run's log under ``--jobs``.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    workdir = Path(workdir)
    ckpt = workdir / CHECKPOINT
    if is_main_process():
        _recover(ckpt)
    barrier()  # every rank sees the recovered folder
    torch.manual_seed(seed)
    trainer = Trainer(task, cfg, device)
    extra: dict[str, Any] = {"losses": [], "curve": [], "seconds": 0.0}
    resumed = None
    if sharding.checkpoint_format(ckpt) is not None:
        extra = trainer.load(ckpt)
        resumed = trainer.step_count
    start = trainer.step_count
    if resumed is not None and is_main_process():
        print(f"hitbench: resuming training from the checkpoint at step {start} of {cfg.steps} ({ckpt})",
              file=sys.stderr, flush=True)
    sampler = StepBatches(len(data), cfg.batch_size, seed, start, cfg.steps, cfg.micro_batch)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, num_workers=cfg.num_workers,
                                         collate_fn=getattr(task, "collate", collate_videos),
                                         generator=torch.Generator().manual_seed(seed))  # not the global RNG
    bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step",
               disable=not progress or not is_main_process(), leave=False)
    window: dict[str, list[float]] = {}
    began = time.perf_counter()
    for module in trainer.modules.values():
        module.train()
    batches = iter(loader)
    for step in range(start, cfg.steps):
        logs: dict[str, float] = {}
        with torch.enable_grad():  # callers may sit in a no_grad block (e.g. a metric trained lazily in evaluation)
            for i, weight in enumerate(sampler.weights):  # the micro-batches of this rank's share
                trainer.micro_batch(weight, last=i == len(sampler.weights) - 1)
                for k, v in _training_step(task, to_device(next(batches), device), step, trainer).items():
                    logs[k] = logs.get(k, 0.0) + weight * float(v)
            trainer.finish_step()
        trainer.step_count = step + 1
        trainer.update_ema()
        for k, v in logs.items():
            window.setdefault(k, []).append(v)
        done = trainer.step_count
        if done % cfg.log_every == 0 or done == cfg.steps:
            means = {k: sum(v) / len(v) for k, v in window.items()}
            extra["losses"].append({"step": done, **means})
            bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()}, refresh=False)
            window = {}
        if eval_fn is not None and cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
            extra["curve"].append({"step": done, **eval_fn(done)})
        bar.update(1)
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            extra["seconds"] += time.perf_counter() - began
            began = time.perf_counter()
            trainer.save(ckpt, extra)
    bar.close()
    trainer.apply_ema()
    trainer.release()
    for module in trainer.modules.values():
        module.eval()
    return {"steps": cfg.steps, "final": extra["losses"][-1] if extra["losses"] else {},
            "losses": extra["losses"], "curve": extra["curve"], "seconds": round(extra["seconds"], 2),
            "precision": cfg.precision, "ema": cfg.ema, "processes": world()[1], "strategy": cfg.strategy,
            "micro_batch": cfg.micro_batch, "resumed_from_step": resumed}


def _training_step(task: TrainingTask, batch: Any, step: int, trainer: Trainer) -> dict[str, Any]:
    """``task.training_step``; under fsdp a parameter used outside its unit's call (a DTensor mixed with plain
    tensors) is reported as the task's shard units' fault, with what to change."""
    try:
        return task.training_step(batch, step, trainer)
    except RuntimeError as exc:
        if trainer.units is None or "DTensor" not in str(exc):
            raise
        raise BadInput(f"train.strategy fsdp: {type(task).__name__}'s step used a sharded parameter outside a call "
                       "of its unit: its shard_units() must be modules the step calls (unit(...)), and a parameter "
                       f"used directly (e.g. module.weight) must lie outside every unit ({exc})") from exc


def fit_component(component: Any, data: Any, *, workdir: Path, device: torch.device | str, seed: int,
                  progress: bool = True, eval_fn: Callable[[int], dict[str, float]] | None = None) -> dict[str, Any]:
    """Train a tokenizer or generator through the task its ``training_task(data, device)`` returns, with its config's
    ``train`` settings; resumable from ``workdir``. Returns :func:`train`'s summary plus the task's own."""
    device = torch.device(device)
    task = component.training_task(data, device)
    if task is None:
        raise BadInput(f"{type(component).__name__} is not trainable (its training_task() returns None)")
    summary = train(task, task.data, component.config.train, workdir=workdir, device=device, seed=seed,
                    progress=progress, eval_fn=eval_fn)
    task.finish()
    return {**summary, **task.summary()}
