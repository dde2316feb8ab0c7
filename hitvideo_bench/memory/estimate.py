"""A component's training memory per GPU: its task traced once, estimated at any batch, strategy and number of
processes (see the package docstring)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from .. import sharding
from ..components import Generator, Tokenizer
from ..contract import overrides
from ..errors import BadInput, ContractError, HitbenchError
from ..manager import get_catalog
from ..training import Execution, TrainingTask, train_config
from ..training.trainer import checked_task
from .fake import FakeDevice, NotEstimated, nbytes_of

GIB = 2 ** 30
#: copies of a trained fp32 parameter: weight, gradient, AdamW exp_avg and exp_avg_sq
TRAINED_COPIES = 4




def format_count(n: int) -> str:
    """A parameter count with three significant digits: ``4.70 k``, ``12.3 M``, ``5.22 B``."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return str(n)


def gib(nbytes: int) -> str:
    value = nbytes / GIB
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


@dataclass(frozen=True)
class MemoryEstimate:
    """Training memory of one GPU: batch-independent state (and, under fsdp, the gathered units) plus the
    activations of one step (of one micro-batch with ``run.micro_batch``)."""

    batch: int  # per-GPU share of the global batch (rank 0's)
    global_batch: int  # train.batch_size, split over world_size processes
    world_size: int
    precision: str
    grad_checkpointing: bool
    trainable_params: int
    state_bytes: int
    activation_bytes: int
    notes: tuple[str, ...] = ()
    strategy: str = "ddp"
    micro_batch: int | None = None  # clips per forward/backward when accumulating (None: the whole share)
    gathered_bytes: int = 0  # fsdp: units gathered at once
    largest_saved_bytes: int = 0  # the largest tensor saved for backward

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.gathered_bytes + self.activation_bytes

    @property
    def peak_bytes(self) -> int:
        """The estimate plus the largest tensor saved for backward twice (its gradient and its input's, together
        while backward runs through it): what :func:`fit_advice` compares with a GPU."""
        return self.total_bytes + 2 * self.largest_saved_bytes

    def describe(self) -> str:
        """``training memory per GPU at batch 8 (bf16, grad checkpointing): ~X GiB (state Y + activations Z)``;
        with a micro-batch ``at batch 32 of 256 over 8 GPUs in micro-batches of 4 (fsdp, bf16, ...)`` and, under
        fsdp, ``(state Y + gathered G + activations Z)``."""
        split = f" of {self.global_batch} over {self.world_size} GPUs" if self.world_size > 1 else ""
        if self.micro_batch is not None:
            split += f" in micro-batches of {self.micro_batch}"
        mode = ("fsdp, " if self.strategy == "fsdp" else "") + self.precision + (
            ", grad checkpointing" if self.grad_checkpointing else "")
        gathered = f" + gathered {gib(self.gathered_bytes)}" if self.strategy == "fsdp" else ""
        return (f"training memory per GPU at batch {self.batch}{split} ({mode}): ~{gib(self.total_bytes)} GiB "
                f"(state {gib(self.state_bytes)}{gathered} + activations {gib(self.activation_bytes)})")


def per_gpu_batch(batch_size: int, world_size: int) -> int:
    """The largest share of a global batch that one of ``world_size`` processes takes (rank 0's)."""
    if world_size < 1:
        raise BadInput(f"the number of processes must be at least 1, got {world_size}")
    if batch_size < world_size:
        raise NotEstimated(f"train.batch_size {batch_size} cannot be split over {world_size} processes")
    return math.ceil(batch_size / world_size)


# ------------------------------------------------------------------------------------------ components


class _TraceDone(Exception):
    """Raised by :class:`_TracingTrainer` to end a traced step at its first update."""


