"""Fully sharded data parallelism for the shared trainer (``run.strategy: fsdp``), on PyTorch's FSDP2.

A task names its shard units (:meth:`~hitvideo_bench.training.TrainingTask.shard_units`, e.g. the
generator's decoder layers, embeddings and heads). Under ``torchrun`` each unit is wrapped with
:func:`torch.distributed.fsdp.fully_shard`: every process keeps 1/N of its parameters, gradients and
AdamW moments, all-gathers the unit when it is called and frees it after (and again in backward), and
reduce-scatters its gradients. The parameters of the task's modules outside every unit stay whole on
every process and are averaged as under DDP (the trainer all-reduces them); they should be small.
``train.precision: bf16`` gathers and computes in bf16 and reduces in fp32; ``run.cpu_offload``
keeps the shards, their gradients and the optimizer state in CPU memory.

Checkpoints (:func:`save_sharded`, :func:`load_sharded`) go through :mod:`torch.distributed.checkpoint`:
every process writes its own shards into a temporary folder that rank 0 renames into place once all are
written, and they load at any number of processes (resharded on load). With one process nothing is
wrapped (there is nothing to shard over), and the checkpoints keep the same format.

When training ends, :func:`unshard_in_place` gathers every unit back into whole tensors on every process
and takes FSDP off the modules, so that what follows (the safetensors component, evaluation on rank 0
alone, tokenizing on every rank) sees plain modules, as after DDP training.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .distributed import world
from .errors import BadInput

#: the state file rank 0 writes into a sharded checkpoint folder beside torch.distributed.checkpoint's files
TRAINER_STATE = "state.pt"
#: the file torch.distributed.checkpoint writes last into a checkpoint folder
DCP_METADATA = ".metadata"


# ------------------------------------------------------------------------------------------ units


def task_units(task: Any, modules: dict[str, nn.Module]) -> list[nn.Module]:
    """The task's shard units (each of ``modules`` for a task without ``shard_units()``), each once and inside one
    of ``modules``, inner units before the units holding them (FSDP wraps a unit's sub-units first); a bad list is
    a :class:`BadInput` naming the unit."""
    shard_units = getattr(task, "shard_units", None)
    units = shard_units() if shard_units is not None else list(modules.values())
    inside = {id(m) for module in modules.values() for m in module.modules()}
    seen: set[int] = set()
    out = []
    for unit in units:
        if not isinstance(unit, nn.Module):
            raise BadInput(f"shard_units() must return torch.nn.Module objects, got {type(unit).__name__}")
        if id(unit) not in inside:
            raise BadInput(f"shard unit {type(unit).__name__} is not part of the task's modules() "
                           f"({', '.join(modules)})")
        if id(unit) not in seen:
            seen.add(id(unit))
            out.append(unit)
    return sorted(out, key=lambda u: sum(1 for _ in u.modules()))  # a unit has more submodules than any inside it


def unit_parameters(units: list[nn.Module]) -> set[int]:
    """Ids of the parameters FSDP shards: those of the units (the rest of the modules stays whole)."""
    return {id(p) for unit in units for p in unit.parameters()}


def mixed_precision(precision: str):
    """FSDP's mixed precision for ``train.precision``: bf16 gathers and computes in bf16, reduces in fp32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if precision == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard(units: list[nn.Module], modules: dict[str, nn.Module], precision: str, cpu_offload: bool,
          device: torch.device) -> list[nn.Module]:
    """Wrap every unit with ``fully_shard`` over all processes (inner units first), freed after each forward, and
    make each of ``modules`` the FSDP root of the units inside it (its own parameters outside them left alone:
    ``ignored_params``), so that they share one schedule of gathers and gradient reductions. Returns every module
    FSDP now wraps (for :func:`unshard_in_place`)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    options = {"mesh": init_device_mesh(device.type, (world()[1],)), "reshard_after_forward": True,
               "mp_policy": mixed_precision(precision),
               "offload_policy": CPUOffloadPolicy(pin_memory=device.type == "cuda") if cpu_offload else OffloadPolicy()}
    for unit in units:
        fully_shard(unit, **options)
    inside = unit_parameters(units)  # the sharded parameters fully_shard put in place of the units' own
    roots = [module for module in modules.values() if all(module is not unit for unit in units)]
    for module in roots:
        fully_shard(module, ignored_params={p for p in module.parameters() if id(p) not in inside}, **options)
    for module in modules.values():
        # the task calls units rather than the module holding them, so the root never runs forward, where FSDP
        # would initialise it: do it now (FSDP2 has no public call for it), or each unit would be a root of its own
        module._get_fsdp_state()._lazy_init()
    return [*units, *roots]


def is_sharded(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def clip_grad_norm(params: list[nn.Parameter], max_norm: float, device: torch.device) -> float:
    """``torch.nn.utils.clip_grad_norm_`` over sharded and whole gradients: the squares of every process's shards
    are summed across processes, the whole ones (equal on every process after their all-reduce) counted once."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    local = torch.zeros((), dtype=torch.float32, device=device)
    whole = torch.zeros((), dtype=torch.float32, device=device)
    for g in grads:
        if is_sharded(g):
            local += torch.linalg.vector_norm(g.to_local().float()).to(device) ** 2
        else:
            whole += torch.linalg.vector_norm(g.float()).to(device) ** 2
    if world()[1] > 1:
        torch.distributed.all_reduce(local)
    total = float((local + whole).sqrt())
    coef = min(max_norm / (total + 1e-6), 1.0)
    for g in grads:
        (g.to_local() if is_sharded(g) else g).mul_(coef)
    return total


