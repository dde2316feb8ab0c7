"""Training memory per GPU, estimated without a GPU and without allocating the model or the batch.

``hitbench validate`` prints it for each trainable component at the configured per-GPU batch
(``train.batch_size`` split over ``--nproc`` processes), precision and activation checkpointing, as
``state + activations``:

State, which does not depend on the batch:

* every trained parameter (the component's, and the tokenizer's discriminator): fp32 weight,
  gradient and AdamW's two moments, 16 bytes;
* with ``train.ema``: the trainer's fp32 copy of every floating state entry, 4 bytes per parameter;
* buffers, and frozen networks the training step keeps on the GPU (LPIPS for the tokenizer, the
  generator's text encoder): their weights only.

Activations: the tensors autograd keeps for backward, summed over one training forward through
:class:`torch.autograd.graph.saved_tensors_hooks` (:class:`SavedTensorBytes`): every saved tensor on
the GPU, each storage once (views, and a tensor saved by several ops, share it); weights are state,
not activations. The forward runs on fake tensors (:class:`~torch._subclasses.fake_tensor.FakeTensorMode`:
meta tensors, without data, that report the GPU as their device), so it allocates nothing.

Precision: autocast does not apply to meta tensors, and ``torch.autocast("cuda")`` turns itself off
on a machine without CUDA. Fake CUDA tensors carry CUDA's dispatch keys, so switching on CUDA
autocast's own per-device state (:func:`_autocast`) applies the casting policy a GPU run gets:
matmuls and convolutions in bf16/fp16, norms, softmax and losses in fp32, cast weights cached for
the step.

CPU tensors the code makes on its own stay real, as they are in training (LFQ's token-sampling mask,
RoPE position tables: small), so that a size depending on their values, such as the number of
tokens LFQ samples for its entropy over the codebook, is exact.

Under ``train.strategy: fsdp`` over N GPUs (:mod:`hitvideo_bench.sharding`), the state of the task's
shard units is divided by N (what lies outside them stays whole), one unit at a time is gathered
(``gathered``: the largest unit's parameters and their gradient in compute precision, and the next
unit's parameters, prefetched), the trace runs with the units' parameters in the compute dtype (FSDP's
mixed precision: autocast then casts no weight), and ``train.cpu_offload`` moves the sharded state to
CPU memory. With ``train.micro_batch`` the activations are those of one micro-batch.

:func:`fit_advice` says which strategy, number of GPUs and micro-batch make a component fit an 80 GB
GPU, judged by ``peak_bytes``: the estimate plus twice the largest tensor saved for backward (its
gradient and its input's gradient exist together while backward runs through it: for the generator
the logits' log-softmax; the largest single item of what is not counted below).

Not counted, so a real run needs headroom above the estimate: memory that lives only inside
forward or backward (the gradients of activations while backward runs, the largest being the
logits' gradient for the generator; the recomputation of one checkpointed block; weights cast inside
checkpointed blocks; kernel workspaces), optimizer-step temporaries, the flat gradient copy of the
all-reduce across processes (after backward has freed the activations), the generator's caption
features, the CUDA context, the caching allocator's fragmentation and NCCL buffers.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import (DataDependentOutputException, DynamicOutputShapeException, FakeTensor,
                                           FakeTensorMode, unset_fake_temporarily)
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import arg_tree_leaves

from . import sharding
from .errors import BadInput, HitbenchError
from .training import TrainConfig, autocast_dtype

GIB = 2 ** 30
#: copies of a trained fp32 parameter: weight, gradient, AdamW exp_avg and exp_avg_sq
TRAINED_COPIES = 4


class NotEstimated(Exception):
    """No memory trace exists for this component, or its training step cannot be traced."""


def format_count(n: int) -> str:
    """A parameter count with three significant digits: ``4.70 k``, ``12.3 M``, ``5.22 B``."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return str(n)


def _gib(nbytes: int) -> str:
    value = nbytes / GIB
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


@dataclass(frozen=True)
class MemoryEstimate:
    """Training memory of one GPU: batch-independent state (and, under fsdp, the gathered units) plus the
    activations of one step (of one micro-batch with ``train.micro_batch``)."""

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
        gathered = f" + gathered {_gib(self.gathered_bytes)}" if self.strategy == "fsdp" else ""
        return (f"training memory per GPU at batch {self.batch}{split} ({mode}): ~{_gib(self.total_bytes)} GiB "
                f"(state {_gib(self.state_bytes)}{gathered} + activations {_gib(self.activation_bytes)})")


def per_gpu_batch(batch_size: int, world_size: int) -> int:
    """The largest share of a global batch that one of ``world_size`` processes takes (rank 0's)."""
    if world_size < 1:
        raise BadInput(f"the number of processes must be at least 1, got {world_size}")
    if batch_size < world_size:
        raise NotEstimated(f"train.batch_size {batch_size} cannot be split over {world_size} processes")
    return math.ceil(batch_size / world_size)


