"""Training of the probe: its data (rendered synthetic-shapes clips, precomputed as probe inputs), its
training task for the shared trainer (cross-entropy per attribute, label-preserving augmentation) and
:func:`train_probe`, which trains it and measures it on held-out val clips. Caching is :mod:`.cache`'s job."""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from hitvideo_bench.api import TrainingTask, local_training, train

from ...datasets.synthetic import ATTRIBUTES, SyntheticShapes, SyntheticShapesConfig
from .config import ATTRIBUTE_NAMES, ProbeConfig
from .inputs import attribute_targets, cpu_threads, probe_inputs
from .model import ProbeNet

_MOTION = ATTRIBUTE_NAMES.index("motion")
_MOTIONS = ATTRIBUTES["motion"]
# label maps of the augmentations: time reversal swaps left/right and up/down, a horizontal flip left/right
_TIME_REVERSED = torch.tensor([_MOTIONS.index(m) for m in
                               [{"left": "right", "right": "left", "up": "down", "down": "up"}.get(m, m)
                                for m in _MOTIONS]])
_MIRRORED = torch.tensor([_MOTIONS.index({"left": "right", "right": "left"}.get(m, m)) for m in _MOTIONS])


class _ProbeData(torch.utils.data.Dataset):
    """Probe inputs and attribute targets, precomputed once (rendering is the expensive part)."""

    def __init__(self, motion: torch.Tensor, appearance: torch.Tensor, targets: torch.Tensor):
        self.motion, self.appearance, self.targets = motion, appearance, targets

    def __len__(self) -> int:
        return self.targets.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.motion[index], self.appearance[index], self.targets[index]


class _ProbeTask(TrainingTask):
    """The probe's training task for :func:`hitvideo_bench.api.train`: one cross-entropy per
    attribute head, summed, with random time reversal and horizontal flips (labels remapped)."""

    checkpoint_every, log_every = 100, 50

    def __init__(self, net: ProbeNet):
        self.net = net

    def modules(self) -> dict[str, nn.Module]:
        return {"probe": self.net}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"main": list(self.net.parameters())}

    @staticmethod
    def collate(items: list) -> dict[str, torch.Tensor]:
        motion, appearance, targets = zip(*items)
        return {"motion": torch.stack(motion), "appearance": torch.stack(appearance), "targets": torch.stack(targets)}

    def training_step(self, batch: dict[str, torch.Tensor], step: int, trainer) -> dict[str, float]:
        motion, appearance, targets = batch["motion"], batch["appearance"], batch["targets"].clone()
        B = targets.shape[0]
        # the global RNG is seeded by the trainer and saved in its checkpoints: resumes are exact
        reverse, mirror = (torch.rand(B) < 0.5).to(motion.device), (torch.rand(B) < 0.5).to(motion.device)
        motion = torch.where(reverse.view(B, 1, 1, 1, 1), motion.flip(2), motion)
        targets[:, _MOTION] = torch.where(reverse, _TIME_REVERSED.to(targets.device)[targets[:, _MOTION]],
                                          targets[:, _MOTION])
        motion = torch.where(mirror.view(B, 1, 1, 1, 1), motion.flip(4), motion)
        appearance = torch.where(mirror.view(B, 1, 1, 1), appearance.flip(3), appearance)
        targets[:, _MOTION] = torch.where(mirror, _MIRRORED.to(targets.device)[targets[:, _MOTION]],
                                          targets[:, _MOTION])
        with trainer.autocast():
            _, logits = self.net(motion, appearance)
            losses = {n: F.cross_entropy(logits[n].float(), targets[:, i]) for i, n in enumerate(ATTRIBUTE_NAMES)}
        loss = sum(losses.values())
        trainer.step(loss, "main")
        return {"loss": float(loss.detach()), **{f"ce_{n}": float(v.detach()) for n, v in losses.items()}}


def _render(dataset: SyntheticShapes, count: int, config: ProbeConfig) -> _ProbeData:
    """The first ``count`` clips of ``dataset`` as probe inputs, and their attribute indices."""
    motion, appearance, attrs = [], [], []
    for start in range(0, count, 64):
        items = [dataset[i] for i in range(start, min(start + 64, count))]
        m, a = probe_inputs(torch.stack([it["video"] for it in items]), config)
        motion.append(m)
        appearance.append(a)
        attrs += [it["attrs"] for it in items]
    return _ProbeData(torch.cat(motion), torch.cat(appearance), attribute_targets(attrs))


def _accuracy(net: ProbeNet, data: _ProbeData, batch: int, device) -> dict[str, float]:
    """Share of clips with each attribute right, and with all right (``"all"``)."""
    net.eval()
    preds = []
    with torch.no_grad():
        for start in range(0, len(data), batch):
            chunk = slice(start, start + batch)
            _, logits = net(data.motion[chunk].to(device), data.appearance[chunk].to(device))
            preds.append(torch.stack([logits[n].argmax(-1) for n in ATTRIBUTE_NAMES], dim=1).cpu())
    correct = torch.cat(preds) == data.targets
    out = {name: float(correct[:, i].float().mean()) for i, name in enumerate(ATTRIBUTE_NAMES)}
    out["all"] = float(correct.all(1).float().mean())
    return out


def train_probe(config: ProbeConfig, data_config: SyntheticShapesConfig, device: torch.device,
                workdir) -> tuple[ProbeNet, dict]:
    """Train the probe (shared trainer, resumable from ``workdir``); measure it on held-out val clips."""
    device = torch.device(device)
    began = time.perf_counter()
    with cpu_threads(config.cpu_threads, torch.device("cpu")):  # rendering is CPU work whatever the device
        data = _render(SyntheticShapes(data_config.model_copy(update={"train_clips": config.train_clips}), "train"),
                       config.train_clips, config)
        heldout = _render(SyntheticShapes(data_config.model_copy(update={"val_clips": config.heldout_clips}), "val"),
                          config.heldout_clips, config)
    render_seconds = time.perf_counter() - began
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            cpu_threads(config.cpu_threads, device):
        torch.manual_seed(config.seed)
        net = ProbeNet(config.input_frames, config.width, config.appearance_width, config.feature_dim).to(device)
        with local_training():  # under torchrun only rank 0 evaluates: it trains the probe alone
            result = train(_ProbeTask(net), data, config.train, workdir=workdir, device=device, seed=config.seed,
                           progress=sys.stderr.isatty())
        summary = {"steps": result["steps"], "final": result["final"],
                   "train_accuracy": _accuracy(net, _ProbeData(data.motion[:512], data.appearance[:512],
                                                               data.targets[:512]), config.batch_clips, device),
                   "heldout_accuracy": _accuracy(net, heldout, config.batch_clips, device)}
    summary.update({"render_seconds": round(render_seconds, 2), "train_seconds": result["seconds"],
                    "seconds": round(time.perf_counter() - began, 2),
                    "train_data": f"synthetic-shapes train stream (seed {data_config.seed}) clips "
                                  f"0..{config.train_clips - 1}",
                    "heldout": f"synthetic-shapes val clips 0..{config.heldout_clips - 1} (seed {data_config.seed})",
                    "loop": "hitvideo_bench.training.train"})
    return net.eval(), summary