# ------------------------------------------------------------------------------------------ checkpoints


def _container(modules: dict[str, nn.Module]) -> nn.Module:
    """One module holding the task's modules under their names: the keys of the checkpoint."""
    return nn.ModuleDict(modules)


def _optimizer_state(root: nn.Module, opt: torch.optim.Optimizer) -> dict[str, dict[str, Any]]:
    """The optimiser's per-parameter state (AdamW's step and moments, sharded like the parameters) by parameter
    name; parameters it has no state for yet (never stepped) are left out, and stay so on load."""
    names = {id(p): name for name, p in root.named_parameters()}
    return {names[id(p)]: dict(state) for p, state in opt.state.items()}


def _dcp_state(root: nn.Module, optimizers: dict[str, torch.optim.Optimizer],
               ema: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state: dict[str, Any] = {"model": get_model_state_dict(root),
                             "optim": {name: _optimizer_state(root, opt) for name, opt in optimizers.items()}}
    if ema is not None:
        state["ema"] = ema
    return state


def hyperparameters(optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, list[dict[str, Any]]]:
    """Each optimiser's parameter-group settings (the scheduled learning rate among them), for the trainer state."""
    return {name: [{k: v for k, v in group.items() if k != "params"} for group in opt.param_groups]
            for name, opt in optimizers.items()}


@contextlib.contextmanager
def _one_process_quietly() -> Iterator[None]:
    """torch.distributed.checkpoint warns that one process saves or loads alone, which is what it is asked."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def save_sharded(tmp: Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                 ema: dict[str, torch.Tensor] | None) -> None:
    """Every process writes its shards of the weights, optimizer state and EMA into ``tmp`` (a collective call;
    ``tmp`` exists). The caller writes the trainer state (with :func:`hyperparameters`) and renames ``tmp`` into
    place."""
    import torch.distributed.checkpoint as dcp

    with _one_process_quietly():
        dcp.save(_dcp_state(_container(modules), optimizers, ema), checkpoint_id=str(tmp), no_dist=world()[1] == 1)


def load_sharded(folder: Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                 ema: dict[str, torch.Tensor] | None, groups: dict[str, list[dict[str, Any]]]) -> None:
    """Restore what :func:`save_sharded` wrote, at this run's number of processes (resharded by
    torch.distributed.checkpoint; EMA tensors in place), and the optimisers' ``groups`` settings."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    saved = dcp.FileSystemReader(str(folder)).read_metadata().state_dict_metadata
    root = _container(modules)
    state = _dcp_state(root, {}, ema)
    params = dict(root.named_parameters())
    for group, opt in optimizers.items():  # room for the state of the parameters the checkpoint has state for
        slots: dict[str, dict[str, torch.Tensor]] = {}
        for name, param in params.items():
            prefix = f"optim.{group}.{name}."
            for key, meta in saved.items():
                if key.startswith(prefix) and "." not in key[len(prefix):] and hasattr(meta, "size"):
                    slot = (torch.zeros_like(param) if tuple(meta.size) == tuple(param.shape)
                            else torch.zeros(tuple(meta.size), dtype=meta.properties.dtype))
                    slots.setdefault(name, {})[key[len(prefix):]] = slot
        state["optim"][group] = slots
    with _one_process_quietly():
        dcp.load(state, checkpoint_id=str(folder), no_dist=world()[1] == 1)
    set_model_state_dict(root, state["model"])
    for group, opt in optimizers.items():
        opt.state.clear()
        for name, slots in state["optim"][group].items():
            opt.state[params[name]] = slots
        for settings, saved_settings in zip(opt.param_groups, groups[group]):
            settings.update(saved_settings)


