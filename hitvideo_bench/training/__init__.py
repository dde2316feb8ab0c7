"""The shared trainer: every trainable component (tokenizers, generators, probes, third-party plugins)
trains through :func:`train`, so they all get the same optimiser, schedule, checkpoints and resume.

A component declares its training as a :class:`TrainingTask` (``training_task()`` on its base class);
the core builds it, trains it (:func:`fit_component`), caches the result and traces one of its steps for
``hitbench validate``'s memory estimate (:mod:`hitvideo_bench.memory`).

Determinism: the batch order is a function of ``(seed, epoch)`` only, the global RNG is seeded
once and saved in every checkpoint, so a run interrupted after any checkpoint and resumed ends with
bit-identical weights on CPU. Checkpoints are written atomically (a new folder renamed over the old).

Distributed: under ``torchrun`` (``torch.distributed`` initialised by :func:`init_distributed`) every
rank takes its share of each global batch. ``run.strategy: ddp`` (the default) keeps the whole model
and optimizer on every rank and averages gradients with
:class:`torch.nn.parallel.DistributedDataParallel`'s reducer semantics (all-reduce of the gradients
after backward); only rank 0 writes checkpoints. ``run.strategy: fsdp`` shards the task's
:meth:`~TrainingTask.shard_units` over the ranks (:mod:`hitvideo_bench.sharding`) and every rank writes
its shards of each checkpoint, which resumes at any number of ranks.

Gradient accumulation: with ``run.micro_batch``, each rank's share of a step's batch is cut into
micro-batches; the task's step runs once per micro-batch, each loss weighted by its micro-batch's share,
and the optimizer updates once, after the last. For a loss that is a mean over the batch's items and a
step without random draws, that is the update of the whole batch (up to float summation order).
"""

from .contract import EXECUTION_FIELDS, Execution, TrainConfig, TrainingTask, collate_videos, train_config
from ..distributed import (barrier, default_device, init_distributed, is_main_process, local_training, world)
from .batches import StepBatches, to_device
from .trainer import CHECKPOINT, Trainer, autocast_dtype, fit_component, lr_factor, train

__all__ = ["CHECKPOINT", "EXECUTION_FIELDS", "Execution", "StepBatches", "TrainConfig", "Trainer", "TrainingTask",
           "autocast_dtype", "barrier", "collate_videos", "default_device", "fit_component", "init_distributed",
           "is_main_process", "local_training", "lr_factor", "to_device", "train", "train_config", "world"]
