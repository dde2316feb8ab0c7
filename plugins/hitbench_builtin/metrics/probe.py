"""Offline generation metrics for the built-in synthetic data, from a small video probe the suite trains.

The probe is a 3D-conv classifier of the synthetic-shapes attributes (shape, colour, size, motion,
background; :data:`ATTRIBUTES`). It is trained on the synthetic-shapes train split rendered at the clip
shape being evaluated (taken from the first clips a metric sees), with every clip resampled to the
probe's working shape (``input_frames`` x ``input_size``^2; identity at the tiny scale). It is cached by
the hash of its config, clip shape and data like any trained component, so it trains once.

- ``probe-fd``: Fréchet distance of the probe's penultimate features between ``pred`` and real clips
  (FVD-style, but needs no download).
- ``prompt-acc``: share of clips whose predicted attributes match those their prompt asks for, per
  attribute and all at once.

Both report ``probe_acc``: the probe's own accuracy (all attributes right) on held-out real clips of
the val split, so a reader can judge how far the numbers can be trusted (target >= 95%).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from hitvideo_bench import cache
from hitvideo_bench.components import BenchMetric, ComponentConfig
from hitvideo_bench.errors import BadInput

from ..datasets.synthetic import ATTRIBUTES, SyntheticShapes, SyntheticShapesConfig, parse_caption
from .frechet import FrechetFeatureMetric

PROBE_VERSION = 1
ATTRIBUTE_NAMES = tuple(ATTRIBUTES)


class ProbeConfig(ComponentConfig):
    """How the probe is built and trained (shared by probe-fd and prompt-acc: same config, same probe)."""

    input_frames: int = Field(8, ge=4, description="clips are resampled to this many frames for the probe")
    input_size: int = Field(64, ge=16, description="clips are resampled to this height and width")
    width: int = Field(16, ge=4, description="channels of the first conv block (doubles twice)")
    feature_dim: int = Field(64, ge=8, description="penultimate feature size (used by probe-fd)")
    train_clips: int = Field(512, ge=16, description="synthetic-shapes train clips the probe learns from")
    heldout_clips: int = Field(128, ge=8, description="val clips its reported accuracy is measured on")
    data_seed: int = Field(0, description="seed of the synthetic-shapes data the probe is trained on")
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-3, gt=0)
    seed: int = 0
    batch_clips: int = Field(32, ge=1, description="clips per forward pass when measuring")
    min_stable_clips: int = Field(128, ge=2, description="probe-fd: fewer clips -> a warning with the value")


class ProbeNet(nn.Module):
    """A factorised (2+1)D conv classifier: per-frame 2D convs over the frame, its difference to the next
    frame (the motion cue) and x/y coordinate channels, average+max pooled per frame, then temporal 1D convs, a feature layer
    and one head per attribute. Factorised because full 3D convs train far too slowly on a CPU."""

    def __init__(self, width: int = 16, feature_dim: int = 64):
        super().__init__()
        w = width
        self.spatial = nn.Sequential(
            nn.Conv2d(8, w, 5, 2, 2), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, 2, 1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 2 * w, 3, 2, 1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 2 * w, 3, 1, 1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True))
        self.temporal = nn.Sequential(
            nn.Conv1d(4 * w, 4 * w, 3, 1, 1), nn.BatchNorm1d(4 * w), nn.ReLU(inplace=True),
            nn.Conv1d(4 * w, 4 * w, 3, 2, 1), nn.BatchNorm1d(4 * w), nn.ReLU(inplace=True))
        self.feature = nn.Linear(8 * w, feature_dim)
        self.heads = nn.ModuleDict({name: nn.Linear(feature_dim, len(values))
                                    for name, values in ATTRIBUTES.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, feature_dim)`` of clips ``(B,3,T,H,W)`` in [0, 1] (probe shape)."""
        B, C, T, H, W = x.shape
        x = x * 2 - 1
        diff = torch.cat([x[:, :, 1:] - x[:, :, :-1], torch.zeros_like(x[:, :, :1])], dim=2)  # motion cue
        frames = torch.cat([x, diff], dim=1).permute(0, 2, 1, 3, 4).reshape(B * T, 2 * C, H, W)
        ys = torch.linspace(-1, 1, H, device=x.device, dtype=x.dtype).view(1, 1, H, 1).expand(B * T, 1, H, W)
        xs = torch.linspace(-1, 1, W, device=x.device, dtype=x.dtype).view(1, 1, 1, W).expand(B * T, 1, H, W)
        maps = self.spatial(torch.cat([frames, xs, ys], dim=1))
        per_frame = torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)  # (B*T, 4w)
        seq = self.temporal(per_frame.view(B, T, -1).transpose(1, 2))  # (B, 4w, T')
        return self.feature(torch.cat([seq.mean(2), seq.amax(2)], dim=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        feats = self.features(x)
        hidden = F.relu(feats)
        return feats, {name: head(hidden) for name, head in self.heads.items()}


def resample(video: torch.Tensor, frames: int, size: int) -> torch.Tensor:
    """``(B,3,T,H,W)`` -> ``(B,3,frames,size,size)`` by trilinear resampling (identity if already there)."""
    if tuple(video.shape[2:]) == (frames, size, size):
        return video.float()
    return F.interpolate(video.float(), size=(frames, size, size), mode="trilinear", align_corners=False)


def attribute_targets(attrs: list[dict[str, str]]) -> torch.Tensor:
    """``(B, n_attributes)`` class indices of attribute dicts."""
    return torch.tensor([[ATTRIBUTES[n].index(a[n]) for n in ATTRIBUTE_NAMES] for a in attrs], dtype=torch.long)


class Probe:
    """A trained probe: its network, its working shape and the summary of its training (held-out accuracy)."""

    def __init__(self, net: ProbeNet, config: ProbeConfig, summary: dict[str, Any]):
        self.net = net.eval()
        self.config = config
        self.summary = summary

    @property
    def accuracy(self) -> float:
        """Held-out accuracy with every attribute right."""
        return float(self.summary["heldout_accuracy"]["all"])

    def _batches(self, video: torch.Tensor):
        device = next(self.net.parameters()).device
        for start in range(0, video.shape[0], self.config.batch_clips):
            chunk = video[start:start + self.config.batch_clips].to(device)
            yield resample(chunk, self.config.input_frames, self.config.input_size)

    @torch.no_grad()
    def features(self, video: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.net.features(x) for x in self._batches(video)]).to(video.device)

    @torch.no_grad()
    def predict(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, n_attributes)`` predicted class indices."""
        out = []
        for x in self._batches(video):
            _, logits = self.net(x)
            out.append(torch.stack([logits[n].argmax(-1) for n in ATTRIBUTE_NAMES], dim=1))
        return torch.cat(out).cpu()


def _render(dataset: SyntheticShapes, count: int, config: ProbeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` clips of ``dataset`` at the probe's working shape, and their attribute indices."""
    videos, attrs = [], []
    for start in range(0, count, 64):
        items = [dataset[i] for i in range(start, min(start + 64, count))]
        videos.append(resample(torch.stack([it["video"] for it in items]), config.input_frames, config.input_size))
        attrs += [it["attrs"] for it in items]
    return torch.cat(videos), attribute_targets(attrs)


def _accuracy(net: ProbeNet, videos: torch.Tensor, targets: torch.Tensor, batch: int, device) -> dict[str, float]:
    net.eval()
    preds = []
    with torch.no_grad():
        for start in range(0, videos.shape[0], batch):
            _, logits = net(videos[start:start + batch].to(device))
            preds.append(torch.stack([logits[n].argmax(-1) for n in ATTRIBUTE_NAMES], dim=1).cpu())
    correct = torch.cat(preds) == targets
    out = {name: float(correct[:, i].float().mean()) for i, name in enumerate(ATTRIBUTE_NAMES)}
    out["all"] = float(correct.all(1).float().mean())
    return out


def train_probe(config: ProbeConfig, data_config: SyntheticShapesConfig, device: torch.device) -> tuple[ProbeNet, dict]:
    """Train the probe on the train split (deterministic for a given seed); measure it on held-out val clips.

    A minimal loop (AdamW, cosine LR, fixed per-epoch permutations from ``config.seed``): the probe is
    small and trains in seconds at the tiny clip shape.
    """
    start_time = time.perf_counter()
    train = SyntheticShapes(data_config.model_copy(update={"train_clips": config.train_clips}), "train")
    heldout = SyntheticShapes(data_config.model_copy(update={"val_clips": config.heldout_clips}), "val")
    videos, targets = _render(train, config.train_clips, config)
    val_videos, val_targets = _render(heldout, config.heldout_clips, config)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        net = ProbeNet(config.width, config.feature_dim).to(device)
        optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
        steps_per_epoch = math.ceil(config.train_clips / config.batch_size)
        total = config.epochs * steps_per_epoch
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        order = torch.Generator().manual_seed(config.seed)
        net.train()
        loss = torch.zeros(())
        for _ in range(config.epochs):
            perm = torch.randperm(config.train_clips, generator=order)
            for start in range(0, config.train_clips, config.batch_size):
                idx = perm[start:start + config.batch_size]
                _, logits = net(videos[idx].to(device))
                y = targets[idx].to(device)
                loss = sum(F.cross_entropy(logits[n], y[:, i]) for i, n in enumerate(ATTRIBUTE_NAMES))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    summary = {"steps": total, "final_loss": float(loss.detach()), "seconds": time.perf_counter() - start_time,
               "train_accuracy": _accuracy(net, videos, targets, config.batch_clips, device),
               "heldout_accuracy": _accuracy(net, val_videos, val_targets, config.batch_clips, device),
               "heldout": f"synthetic-shapes val clips 0..{config.heldout_clips - 1}",
               "loop": "minimal deterministic AdamW loop (probe.train_probe)"}
    return net.eval(), summary


_LOADED: dict[str, Probe] = {}


def probe_identity(config: ProbeConfig, data_config: SyntheticShapesConfig) -> dict[str, Any]:
    """What the cached probe depends on: its version, training config and the data it learns from."""
    train_fields = config.model_dump(exclude={"preset", "batch_clips", "min_stable_clips"})
    return {"kind": "probe", "version": PROBE_VERSION, "config": train_fields,
            "data": {"class": "SyntheticShapes", "config": data_config.model_dump(exclude={"preset"})}}


def obtain_probe(config: ProbeConfig, clip_shape: tuple[int, int, int], device: torch.device) -> Probe:
    """The probe for clips of ``clip_shape`` (T, H, W): from memory, from the cache, or trained now and cached."""
    from safetensors.torch import load_file, save_file

    T, H, W = clip_shape
    data_config = SyntheticShapesConfig(frames=T, height=H, width=W, seed=config.data_seed)
    identity = probe_identity(config, data_config)
    folder = cache.component_dir("probe", "synthetic-attributes", identity)
    key = str(folder)
    if key not in _LOADED:
        weights_path = folder / "model.safetensors"
        if cache.is_complete(folder) and weights_path.is_file():
            net = ProbeNet(config.width, config.feature_dim)
            net.load_state_dict(load_file(str(weights_path)))
            summary = cache.read_summary(folder)
        else:
            net, summary = train_probe(config, data_config, device)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / "model.safetensors.part"
            save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp))
            tmp.replace(weights_path)
            cache.mark_complete(folder, {**summary, "identity": identity})
        _LOADED[key] = Probe(net.eval(), config, summary)
    probe = _LOADED[key]
    probe.net.to(device)
    return probe


