"""The probe metrics: ``probe-fd`` (:class:`ProbeFD`, Fréchet distance of probe features) and ``prompt-acc``
(:class:`PromptAccuracy`, share of clips whose predicted attributes match their prompt), both reporting the
probe's own held-out accuracy as ``probe_acc``."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from hitvideo_bench.api import BadInput, BenchMetric

from ...datasets.synthetic import parse_caption
from ..frechet import FrechetFeatureMetric
from .cache import obtain_probe
from .config import ATTRIBUTE_NAMES, PROBE_VERSION, ProbeConfig
from .inputs import attribute_targets
from .model import Probe


class _ProbeUser:
    """Shared by the probe metrics: the probe is obtained on the first update, at the clips' shape, and kept by
    this metric instance (another instance loads it again from the cache, which is cheap)."""

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