class _TracingTrainer:
    """Stands in for the trainer in a traced step: keeps the loss of the first ``step()`` and ends the step there
    (what follows backward, e.g. a discriminator's own update, is not traced). Autocast is the tracer's."""

    def __init__(self) -> None:
        self.loss: torch.Tensor | None = None
        self.grad_norms: dict[str, float] = {}

    def autocast(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def step(self, loss: torch.Tensor, group: str = "main") -> None:
        self.loss = loss
        raise _TraceDone


def first_loss(task: Any, batch: Any, step: int) -> torch.Tensor:
    """Run ``task.training_step(batch, step, ...)`` up to its first ``trainer.step(loss)`` and return that loss (the
    forward the memory estimate traces)."""
    trainer = _TracingTrainer()
    try:
        task.training_step(batch, step, trainer)
    except _TraceDone:
        pass
    if trainer.loss is None:
        raise NotEstimated("the training step never called trainer.step(loss, group)")
    return trainer.loss


class TrainingTrace:
    """A component's training task built once on a fake device (the class ``cls`` from ``config`` and
    ``dependencies``; the task its ``training_task(None, device, shapes_only=True)`` returns): its memory per GPU
    under any strategy, number of GPUs and micro-batch, each micro-batch's step traced once on the task's
    ``example_batch(batch, shape)`` (``shape``: the clip shape for a tokenizer, the token grids for a generator)."""

    def __init__(self, cls: type, config: Any, shape: Any, *, device: str | torch.device = "cuda",
                 execution: Execution | None = None, **dependencies: Any):
        try:
            train = train_config(cls, config)
        except ContractError:
            why = "trains through its own fit(), not the shared trainer" if _fits_alone(cls) else \
                "declares no train settings (train_settings)"
            raise NotEstimated(f"{cls.__name__} {why}") from None
        self.name, self.train, self.shape = cls.__name__, train, shape
        self.execution = execution = execution or Execution()
        execution.check(train, cls.__name__)
        self.fake = FakeDevice(device)
        with self.fake.build():
            if issubclass(cls, Tokenizer) and cls.wraps and "base" not in dependencies:
                base = get_catalog().wrapped_base(cls, config)
                if base is not None:
                    dependencies["base"] = base
            component = cls(config, **dependencies)
            task = _shapes_only_task(component, self.fake.device)
            unable = execution.grad_checkpointing and not task.can_checkpoint_activations
            if unable:  # the run trains it without (as the trainer does)
                self.execution = execution.model_copy(update={"grad_checkpointing": False})
            elif execution.grad_checkpointing:
                task.checkpoint_activations(True)
        self.task, self.index = task, task.trace_step(train.steps)
        self._example(1)  # a task may set itself up for its shapes there (before memory_notes)
        groups = task.param_groups()
        self.trained = {id(p): p for params in groups.values() for p in params if p.requires_grad}
        self.modules = list(task.modules().values())
        self.held = list(task.held_modules())
        try:
            units = sharding.task_units(task, task.modules())
        except HitbenchError as exc:
            raise NotEstimated(f"its shard_units() cannot be used: {exc}") from None
        # each parameter in its innermost unit (units come inner first), as FSDP gathers it
        self.unit_of: dict[int, int] = {}
        for i, unit in enumerate(units):
            for p in unit.parameters():
                self.unit_of.setdefault(id(p), i)
        self.units = units
        self.extra, task_notes = task.memory_notes()
        self.notes: list[str] = []
        if unable:
            self.notes.append("without activation checkpointing: its task does not implement checkpoint_activations()")
        if len(self.modules) > 1:
            self.notes.append("trained beside it: " + ", ".join(
                f"{name} ({format_count(sum(p.numel() for p in m.parameters()))} parameters)"
                for name, m in list(task.modules().items())[1:]))
        for module in self.held:
            self.notes.append(f"{type(module).__name__} ({format_count(sum(p.numel() for p in module.parameters()))} "
                              f"parameters) held frozen")
        self.notes += task_notes
        self._saved: dict[tuple[int, bool], tuple[int, int]] = {}

    def activations(self, batch: int, sharded: bool) -> tuple[int, int]:
        """Bytes one step on ``batch`` clips saves for backward, and its largest saved tensor; ``sharded``: with the
        units' parameters in FSDP's compute dtype."""
        key = (batch, sharded and self.train.precision == "bf16")
        if key not in self._saved:
            example = self._example(batch)

            def step() -> torch.Tensor:
                with torch.random.fork_rng(devices=[]):  # a step's random choices (crops, layers) alike in every trace
                    torch.manual_seed(0)
                    return first_loss(self.task, example, self.index)

            with _parameters_in(self.units, torch.bfloat16 if key[1] else None, self.fake.mode):
                self._saved[key] = self.fake.saved_bytes(step, self.train.precision,
                                                         exclude=(*self.modules, *self.held))
        return self._saved[key]

    def _example(self, batch: int) -> Any:
        with self.fake.build():
            if not overrides(self.task, TrainingTask, "example_batch"):
                raise NotEstimated(f"{self.name}'s training task gives no example_batch()")
            try:
                return self.task.example_batch(batch, self.shape)
            except (TypeError, AttributeError) as exc:
                raise ContractError(f"{self.name}'s shapes_only training task failed in example_batch() "
                                    f"({type(exc).__name__}: {exc}): it must build the batch from the shape it is "
                                    "given, without data (docs/plugins.md)") from exc

    def estimate(self, *, world_size: int = 1, strategy: str | None = None,
                 micro_batch: int | None = None, cpu_offload: bool | None = None) -> MemoryEstimate:
        """Memory per GPU with the global batch split over ``world_size`` processes; ``strategy``, ``micro_batch``
        and ``cpu_offload`` default to the run's execution settings."""
        train, execution = self.train, self.execution
        strategy = strategy or execution.strategy
        micro_batch = execution.micro_batch if micro_batch is None else micro_batch
        offload = execution.cpu_offload if cpu_offload is None else cpu_offload
        batch = per_gpu_batch(train.batch_size, world_size)
        micro = min(micro_batch, batch) if micro_batch else None
        sharded = strategy == "fsdp" and world_size > 1  # one process: nothing to shard over
        state = self._state(world_size if sharded else 1, offload and sharded)
        gathered = self._gathered() if sharded else 0
        activations, largest = self.activations(micro or batch, sharded)
        notes = list(self.notes)
        if offload and sharded:
            cpu = self._state(world_size, False) - state
            notes.append(f"sharded state in CPU memory (run.cpu_offload): {gib(cpu)} GiB per process")
        return MemoryEstimate(
            batch=batch, global_batch=train.batch_size, world_size=world_size, precision=train.precision,
            grad_checkpointing=execution.grad_checkpointing,
            trainable_params=sum(p.numel() for p in self.trained.values()),
            state_bytes=state, activation_bytes=activations, notes=tuple(notes), strategy=strategy,
            micro_batch=micro, gathered_bytes=gathered, largest_saved_bytes=largest)

    def _state(self, shards: int, offload: bool) -> int:
        """Bytes of state on one GPU with the units' parameters sharded ``shards`` ways (in CPU memory with
        ``offload``): trained parameters 16 bytes each, frozen ones their weights, EMA 4 more per floating entry;
        buffers and held networks whole."""

        def share(p: torch.Tensor, copies: int) -> int:
            if id(p) not in self.unit_of or shards == 1:
                return copies * p.numel() * p.element_size()
            return 0 if offload else sharding.sharded_bytes(p.numel(), shards, copies * p.element_size())

        params = {id(p): p for module in self.modules for p in module.parameters()}
        state = sum(share(p, TRAINED_COPIES if id(p) in self.trained else 1) for p in params.values())
        held = [p for module in self.held for p in module.parameters() if id(p) not in params]
        buffers = [b for module in (*self.modules, *self.held) for b in module.buffers()]
        state += nbytes_of(held) + nbytes_of(buffers) + self.extra
        if self.train.ema is not None:
            by_storage = {id(p): p for p in params.values()}
            for module in self.modules:
                for name, value in module.state_dict(keep_vars=True).items():
                    if value.is_floating_point():
                        state += share(by_storage.get(id(value), value), 1)
        return state

    def _gathered(self) -> int:
        """The largest unit's parameters and their gradient, and the next unit's parameters (prefetched), in the
        dtype FSDP computes in."""
        sizes = [0] * len(self.units)
        bytes_per = 2 if self.train.precision == "bf16" else 4
        for module in self.modules:
            for p in module.parameters():
                if id(p) in self.unit_of:
                    sizes[self.unit_of[id(p)]] += p.numel()
        first, second = (sorted(sizes, reverse=True) + [0, 0])[:2]
        return (2 * first + second) * bytes_per


@contextlib.contextmanager
def _parameters_in(units: list[nn.Module], dtype: torch.dtype | None, mode: FakeTensorMode) -> Iterator[None]:
    """The units' floating parameters in ``dtype`` for the block (what FSDP's mixed precision gathers and computes
    with; made under the fake ``mode``), the originals back after it."""
    swapped = []
    with mode:
        for unit in units if dtype is not None else ():
            for module in unit.modules():
                for name, p in list(module._parameters.items()):
                    if p is not None and p.is_floating_point() and p.dtype != dtype:
                        swapped.append((module, name, p))
                        module._parameters[name] = nn.Parameter(p.detach().to(dtype), requires_grad=p.requires_grad)
    try:
        yield
    finally:
        for module, name, p in swapped:
            module._parameters[name] = p


def training_memory(cls: type, config: Any, shape: Any, *, world_size: int = 1, device: str | torch.device = "cuda",
                    strategy: str | None = None, micro_batch: int | None = None, execution: Execution | None = None,
                    **dependencies: Any) -> MemoryEstimate:
    """Training memory per GPU of a component of class ``cls`` built from ``config`` (and ``dependencies``): see
    :class:`TrainingTrace`; ``strategy`` and ``micro_batch`` default to ``execution``'s."""
    trace = TrainingTrace(cls, config, shape, device=device, execution=execution, **dependencies)
    return trace.estimate(world_size=world_size, strategy=strategy, micro_batch=micro_batch)


def _fits_alone(cls: type) -> bool:
    """Whether ``cls`` trains through its own ``fit()`` without a training task."""
    base = Tokenizer if issubclass(cls, Tokenizer) else Generator
    return overrides(cls, base, "fit") and not overrides(cls, base, "training_task")


def _shapes_only_task(component: Any, device: torch.device) -> Any:
    """The component's task built with ``shapes_only`` (no data): one that reads the data anyway is a contract error
    naming it."""
    name = type(component).__name__
    try:
        task = component.training_task(None, device, shapes_only=True)
    except (TypeError, AttributeError) as exc:
        raise ContractError(f"{name}.training_task(None, device, shapes_only=True) failed ({type(exc).__name__}: "
                            f"{exc}): a shapes_only task is built without data for the memory estimate, so it must "
                            "not read data; give its shapes through example_batch() (docs/plugins.md)") from exc
    if task is None:
        raise NotEstimated(f"{name} is not trainable (its training_task() returns None)")
    return checked_task(component, task)


