"""Tracing a training step on fake tensors: the bytes autograd saves for backward, counted on a device with no
memory behind it (see the package docstring for what is counted and why)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import (DataDependentOutputException, DynamicOutputShapeException, FakeTensor,
                                           FakeTensorMode, unset_fake_temporarily)
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import arg_tree_leaves

from ..training import autocast_dtype

class NotEstimated(Exception):
    """No memory trace exists for this component, or its training step cannot be traced."""


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


class FakeDevice:
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


def nbytes_of(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


