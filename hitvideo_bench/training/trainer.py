"""The shared trainer: every trainable component (tokenizers, generators, probes, third-party plugins) trains
through :func:`train`, so they all get the same optimiser, schedule, checkpoints and resume (see the package
docstring of :mod:`hitvideo_bench.training` for determinism, distribution and gradient accumulation).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .. import allocator, sharding
from ..errors import BadInput, ContractError
from .batches import StepBatches, to_device
from .contract import Execution, TrainConfig, TrainingTask, collate_videos, train_config
from ..distributed import all_reduce_grads, barrier, broadcast_modules, is_main_process, world

CHECKPOINT = "checkpoint"


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

    def __init__(self, task: TrainingTask, cfg: TrainConfig, device: torch.device, execution: Execution | None = None):
        self.task, self.config, self.device = task, cfg, torch.device(device)
        self.execution = execution = execution or Execution()
        execution.check(cfg, type(task).__name__)
        self.modules = task.modules()
        broadcast_modules(self.modules)  # every rank starts from rank 0's weights (before sharding them)
        #: the FSDP units (``run.strategy: fsdp``); None under ddp
        self.units: list[torch.nn.Module] | None = None
        self._wrapped: list[torch.nn.Module] = []  # what FSDP wraps (the units and the modules holding them)
        if execution.strategy == "fsdp":
            self.units = sharding.task_units(task, self.modules)
            if world()[1] > 1:
                self._wrapped = sharding.shard(self.units, self.modules, cfg.precision, execution.cpu_offload,
                                               self.device)
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
                               "no longer hold: under run.strategy fsdp it must list the parameters the modules hold "
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
            all_reduce_grads(params)
        else:  # the units' gradients were reduce-scattered in backward
            all_reduce_grads([p for p in params if not sharding.is_sharded(p)])
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
        found, strategy = sharding.checkpoint_format(folder), self.execution.strategy
        if found != strategy:
            raise BadInput(f"{folder}: a checkpoint of run.strategy {found}, but this run has run.strategy "
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
          eval_fn: Callable[[int], dict[str, float]] | None = None,
          execution: Execution | None = None) -> dict[str, Any]:
    """Train ``task`` for ``cfg.steps`` steps on ``data``, executed as ``execution`` says (default: one process, the
    task's own checkpoint and log cadence); resume from ``workdir`` if it holds a checkpoint.

    Returns ``{"steps", "final": {loss: value}, "losses": [...], "curve": [...], "seconds", "cpu_seconds",
    "precision", "resumed_from_step"}`` (None when it started from scratch): ``seconds`` is the training's wall
    time, ``cpu_seconds`` this process's CPU time over it (all its threads; the figure a CPU budget is stated in),
    both summed over resumed parts. A resume is also said on stderr, which is the run's log under ``--jobs``.
    """
    from tqdm.auto import tqdm

    allocator.apply()  # each step reuses the last one's freed memory (see hitvideo_bench/allocator.py)
    device = torch.device(device)
    workdir = Path(workdir)
    ckpt = workdir / CHECKPOINT
    if is_main_process():
        _recover(ckpt)
    barrier()  # every rank sees the recovered folder
    torch.manual_seed(seed)
    execution = execution or Execution()
    trainer = Trainer(task, cfg, device, execution)
    checkpoint_every = execution.checkpoint_every or task.checkpoint_every
    log_every = execution.log_every or task.log_every
    extra: dict[str, Any] = {"losses": [], "curve": [], "seconds": 0.0, "cpu_seconds": 0.0}
    resumed = None
    if sharding.checkpoint_format(ckpt) is not None:
        extra = {"cpu_seconds": 0.0, **trainer.load(ckpt)}  # checkpoints before cpu_seconds lack it
        resumed = trainer.step_count
    start = trainer.step_count
    if resumed is not None and is_main_process():
        print(f"hitbench: resuming training from the checkpoint at step {start} of {cfg.steps} ({ckpt})",
              file=sys.stderr, flush=True)
    sampler = StepBatches(len(data), cfg.batch_size, seed, start, cfg.steps, execution.micro_batch)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, num_workers=execution.num_workers,
                                         collate_fn=getattr(task, "collate", collate_videos),
                                         generator=torch.Generator().manual_seed(seed))  # not the global RNG
    bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step",
               disable=not progress or not is_main_process(), leave=False)
    window: dict[str, list[float]] = {}
    checkpointing = execution.grad_checkpointing and _checkpoint_activations(task)
    began, began_cpu = time.perf_counter(), time.process_time()
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
        if done % log_every == 0 or done == cfg.steps:
            means = {k: sum(v) / len(v) for k, v in window.items()}
            extra["losses"].append({"step": done, **means})
            bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()}, refresh=False)
            window = {}
        if eval_fn is not None and cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
            extra["curve"].append({"step": done, **eval_fn(done)})
        bar.update(1)
        if done % checkpoint_every == 0 or done == cfg.steps:
            extra["seconds"] += time.perf_counter() - began
            extra["cpu_seconds"] += time.process_time() - began_cpu
            began, began_cpu = time.perf_counter(), time.process_time()
            trainer.save(ckpt, extra)
    bar.close()
    trainer.apply_ema()
    trainer.release()
    if checkpointing:
        task.checkpoint_activations(False)
    for module in trainer.modules.values():
        module.eval()
    return {"steps": cfg.steps, "final": extra["losses"][-1] if extra["losses"] else {},
            "losses": extra["losses"], "curve": extra["curve"], "seconds": round(extra["seconds"], 2),
            "cpu_seconds": round(extra["cpu_seconds"], 2), "precision": cfg.precision, "ema": cfg.ema,
            "processes": world()[1], "strategy": execution.strategy, "micro_batch": execution.micro_batch,
            "grad_checkpointing": checkpointing, "resumed_from_step": resumed}


def _training_step(task: TrainingTask, batch: Any, step: int, trainer: Trainer) -> dict[str, Any]:
    """``task.training_step``; under fsdp a parameter used outside its unit's call (a DTensor mixed with plain
    tensors) is reported as the task's shard units' fault, with what to change."""
    try:
        return task.training_step(batch, step, trainer)
    except RuntimeError as exc:
        if trainer.units is None or "DTensor" not in str(exc):
            raise
        raise BadInput(f"run.strategy fsdp: {type(task).__name__}'s step used a sharded parameter outside a call "
                       "of its unit: its shard_units() must be modules the step calls (unit(...)), and a parameter "
                       f"used directly (e.g. module.weight) must lie outside every unit ({exc})") from exc


def _checkpoint_activations(task: TrainingTask) -> bool:
    """Switch activation checkpointing on (``run.grad_checkpointing``); a task without the ability trains without it,
    said on stderr (the setting applies to every training of a run, and some tasks have little to recompute)."""
    if not task.can_checkpoint_activations:
        if is_main_process():
            print(f"hitbench: {type(task).__name__} does not implement checkpoint_activations(): it trains without "
                  "activation checkpointing (run.grad_checkpointing)", file=sys.stderr, flush=True)
        return False
    task.checkpoint_activations(True)
    return True


def training_task(component: Any, data: Any, device: torch.device) -> TrainingTask:
    """``component.training_task(data, device)``, checked (:func:`checked_task`)."""
    task = component.training_task(data, device)
    if task is None:
        raise ContractError(f"{type(component).__name__} is not trainable (its training_task() returns None)")
    return checked_task(component, task)


def checked_task(component: Any, task: Any) -> TrainingTask:
    """``task``, which ``component.training_task()`` returned; one that is not a :class:`TrainingTask` is a contract
    error naming the component."""
    name = type(component).__name__
    if not isinstance(task, TrainingTask):
        raise ContractError(f"{name}.training_task() returned a {type(task).__name__}, not a TrainingTask: subclass "
                            "hitvideo_bench.api.TrainingTask (docs/plugins.md)")
    return task


def fit_component(component: Any, data: Any, *, workdir: Path, device: torch.device | str, seed: int,
                  progress: bool = True, eval_fn: Callable[[int], dict[str, float]] | None = None,
                  execution: Execution | None = None) -> dict[str, Any]:
    """Train a tokenizer or generator through the task its ``training_task(data, device)`` returns, with the
    :class:`TrainConfig` its class declares (``train_settings``), executed as ``execution`` says; resumable from
    ``workdir``. Returns :func:`train`'s summary plus the task's own."""
    device = torch.device(device)
    task = training_task(component, data, device)
    summary = train(task, task.data, train_config(type(component), component.config), workdir=workdir, device=device,
                    seed=seed, progress=progress, eval_fn=eval_fn, execution=execution)
    task.finish()
    return {**summary, **task.summary()}