# ------------------------------------------------------------------------------------------ activations


class SavedTensorBytes(torch.autograd.graph.saved_tensors_hooks):
    """Bytes of the tensors autograd saves for backward on one device type, each storage counted once.

    Use as a context manager around a forward. Parameters and buffers of ``exclude`` are state, not
    activations. A weak reference to every counted storage keeps its address from being reused by a
    later storage while counting.
    """

    def __init__(self, device_type: str, exclude: Iterable[nn.Module] = ()):
        self.device_type = device_type
        self._excluded = {StorageWeakRef(t.untyped_storage())
                          for module in exclude for t in (*module.parameters(), *module.buffers())}
        self._saved: dict[StorageWeakRef, int] = {}
        super().__init__(self._pack, lambda tensor: tensor)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type == self.device_type:
            storage = tensor.untyped_storage()
            ref = StorageWeakRef(storage)
            if ref not in self._excluded:
                self._saved[ref] = storage.nbytes()
        return tensor

    @property
    def nbytes(self) -> int:
        return sum(self._saved.values())

    @property
    def largest(self) -> int:
        return max(self._saved.values(), default=0)


@contextlib.contextmanager
def _autocast(device_type: str, dtype: torch.dtype | None) -> Iterator[None]:
    """What ``torch.autocast(device_type, dtype)`` switches on, also for a device this machine lacks."""
    if dtype is None:
        yield
        return
    enabled, previous = torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    torch.set_autocast_enabled(device_type, True)
    torch.set_autocast_dtype(device_type, dtype)
    torch.autocast_increment_nesting()
    try:
        yield
    finally:
        if torch.autocast_decrement_nesting() == 0:
            torch.clear_autocast_cache()
        torch.set_autocast_enabled(device_type, enabled)
        torch.set_autocast_dtype(device_type, previous)


def _long_indices(index: Any) -> tuple[Any, ...]:
    """A real boolean mask -> its long indices, one per mask dimension (what aten's indexing makes of it)."""
    if isinstance(index, torch.Tensor) and not isinstance(index, FakeTensor) and index.dtype == torch.bool:
        with unset_fake_temporarily():
            return index.nonzero().unbind(1)
    return (index,)


class _RealCpuOps(TorchDispatchMode):
    """Under a fake mode: what involves no fake tensor and no other device than the CPU runs for real.

    A fake tensor indexed by a real boolean mask gets the mask's long indices, so its size is exact;
    a real tensor sent to the fake device becomes fake.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten.index.Tensor:
            args = (args[0], [part for index in args[1] for part in _long_indices(index)])
        device = kwargs.get("device")
        if ((device is None or torch.device(device).type == "cpu")
                and not any(isinstance(t, FakeTensor) for t in arg_tree_leaves(*args, **kwargs))):
            with unset_fake_temporarily():
                return func(*args, **kwargs)
        return func(*args, **kwargs)


class _FakeDevice:
    """A device with no memory behind it: build modules and inputs in :meth:`build`, trace in :meth:`saved_bytes`."""

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)

    @contextlib.contextmanager
    def build(self) -> Iterator[None]:
        with self.mode, self.device:
            yield

    def saved_bytes(self, step: Callable[[], torch.Tensor], precision: str,
                    exclude: Iterable[nn.Module]) -> tuple[int, int]:
        """Bytes ``step`` (one training forward) saves for backward, under ``precision``'s autocast, and the bytes of
        the largest tensor it saves."""
        saved = SavedTensorBytes(self.device.type, exclude)
        dtype = autocast_dtype(precision, self.device.type)
        try:
            with torch.enable_grad(), self.mode, _RealCpuOps(), _autocast(self.device.type, dtype), saved:
                step()
        except (DataDependentOutputException, DynamicOutputShapeException) as exc:
            raise NotEstimated(f"the training step has a size that depends on data on the device "
                               f"({exc.func})") from None
        except Exception as exc:  # an op fake tensors cannot run: validate reports it and goes on
            raise NotEstimated(f"the training step cannot be traced ({type(exc).__name__}: {exc})") from None
        return saved.nbytes, saved.largest


# ------------------------------------------------------------------------------------------ state


def _nbytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


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
                 **dependencies: Any):
        train = getattr(config, "train", None)
        if not isinstance(train, TrainConfig):
            raise NotEstimated(f"{cls.__name__}'s config has no train settings (a TrainConfig field named train)")
        self.name, self.train, self.shape = cls.__name__, train, shape
        self.fake = _FakeDevice(device)
        with self.fake.build():
            component = cls(config, **dependencies)
            task = component.training_task(None, self.fake.device, shapes_only=True)
            if task is None:
                raise NotEstimated(f"{cls.__name__} is not trainable (its training_task() returns None)")
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
            try:
                return self.task.example_batch(batch, self.shape)
            except NotImplementedError:
                raise NotEstimated(f"{self.name}'s training task gives no example_batch()") from None

    def estimate(self, *, world_size: int = 1, strategy: str | None = None,
                 micro_batch: int | None = None, cpu_offload: bool | None = None) -> MemoryEstimate:
        """Memory per GPU with the global batch split over ``world_size`` processes; ``strategy``, ``micro_batch``
        and ``cpu_offload`` default to the config's ``train`` settings."""
        train = self.train
        strategy = strategy or train.strategy
        micro_batch = train.micro_batch if micro_batch is None else micro_batch
        offload = train.cpu_offload if cpu_offload is None else cpu_offload
        batch = per_gpu_batch(train.batch_size, world_size)
        micro = min(micro_batch, batch) if micro_batch else None
        sharded = strategy == "fsdp" and world_size > 1  # one process: nothing to shard over
        state = self._state(world_size if sharded else 1, offload and sharded)
        gathered = self._gathered() if sharded else 0
        activations, largest = self.activations(micro or batch, sharded)
        notes = list(self.notes)
        if offload and sharded:
            cpu = self._state(world_size, False) - state
            notes.append(f"sharded state in CPU memory (train.cpu_offload): {_gib(cpu)} GiB per process")
        return MemoryEstimate(
            batch=batch, global_batch=train.batch_size, world_size=world_size, precision=train.precision,
            grad_checkpointing=train.grad_checkpointing, trainable_params=sum(p.numel() for p in self.trained.values()),
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
        state += _nbytes(held) + _nbytes(buffers) + self.extra
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
                    strategy: str | None = None, micro_batch: int | None = None, **dependencies: Any) -> MemoryEstimate:
    """Training memory per GPU of a component of class ``cls`` built from ``config`` (and ``dependencies``): see
    :class:`TrainingTrace`; ``strategy`` and ``micro_batch`` default to the config's ``train`` settings."""
    trace = TrainingTrace(cls, config, shape, device=device, **dependencies)
    return trace.estimate(world_size=world_size, strategy=strategy, micro_batch=micro_batch)