class _ProbeUser:
    """Shared by the probe metrics: the probe is obtained on the first update, at the clips' shape."""

    config: ProbeConfig
    _probe: Probe | None = None

    def probe_for(self, video: torch.Tensor) -> Probe:
        if self._probe is None:
            self._probe = obtain_probe(self.config, tuple(video.shape[2:]), video.device)
            if self._probe.accuracy < 0.95:
                warnings.warn(f"probe held-out accuracy {self._probe.accuracy:.3f} is below the 0.95 target; "
                              f"probe-fd / prompt-acc are less trustworthy", stacklevel=3)
        return self._probe

    def probe_provenance(self) -> dict[str, Any]:
        if self._probe is None:
            return {"probe": "not trained yet (no clips seen)"}
        s = self._probe.summary
        return {"probe": f"synthetic-attributes v{PROBE_VERSION} (3D-conv, trained by the suite)",
                "probe_heldout_accuracy": s["heldout_accuracy"], "probe_heldout": s.get("heldout"),
                "probe_input": f"{self.config.input_frames}x{self.config.input_size}x{self.config.input_size}"}

    def probe_acc(self) -> torch.Tensor:
        return torch.tensor(self._probe.accuracy if self._probe else math.nan, dtype=torch.float64)


class ProbeFD(_ProbeUser, FrechetFeatureMetric):
    """Fréchet distance of probe features between ``pred`` and real clips; also ``probe_acc``."""

    Config = ProbeConfig
    stages = ("generation", "reconstruction")

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.min_stable_clips = self.config.min_stable_clips

    def features(self, video: torch.Tensor) -> torch.Tensor:
        return self.probe_for(video).features(video)

    def compute(self) -> dict[str, Any]:
        return {**super().compute(), "probe_acc": self.probe_acc()}

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), **self.probe_provenance()}


