"""The training contract: what a component declares (:class:`TrainConfig`, the method) and implements
(:class:`TrainingTask`), and how a run executes it (:class:`Execution`), kept apart so that the execution settings never
become part of what a component is (its cache key and the run's identity leave them out).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..contract import overrides
from ..errors import BadInput, ContractError

if TYPE_CHECKING:
    from .trainer import Trainer


class TrainConfig(BaseModel):
    """The training method, embedded in a trainable component's config under the field its class declares
    (``train_settings``, e.g. ``train:``): what it trains for, and with what optimiser and schedule. Part of the
    component's identity; how the training executes is :class:`Execution`, the run's."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    steps: int = Field(200, ge=0, description="optimizer steps (per group)")
    batch_size: int = Field(8, ge=1, description="global batch size: the clips every step trains on (split over "
                            "processes)")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = Field(0, ge=0, description="linear LR warm-up, then cosine decay")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final LR as a share of lr")
    grad_clip: float | None = Field(1.0, gt=0, description="max gradient norm per group; null = off")
    ema: float | None = Field(None, gt=0, lt=1, description="EMA decay of the weights; the EMA weights are kept")
    eval_every: int = Field(0, ge=0, description="call the curve evaluation every N steps; 0 = off")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"


#: the settings that left :class:`TrainConfig` for :class:`Execution` in contract version 2 (named in the message a
#: recipe or plugin still setting them gets)
EXECUTION_FIELDS = ("strategy", "micro_batch", "cpu_offload", "num_workers", "grad_checkpointing", "checkpoint_every",
                    "log_every")


class Execution(BaseModel):
    """How a run executes every training it does (the recipe's ``run:`` section): never part of a component's identity,
    so a component trained under one strategy is reused under another. The trained weights are the same under any of
    these settings, up to float summation order (``micro_batch``, ``strategy``) and recomputation
    (``grad_checkpointing``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="under torchrun: ddp = every process holds the whole model and optimizer state; fsdp = "
        "each holds 1/N of them (the task's shard_units, FSDP2), with sharded checkpoints")
    micro_batch: int | None = Field(
        None, ge=1, description="clips per forward/backward on each process: its share of batch_size is cut into "
        "micro-batches whose gradients add up to one update (gradient accumulation); null = the whole share at once")
    cpu_offload: bool = Field(False, description="fsdp: keep the shards, their gradients and the optimizer state in "
                              "CPU memory (the optimizer steps on the CPU)")
    grad_checkpointing: bool = Field(False, description="recompute activations in backward (less memory); needs a "
                                     "training task that implements checkpoint_activations()")
    num_workers: int = Field(0, ge=0, description="data-loading worker processes (video decoding off the main one)")
    checkpoint_every: int | None = Field(None, ge=1, description="steps between resumable checkpoints; null = "
                                         "the task's own cadence (TrainingTask.checkpoint_every)")
    log_every: int | None = Field(None, ge=1, description="steps per logged loss mean; null = the task's own "
                                  "(TrainingTask.log_every)")

    @model_validator(mode="after")
    def _fsdp_settings(self) -> Execution:
        if self.cpu_offload and self.strategy != "fsdp":
            raise ValueError(f"cpu_offload: true needs strategy fsdp (got strategy {self.strategy})")
        return self

    def check(self, train: TrainConfig, who: str) -> None:
        """Refuse a combination of these settings with ``who``'s training method that cannot run."""
        if self.strategy == "fsdp" and train.precision == "fp16":
            raise BadInput(f"{who}: precision fp16 is not supported with run.strategy fsdp (allowed: fp32, bf16)")

class TrainingTask(ABC):
    """How a component trains: what the shared trainer (:func:`train`) and the memory estimate call.

    Implement :meth:`modules` and :meth:`training_step`; :attr:`data` is what the trainer iterates (a map-style
    dataset; the default collate turns video items into ``{"video", "captions", "attrs"}``). A task built with
    ``shapes_only`` (for the memory estimate, on a device with no memory behind it) has no data: it must not load
    files or read data, and :meth:`example_batch` gives the batch to trace instead.
    """

    #: the map-style dataset the trainer iterates (None for a task built with ``shapes_only``)
    data: Any = None
    #: steps between resumable checkpoints, and steps per logged loss mean, unless the run's :class:`Execution` says
    checkpoint_every: int = 100
    log_every: int = 10

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
        ``[(t, h, w), ...]`` for a generator. An opt-in ability: a task that does not override it has no memory
        estimate (the estimate asks :func:`~hitvideo_bench.contract.overrides` first)."""
        raise TypeError(f"{type(self).__name__} does not implement example_batch()")

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
        """Called once training ends."""

    def checkpoint_activations(self, on: bool) -> None:
        """Recompute activations in backward (``run.grad_checkpointing``): called with True before the first step when
        the run asks for it, with False once training ends. An opt-in ability: a task that does not override it
        trains without activation checkpointing, and the run says so (the trainer asks
        :attr:`can_checkpoint_activations` first)."""
        raise TypeError(f"{type(self).__name__} does not implement checkpoint_activations()")

    @property
    def can_checkpoint_activations(self) -> bool:
        """Whether this task implements :meth:`checkpoint_activations` (asked by the trainer and the memory
        estimate before ``run.grad_checkpointing`` turns it on)."""
        return overrides(self, TrainingTask, "checkpoint_activations")

    def shard_units(self) -> list[torch.nn.Module]:
        """The submodules ``run.strategy: fsdp`` shards, each on its own (e.g. transformer blocks, embeddings and
        heads): a unit is gathered when it is called (``unit(...)``) and freed after, so the step must call it as a
        module, never reach into its parameters. Parameters of :meth:`modules` outside every unit stay whole on
        every process (keep them small). Default: each module of :meth:`modules` is one unit (the step calls it).
        :meth:`param_groups` must list the parameters the modules hold when it is called (sharding replaces them)."""
        return list(self.modules().values())




def collate_videos(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Default collate of dataset items ``{video, caption, attrs}``."""
    return {"video": torch.stack([it["video"] for it in items]),
            "captions": [it.get("caption", "") for it in items],
            "attrs": [it.get("attrs", {}) for it in items]}




def train_config(cls: type, config: Any) -> TrainConfig:
    """The :class:`TrainConfig` in ``config`` of a trainable component of class ``cls``: the config field its class
    declares as ``train_settings`` (the one place the core reads it)."""
    name = getattr(cls, "train_settings", None)
    settings = getattr(config, name, None) if name else None
    if not isinstance(settings, TrainConfig):
        raise ContractError(f"{cls.__name__}: its training settings are not declared: set the class attribute "
                            "train_settings to the name of its config's TrainConfig field (docs/plugins.md)")
    return settings