def checkpoint_format(folder: Path) -> str | None:
    """``"fsdp"`` (torch.distributed.checkpoint), ``"ddp"`` (whole safetensors weights) or None (no checkpoint)."""
    folder = Path(folder)
    if not (folder / TRAINER_STATE).exists():
        return None
    return "fsdp" if (folder / DCP_METADATA).exists() else "ddp"


# ------------------------------------------------------------------------------------------ after training


def _fsdp_hook(hook: Any) -> bool:
    """Whether a module hook is one FSDP registered (its function lives in torch.distributed.fsdp)."""
    fn = getattr(hook, "hook", hook)  # load_state_dict pre-hooks come wrapped
    fn = getattr(fn, "func", fn)  # functools.partial
    return (getattr(fn, "__module__", None) or "").startswith("torch.distributed.fsdp")


_HOOKS = ("_forward_pre_hooks", "_forward_hooks", "_state_dict_pre_hooks", "_state_dict_hooks",
          "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")
_HOOK_FLAGS = ("_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs", "_forward_hooks_always_called")


def _take_off_fsdp(unit: nn.Module) -> None:
    """Undo what ``fully_shard`` did to ``unit`` besides its parameters (FSDP2 has no public inverse): its class,
    its hooks on the unit and its submodules, and its state records."""
    from torch.distributed import _composable_state
    from torch.distributed._composable.contract import REGISTRY_KEY, STATE_KEY
    from torch.distributed.fsdp import FSDPModule

    cls = type(unit)
    if issubclass(cls, FSDPModule):
        unit.__class__ = next(c for c in cls.__mro__[1:] if not issubclass(c, FSDPModule))
    for module in unit.modules():
        for name in _HOOKS:
            hooks = getattr(module, name, {})
            for key in [k for k, h in hooks.items() if _fsdp_hook(h)]:
                del hooks[key]
                for flags in _HOOK_FLAGS:
                    getattr(module, flags, {}).pop(key, None)
        for attr in ("_is_fsdp_managed_module", "_fsdp_use_orig_params"):
            module.__dict__.pop(attr, None)
    states = unit.__dict__.get(STATE_KEY, {})
    for key in [k for k, v in states.items() if type(v).__name__ == "FSDPState"]:
        del states[key]
    unit.__dict__.get(REGISTRY_KEY, {}).pop("fully_shard", None)
    _composable_state._module_state_mapping.pop(unit, None)


def unshard_in_place(wrapped: list[nn.Module], modules: dict[str, nn.Module], device: torch.device) -> None:
    """Gather every sharded parameter into a whole tensor on every process (a collective call) and take FSDP off
    the ``wrapped`` modules (what :func:`shard` returned): the modules end as plain modules holding the trained
    weights, on ``device``."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full_options = StateDictOptions(full_state_dict=True)
    for module in modules.values():
        sharded = {name: p for name, p in module.named_parameters() if is_sharded(p)}
        if not sharded:
            continue
        full = get_model_state_dict(module, options=full_options)
        for name, param in sharded.items():
            owner, _, leaf = name.rpartition(".")
            holder = module.get_submodule(owner)
            holder._parameters[leaf] = nn.Parameter(full[name].to(device), requires_grad=param.requires_grad)
    for module in wrapped:
        _take_off_fsdp(module)


def sharded_bytes(numel: int, world_size: int, bytes_per_element: int) -> int:
    """Bytes one process holds of a tensor of ``numel`` elements sharded over ``world_size`` processes."""
    return math.ceil(numel / world_size) * bytes_per_element