class PromptAccuracy(_ProbeUser, BenchMetric):
    """Share of clips whose probe-predicted attributes match their prompt: all at once ("") and per attribute."""

    Config = ProbeConfig
    inputs = ("pred", "captions")
    stages = ("generation",)
    higher_is_better = True

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.add_state("correct", torch.zeros(len(ATTRIBUTE_NAMES), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("all_correct", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, captions: list[str]) -> None:
        if len(captions) != pred.shape[0]:
            raise ValueError(f"prompt-acc: {pred.shape[0]} clips but {len(captions)} captions")
        wanted = []
        for caption in captions:
            try:
                wanted.append(parse_caption(caption))
            except BadInput as exc:
                raise BadInput(f"prompt-acc works on synthetic-shapes prompts only: {exc}") from exc
        predicted = self.probe_for(pred).predict(pred)
        match = predicted == attribute_targets(wanted)
        self.correct += match.sum(0).double().to(self.correct.device)
        self.all_correct += match.all(1).sum().double().to(self.correct.device)
        self.total += pred.shape[0]

    def compute(self) -> dict[str, Any]:
        out: dict[str, Any] = {"": self.all_correct / self.total}
        for i, name in enumerate(ATTRIBUTE_NAMES):
            out[name] = self.correct[i] / self.total
        out["probe_acc"] = self.probe_acc()
        return out

    def provenance(self) -> dict[str, Any]:
        return {"clips": int(self.total), "attributes": list(ATTRIBUTE_NAMES), **self.probe_provenance()}


__all__ = ["ProbeFD", "PromptAccuracy", "ProbeConfig", "ProbeNet", "Probe", "obtain_probe", "train_probe",
           "resample"]