# ------------------------------------------------------------------------------------------ what fits

#: the GPU :func:`fit_advice` fits components on (80 GB, as an H100 or A100 80GB has)
GPU_BYTES = 80 * 10 ** 9
#: the largest number of GPUs :func:`fit_advice` tries
MAX_GPUS = 64


def fit_advice(trace: TrainingTrace, world_size: int) -> str:
    """Which strategy, number of GPUs and micro-batch make the component fit an 80 GB GPU (its estimate's
    :attr:`~MemoryEstimate.peak_bytes`): the configured settings if they fit, else the first that does, trying
    ``world_size`` GPUs then twice as many up to :data:`MAX_GPUS`, the configured strategy before the other, and the
    largest micro-batch (a power of two, or the whole share) that fits."""
    train = trace.train
    current = trace.estimate(world_size=world_size)
    setting = _setting(current)
    if current.peak_bytes <= GPU_BYTES:
        return f"fits 80 GB as configured ({setting}; ~{_gib(current.peak_bytes)} GiB at peak)"
    worlds = [world_size * 2 ** k for k in range(8)
              if world_size * 2 ** k <= min(MAX_GPUS, train.batch_size)] or [world_size]
    strategies = [train.strategy] + [s for s in ("ddp", "fsdp") if s != train.strategy]
    for world in worlds:
        share = per_gpu_batch(train.batch_size, world)
        micro = sorted({2 ** k for k in range(share.bit_length()) if 2 ** k <= share} | {share})
        for strategy in strategies:
            fitting = _largest_fitting(trace, world, strategy, micro)
            if fitting is not None:
                return (f"fits 80 GB with: {_setting(fitting)} (train.strategy {strategy}, train.micro_batch "
                        f"{fitting.micro_batch or share}; ~{_gib(fitting.peak_bytes)} GiB at peak)")
    return (f"does not fit 80 GB: not with ddp or fsdp over up to {worlds[-1]} GPUs at micro-batch 1 "
            f"({setting} needs ~{_gib(current.peak_bytes)} GiB at peak)")


def _setting(estimate: MemoryEstimate) -> str:
    gpus = f"{estimate.world_size} GPU" + ("s" if estimate.world_size > 1 else "")
    return f"{estimate.strategy} over {gpus}, micro-batch {estimate.micro_batch or estimate.batch}"


def _largest_fitting(trace: TrainingTrace, world: int, strategy: str, micro: list[int]) -> MemoryEstimate | None:
    """The estimate at the largest of the ascending ``micro`` batches that fits (bisection: activations grow with
    the micro-batch), or None."""
    def at(m: int) -> MemoryEstimate:
        return trace.estimate(world_size=world, strategy=strategy, micro_batch=m)

    if at(micro[0]).peak_bytes > GPU_BYTES:
        return None
    lo, hi = 0, len(micro) - 1  # micro[lo] fits; find the last that does
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if at(micro[mid]).peak_bytes <= GPU_BYTES:
            lo = mid
        else:
            hi = mid - 1
    return at(micro[lo])
