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

from .errors import BadInput
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
    """Training memory of one GPU: batch-independent state plus the activations of one step."""

    batch: int  # per-GPU micro-batch (rank 0's share)
    global_batch: int  # train.batch_size, split over world_size processes
    world_size: int
    precision: str
    grad_checkpointing: bool
    trainable_params: int
    state_bytes: int
    activation_bytes: int
    notes: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.activation_bytes

    def describe(self) -> str:
        """``training memory per GPU at batch 8 (bf16, grad checkpointing): ~X GiB (state Y + activations Z)``."""
        split = f" of {self.global_batch} over {self.world_size} GPUs" if self.world_size > 1 else ""
        mode = self.precision + (", grad checkpointing" if self.grad_checkpointing else "")
        return (f"training memory per GPU at batch {self.batch}{split} ({mode}): ~{_gib(self.total_bytes)} GiB "
                f"(state {_gib(self.state_bytes)} + activations {_gib(self.activation_bytes)})")


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

    def saved_bytes(self, step: Callable[[], torch.Tensor], precision: str, exclude: Iterable[nn.Module]) -> int:
        """Bytes ``step`` (one training forward) saves for backward, under ``precision``'s autocast."""
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
        return saved.nbytes


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


def training_memory(cls: type, config: Any, shape: Any, *, world_size: int = 1, device: str | torch.device = "cuda",
                    **dependencies: Any) -> MemoryEstimate:
    """Training memory per GPU of a component of class ``cls`` built from ``config`` (and ``dependencies``), from one
    step of the task its ``training_task(None, device, shapes_only=True)`` returns, on the task's
    ``example_batch(batch, shape)`` (``shape``: the clip shape for a tokenizer, the token grids for a generator)."""
    train = getattr(config, "train", None)
    if not isinstance(train, TrainConfig):
        raise NotEstimated(f"{cls.__name__}'s config has no train settings (a TrainConfig field named train)")
    batch = per_gpu_batch(train.batch_size, world_size)
    fake = _FakeDevice(device)
    with fake.build():
        component = cls(config, **dependencies)
        task = component.training_task(None, fake.device, shapes_only=True)
        if task is None:
            raise NotEstimated(f"{cls.__name__} is not trainable (its training_task() returns None)")
        try:
            example = task.example_batch(batch, shape)
        except NotImplementedError:
            raise NotEstimated(f"{cls.__name__}'s training task gives no example_batch()") from None
    index = task.trace_step(train.steps)

    def step() -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):  # a step's random choices (crops, layers) alike in every estimate
            torch.manual_seed(0)
            return first_loss(task, example, index)

    groups = task.param_groups()
    trained = {id(p): p for params in groups.values() for p in params if p.requires_grad}
    modules = list(task.modules().values())
    held = [p for module in (*modules, *task.held_modules()) for p in module.parameters() if id(p) not in trained]
    extra, notes = task.memory_notes()
    activations = fake.saved_bytes(step, train.precision, exclude=(*modules, *task.held_modules()))
    buffers = [b for module in (*modules, *task.held_modules()) for b in module.buffers()]
    state = TRAINED_COPIES * _nbytes(trained.values()) + _nbytes(held) + _nbytes(buffers) + extra
    if train.ema is not None:
        state += _nbytes(v for module in modules for v in module.state_dict().values() if v.is_floating_point())
    task_notes, notes = list(notes), []
    if len(modules) > 1:
        notes.append("trained beside it: " + ", ".join(
            f"{name} ({format_count(sum(p.numel() for p in m.parameters()))} parameters)"
            for name, m in list(task.modules().items())[1:]))
    for module in task.held_modules():
        notes.append(f"{type(module).__name__} ({format_count(sum(p.numel() for p in module.parameters()))} "
                     f"parameters) held frozen")
    notes += task_notes
    return MemoryEstimate(
        batch=batch, global_batch=train.batch_size, world_size=world_size, precision=train.precision,
        grad_checkpointing=train.grad_checkpointing, trainable_params=sum(p.numel() for p in trained.values()),
        state_bytes=state, activation_bytes=activations, notes=tuple(notes))
