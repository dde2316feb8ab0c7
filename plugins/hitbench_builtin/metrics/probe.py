"""Offline generation metrics for the built-in synthetic data, from a small video probe the suite trains.

The probe classifies the synthetic-shapes attributes (shape, colour, size, motion, background;
:data:`ATTRIBUTES`) with two small conv streams:

- a *motion* stream: the clip resampled to ``input_frames`` x ``input_size``^2 (8 x 32^2 by default),
  its frames stacked as channels (early fusion) with x/y coordinate channels, so the first layer already
  sees where the shape is in every frame and therefore which way it moves;
- an *appearance* stream: the middle frame at ``appearance_size``^2 (64^2), where a small circle, square
  and triangle still differ by a few pixels (at 32^2 the shape head stalls near 90%).

It learns from its own deterministic sample of ``train_clips`` synthetic-shapes clips (the train split's
random stream, rendered at the clip shape being evaluated, so far more clips than a recipe's train split
and never a val/test clip), with label-preserving augmentation (time reversal swaps left/right and
up/down, a horizontal flip swaps left/right), through the suite's shared trainer
(:func:`hitvideo_bench.training.train`: deterministic order, checkpoints, resume). It is cached by the hash
of its config, clip shape and data like any trained component, so it trains once.

- ``probe-fd``: Fréchet distance of the probe's penultimate features between ``pred`` and real clips
  (FVD-style, but needs no download).
- ``prompt-acc``: share of clips whose predicted attributes match those their prompt asks for, per
  attribute and all at once.

Both report ``probe_acc``: the probe's own accuracy (all attributes right) on held-out real clips of
the val split, so a reader can judge how far the numbers can be trusted (target >= 95%).

CPU threads: rendering, resampling and this small network are dominated by many small tensor ops; on a
busy 2-core machine two intra-op threads made them 10-100x *slower* than one (measured: 150 ms vs 1.5 ms
per rendered clip, 714 ms vs 36 ms per training step), so on CPU they run with ``cpu_threads`` threads
(default 1; the previous setting is restored afterwards).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from hitvideo_bench import cache
from hitvideo_bench.components import BenchMetric, ComponentConfig
from hitvideo_bench.errors import BadInput, ShapeError
from hitvideo_bench.io import atomic_path
from hitvideo_bench.training import TrainConfig, TrainingTask, local_training, train

from ..datasets.synthetic import ATTRIBUTES, SyntheticShapes, SyntheticShapesConfig, parse_caption
from .frechet import FrechetFeatureMetric

PROBE_VERSION = 2
ATTRIBUTE_NAMES = tuple(ATTRIBUTES)
_MOTION = ATTRIBUTE_NAMES.index("motion")
_MOTIONS = ATTRIBUTES["motion"]
# label maps of the augmentations: time reversal swaps left/right and up/down, a horizontal flip left/right
_TIME_REVERSED = torch.tensor([_MOTIONS.index(m) for m in
                               [{"left": "right", "right": "left", "up": "down", "down": "up"}.get(m, m)
                                for m in _MOTIONS]])
_MIRRORED = torch.tensor([_MOTIONS.index({"left": "right", "right": "left"}.get(m, m)) for m in _MOTIONS])


def _probe_train_default() -> TrainConfig:
    return TrainConfig(steps=400, batch_size=64, lr=3e-3, weight_decay=1e-4, checkpoint_every=100, log_every=50)


class ProbeConfig(ComponentConfig):
    """How the probe is built and trained (shared by probe-fd and prompt-acc: same config, same probe)."""

    input_frames: int = Field(8, ge=2, description="motion stream: clips are resampled to this many frames")
    input_size: int = Field(32, ge=16, description="motion stream: frames are resampled to this height and width")
    appearance_size: int = Field(64, ge=16, description="appearance stream: the middle frame at this size")
    width: int = Field(32, ge=4, description="channels of the motion stream's first conv (doubles twice)")
    appearance_width: int = Field(16, ge=4, description="channels of the appearance stream's first conv")
    feature_dim: int = Field(64, ge=8, description="penultimate feature size (used by probe-fd)")
    train_clips: int = Field(4096, ge=16, description="synthetic-shapes train-stream clips the probe learns from")
    heldout_clips: int = Field(512, ge=8, description="val clips its reported accuracy is measured on")
    data_seed: int = Field(0, description="seed of the synthetic-shapes data the probe is trained on")
    seed: int = 0
    train: TrainConfig = Field(default_factory=_probe_train_default)
    batch_clips: int = Field(64, ge=1, description="clips per forward pass when measuring")
    cpu_threads: int | None = Field(1, ge=1, description="intra-op threads on CPU (null: leave torch's setting)")
    min_stable_clips: int = Field(128, ge=2, description="probe-fd: fewer clips -> a warning with the value")


def _block(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ProbeNet(nn.Module):
    """Two conv streams (motion: early-fused frames + coordinates; appearance: middle frame), global
    mean+max pooling, a feature layer (penultimate features) and one linear head per attribute."""

    def __init__(self, frames: int = 8, width: int = 32, appearance_width: int = 16, feature_dim: int = 64):
        super().__init__()
        w, a = width, appearance_width
        self.frames = frames
        self.motion = nn.Sequential(*_block(3 * frames + 2, w, 2), *_block(w, 2 * w, 2),
                                    *_block(2 * w, 2 * w, 2), *_block(2 * w, 4 * w, 2))
        self.appearance = nn.Sequential(*_block(3, a, 2), *_block(a, 2 * a, 2),
                                        *_block(2 * a, 4 * a, 2), *_block(4 * a, 4 * a, 1))
        self.feature = nn.Linear(8 * w + 8 * a, feature_dim)
        self.heads = nn.ModuleDict({name: nn.Linear(feature_dim, len(values))
                                    for name, values in ATTRIBUTES.items()})

    def features(self, motion: torch.Tensor, appearance: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, feature_dim)`` of probe inputs (see :func:`probe_inputs`), in [0, 1]."""
        B, C, T, H, W = motion.shape
        if C != 3 or T != self.frames:
            raise ShapeError(f"probe: motion input must be (B, 3, {self.frames}, H, W), got {tuple(motion.shape)}")
        stacked = (motion * 2 - 1).reshape(B, C * T, H, W)
        ys = torch.linspace(-1, 1, H, device=motion.device, dtype=motion.dtype).view(1, 1, H, 1).expand(B, 1, H, W)
        xs = torch.linspace(-1, 1, W, device=motion.device, dtype=motion.dtype).view(1, 1, 1, W).expand(B, 1, H, W)
        m = self.motion(torch.cat([stacked, xs, ys], dim=1))
        a = self.appearance(appearance * 2 - 1)
        pooled = torch.cat([m.mean((2, 3)), m.amax((2, 3)), a.mean((2, 3)), a.amax((2, 3))], dim=1)
        return self.feature(pooled)

    def forward(self, motion: torch.Tensor, appearance: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        feats = self.features(motion, appearance)
        hidden = F.relu(feats)
        return feats, {name: head(hidden) for name, head in self.heads.items()}


def _resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resample the trailing dims of ``x`` (``(B,C,*dims)``, 2 or 3 dims) to ``size``: box average when
    shrinking by integer factors, area when shrinking otherwise, (bi/tri)linear where growing."""
    src = tuple(x.shape[2:])
    if src == tuple(size):
        return x
    if all(s >= d and s % d == 0 for s, d in zip(src, size)):
        pool = F.avg_pool3d if len(size) == 3 else F.avg_pool2d
        kernel = tuple(s // d for s, d in zip(src, size))
        return pool(x, kernel, kernel)
    down = tuple(min(s, d) for s, d in zip(src, size))
    if down != src:
        x = F.interpolate(x, size=down, mode="area")
    if down != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="trilinear" if len(size) == 3 else "bilinear",
                          align_corners=False)
    return x


def resample(video: torch.Tensor, frames: int, size: int) -> torch.Tensor:
    """``(B,3,T,H,W)`` -> ``(B,3,frames,size,size)`` float32 (box/area average down, linear up)."""
    return _resize(video.float(), (frames, size, size))


def probe_inputs(video: torch.Tensor, config: ProbeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The probe's two inputs of clips ``(B,3,T,H,W)`` in [0,1] of any shape: the resampled clip and its
    middle frame at ``appearance_size``."""
    if video.ndim != 5 or video.shape[1] != 3:
        raise ShapeError(f"probe: clips must be (B, 3, T, H, W), got {tuple(video.shape)}")
    video = video.float()
    middle = video[:, :, video.shape[2] // 2]
    return (resample(video, config.input_frames, config.input_size),
            _resize(middle, (config.appearance_size, config.appearance_size)))


def attribute_targets(attrs: list[dict[str, str]]) -> torch.Tensor:
    """``(B, n_attributes)`` class indices of attribute dicts."""
    return torch.tensor([[ATTRIBUTES[n].index(a[n]) for n in ATTRIBUTE_NAMES] for a in attrs], dtype=torch.long)


@contextlib.contextmanager
def cpu_threads(count: int | None, device: torch.device) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads when working on CPU (see the module docstring)."""
    previous = torch.get_num_threads()
    change = count is not None and torch.device(device).type == "cpu" and count != previous
    if change:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(previous)


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

    def _run(self, video: torch.Tensor, fn) -> torch.Tensor:
        device = next(self.net.parameters()).device
        out = []
        with torch.no_grad(), cpu_threads(self.config.cpu_threads, device):
            for start in range(0, video.shape[0], self.config.batch_clips):
                motion, appearance = probe_inputs(video[start:start + self.config.batch_clips].to(device),
                                                  self.config)
                out.append(fn(motion, appearance))
        return torch.cat(out)

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, feature_dim)`` of clips ``(B,3,T,H,W)``, on ``video``'s device."""
        return self._run(video, self.net.features).to(video.device)

    def predict(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, n_attributes)`` predicted class indices (on CPU)."""
        def classes(motion, appearance):
            _, logits = self.net(motion, appearance)
            return torch.stack([logits[n].argmax(-1) for n in ATTRIBUTE_NAMES], dim=1).cpu()
        return self._run(video, classes)


# ------------------------------------------------------------------------------------------ training


class _ProbeData(torch.utils.data.Dataset):
    """Probe inputs and attribute targets, precomputed once (rendering is the expensive part)."""

    def __init__(self, motion: torch.Tensor, appearance: torch.Tensor, targets: torch.Tensor):
        self.motion, self.appearance, self.targets = motion, appearance, targets

    def __len__(self) -> int:
        return self.targets.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.motion[index], self.appearance[index], self.targets[index]


class _ProbeTask(TrainingTask):
    """The probe's training task for :func:`hitvideo_bench.training.train`: one cross-entropy per
    attribute head, summed, with random time reversal and horizontal flips (labels remapped)."""

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


# ------------------------------------------------------------------------------------------ cache


_LOADED: dict[str, Probe] = {}


def probe_identity(config: ProbeConfig, data_config: SyntheticShapesConfig) -> dict[str, Any]:
    """What the cached probe depends on: its version, training config and the data it learns from."""
    train_fields = config.model_dump(exclude={"preset", "batch_clips", "min_stable_clips", "cpu_threads"})
    return {"kind": "probe", "version": PROBE_VERSION, "config": train_fields,
            "data": {"class": "SyntheticShapes", "config": data_config.model_dump(exclude={"preset"})}}


def probe_data_config(config: ProbeConfig, clip_shape: tuple[int, int, int]) -> SyntheticShapesConfig:
    """The synthetic-shapes config the probe for clips of ``clip_shape`` (T, H, W) learns from."""
    T, H, W = clip_shape
    if min(T, H, W) < 1 or min(H, W) < 8:
        raise ShapeError(f"probe: clip shape (T, H, W) = {clip_shape} is too small (H, W >= 8 needed)")
    return SyntheticShapesConfig(frames=T, height=H, width=W, seed=config.data_seed)


def probe_folder(config: ProbeConfig, clip_shape: tuple[int, int, int]):
    """The cache folder of the probe for clips of ``clip_shape``."""
    return cache.component_dir("probe", "synthetic-attributes",
                               probe_identity(config, probe_data_config(config, clip_shape)))


def obtain_probe(config: ProbeConfig, clip_shape: tuple[int, int, int], device: torch.device) -> Probe:
    """The probe for clips of ``clip_shape`` (T, H, W): from memory, from the cache, or trained now and cached."""
    from safetensors.torch import load_file, save_file

    data_config = probe_data_config(config, tuple(int(s) for s in clip_shape))
    identity = probe_identity(config, data_config)
    folder = cache.component_dir("probe", "synthetic-attributes", identity)
    key = str(folder)
    if key not in _LOADED:
        weights_path = folder / "model.safetensors"

        def load() -> ProbeNet:
            with torch.device("meta"):  # the cached weights replace the initial ones (and no RNG is drawn)
                net = ProbeNet(config.input_frames, config.width, config.appearance_width, config.feature_dim)
            net.load_state_dict(load_file(str(weights_path)), assign=True)
            return net

        def train() -> tuple[ProbeNet, dict[str, Any]]:
            net, summary = train_probe(config, data_config, device, folder / "train")
            return net, {**summary, "identity": identity}

        def save(net: ProbeNet, path) -> None:
            with atomic_path(weights_path) as tmp:
                save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp))

        with local_training():  # under torchrun only rank 0 evaluates: it obtains the probe alone
            net, summary, trained = cache.cached_component(folder, load=load, train=train, save=save)
        if trained:
            shutil.rmtree(folder / "train", ignore_errors=True)  # the resumable checkpoint is no longer needed
        _LOADED[key] = Probe(net.eval(), config, summary)
    probe = _LOADED[key]
    probe.net.to(device)
    return probe


# ------------------------------------------------------------------------------------------ metrics


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
        c = self.config
        return {"probe": f"synthetic-attributes v{PROBE_VERSION} (two-stream conv, trained by the suite)",
                "probe_heldout_accuracy": s["heldout_accuracy"], "probe_heldout": s.get("heldout"),
                "probe_input": f"{c.input_frames}x{c.input_size}x{c.input_size} clip + "
                               f"{c.appearance_size}x{c.appearance_size} middle frame"}

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

    def sub_higher_is_better(self, key):
        return True if key == "probe_acc" else None  # real_clips / gen_clips are counts

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), **self.probe_provenance()}


class PromptAccuracy(_ProbeUser, BenchMetric):
    """Share of clips whose probe-predicted attributes match their prompt: all at once (""), per attribute, and
    the mean of the per-attribute shares (``attributes``), which moves long before all five match at once."""

    Config = ProbeConfig
    inputs = ("pred", "captions")
    stages = ("generation",)
    higher_is_better = True
    per_clip = True  # each clip's prompt matched or not, overall and per attribute: paired claims between variants

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.add_state("correct", torch.zeros(len(ATTRIBUTE_NAMES), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("all_correct", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, captions: list[str]) -> None:
        if len(captions) != pred.shape[0]:
            raise BadInput(f"prompt-acc: {pred.shape[0]} clips but {len(captions)} captions")
        wanted = []
        for caption in captions:
            try:
                wanted.append(parse_caption(caption))
            except BadInput as exc:
                raise BadInput(f"prompt-acc works on synthetic-shapes prompts only "
                               f"('a <size> <colour> <shape> moves <direction>|stays still on a <background> "
                               f"background'): {exc}") from exc
        predicted = self.probe_for(pred).predict(pred)
        match = predicted == attribute_targets(wanted)
        self.correct += match.sum(0).double().to(self.correct.device)
        self.all_correct += match.all(1).sum().double().to(self.correct.device)
        self.total += pred.shape[0]

    def compute(self) -> dict[str, Any]:
        out: dict[str, Any] = {"": self.all_correct / self.total}
        for i, name in enumerate(ATTRIBUTE_NAMES):
            out[name] = self.correct[i] / self.total
        out["attributes"] = self.correct.mean() / self.total
        out["probe_acc"] = self.probe_acc()
        return out

    def sub_higher_is_better(self, key):
        return True  # every share, and the probe's own accuracy

    def provenance(self) -> dict[str, Any]:
        return {"clips": int(self.total), "attributes": list(ATTRIBUTE_NAMES), **self.probe_provenance()}


__all__ = ["ProbeFD", "PromptAccuracy", "ProbeConfig", "ProbeNet", "Probe", "obtain_probe", "train_probe",
           "probe_folder", "probe_inputs", "resample"]
