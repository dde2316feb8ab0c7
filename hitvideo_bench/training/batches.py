"""The order of a training's batches: a function of the seed and the step only (so a resumed training sees exactly
the batches it would have seen), this process's share of each, cut into micro-batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..distributed import world
from ..errors import BadInput

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



def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
