"""What a run's stages share: the run's context, the tidy row every stage returns, and the evaluated clips in
batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..catalog import Catalog
from ..components import VideoDataset
from ..faults import RunLog
from ..recipe import ResolvedVariant
from ..training import Execution

Row = dict[str, Any]


@dataclass
class RunContext:
    """Everything a run's stages share."""

    catalog: Catalog
    variant: ResolvedVariant
    seed: int
    device: torch.device
    run_dir: Path
    progress: bool = True
    use_cache: bool = True
    summary: dict[str, Any] = field(default_factory=dict)
    #: under torchrun, processes other than rank 0 only take part in training
    train_only: bool = False
    #: per-clip values of the metrics that have them: ``{metric, clip, value}``
    per_clip: list[dict[str, Any]] = field(default_factory=list)
    #: the run's log (where a crash's traceback goes); None: no log, e.g. a stage called on its own
    log: RunLog | None = None
    #: how every training of the run executes (the recipe's ``run:``): not part of any component's identity
    execution: Execution = field(default_factory=Execution)

    def where(self, text: str) -> None:
        """Note in the run's log what the run does next."""
        if self.log is not None:
            self.log.where(text)

    def create(self, field_name: str, **deps: Any) -> Any:
        """The variant's component of ``field_name`` (``tokenizer``, ``dataset``, ...), from the config the recipe's
        resolution validated."""
        ref = getattr(self.variant.spec, field_name)
        kind = "dataset" if field_name in ("dataset", "eval_dataset") else field_name
        config = self.variant.configs.get(field_name)
        if config is None:
            return self.catalog.create(kind, ref.name, preset=ref.preset, overrides=ref.config, **deps)
        return self.catalog.build(kind, ref.name, config, **deps)

    def train_dataset(self) -> VideoDataset:
        return self.create("dataset", split=self.variant.spec.dataset.train_split)

    def eval_dataset(self) -> VideoDataset:
        """The clips measured: the eval split of ``eval_dataset`` if the variant names one, else of ``dataset``."""
        field_name = "eval_dataset" if self.variant.spec.eval_dataset is not None else "dataset"
        return self.create(field_name, split=self.variant.spec.dataset.eval_split)


# ------------------------------------------------------------------------------------------- data


def clip_batches(dataset: VideoDataset, count: int, batch_size: int, device: torch.device,
                 progress: bool = False, desc: str = "") -> Iterator[dict[str, Any]]:
    """The first ``count`` clips of ``dataset`` in batches: ``{video, captions, attrs}`` on ``device``."""
    from tqdm.auto import tqdm

    count = min(count, len(dataset))
    bar = tqdm(total=count, desc=desc, unit="clip", disable=not progress, leave=False)
    for start in range(0, count, batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, count))]
        bar.update(len(items))
        yield {"video": torch.stack([it["video"] for it in items]).to(device),
               "captions": [it["caption"] for it in items],
               "attrs": [it.get("attrs", {}) for it in items]}
    bar.close()


def row(metric: str, value: float, higher_is_better: bool | None = None, *, step: int | None = None,
        text: str = "", provenance: str = "", timing: bool = False) -> Row:
    """One tidy result row (the runner adds recipe, variant, seed).

    ``timing`` marks wall-clock measurements: they depend on the machine and its load, so the runner
    keeps them in ``timings.csv``, apart from the reproducible ``metrics.csv``.
    """
    return {"metric": metric, "value": value, "higher_is_better": higher_is_better,
            "step": step, "text": text, "provenance": provenance, "timing": timing}


