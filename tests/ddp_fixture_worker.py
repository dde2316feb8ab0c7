"""Fixture worker for tests/test_distributed.py: trains a small fixture task with the shared trainer,
once per process under torchrun (or alone), and saves the final weights from rank 0."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from hitvideo_bench.training import Execution, TrainConfig, TrainingTask, init_distributed, is_main_process, train


class FixtureData(torch.utils.data.Dataset):
    def __init__(self):
        self.x = torch.randn(16, 3, 2, 4, 4, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"video": self.x[i], "caption": "", "attrs": {}}


class FixtureTask(TrainingTask):
    def __init__(self):
        torch.manual_seed(1)
        self.net = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 1), torch.nn.GELU(), torch.nn.Conv3d(8, 3, 1))

    def modules(self):
        return {"net": self.net}

    def param_groups(self):
        return {"main": list(self.net.parameters())}

    def training_step(self, batch, step, trainer):
        loss = (self.net(batch["video"]) - batch["video"].flip(1)).pow(2).mean()
        trainer.step(loss, "main")
        return {"mse": loss.item()}


def main(out: str) -> None:
    device = init_distributed(torch.device("cpu"))
    task = FixtureTask()
    cfg = TrainConfig(steps=12, batch_size=8, lr=1e-2)
    train(task, FixtureData(), cfg, workdir=Path(out) / "work", device=device, seed=0, progress=False,
          execution=Execution(checkpoint_every=4))
    if is_main_process():
        save_file({k: v.contiguous() for k, v in task.net.state_dict().items()}, str(Path(out) / "final.safetensors"))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
