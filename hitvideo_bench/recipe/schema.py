"""The typed recipe schema. Unknown fields are errors (a typo must never become a default).

A recipe names components only by catalog name; component configs are validated against each
component's own ``Config`` when the recipe is resolved (see :mod:`hitvideo_bench.recipe.resolve`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..components import Preset
from ..training import Execution

RECIPE_VERSION = 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ComponentRef(Strict):
    """A component by catalog name; ``preset`` defaults to the recipe's ``scale``."""

    name: str
    preset: Preset | None = None
    config: dict[str, Any] = Field(default_factory=dict)


class DatasetRef(ComponentRef):
    """The data of a variant: which splits train and evaluate, and how many clips are evaluated."""

    train_split: str = "train"
    eval_split: str = "val"
    eval_clips: int = Field(8, ge=1)


class GenerationEval(Strict):
    """How generated clips are sampled and scored."""

    metrics: list[str] = Field(default_factory=list)
    num_samples: int | None = Field(None, ge=1, description="default: the dataset's eval_clips")
    cfg_scale: float = Field(3.0, ge=0)
    temperature: float = Field(1.0, gt=0)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    nll: bool = True
    sample_sheet: bool = True


class EvaluateSpec(Strict):
    """What is measured for a variant."""

    batch_size: int = Field(4, ge=1)
    compression: bool = False
    reconstruction: list[str] = Field(default_factory=list)
    layers: list[int] | Literal["all"] = Field(default_factory=list)
    figures: bool = Field(True, description="diagnostic figures a component offers (e.g. redundancy maps)")
    curve: list[str] = Field(default_factory=list)
    curve_clips: int = Field(4, ge=1)
    generation: GenerationEval | None = None
    metric_config: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("layers")
    @classmethod
    def _positive(cls, v):
        if isinstance(v, list) and any(k < 1 for k in v):
            raise ValueError("layer counts must be >= 1")
        return v


class Variant(Strict):
    """One thing to measure: a tokenizer or a codec, optionally a generator over the tokenizer."""

    label: str | None = None
    tokenizer: ComponentRef | None = None
    codec: ComponentRef | None = None
    generator: ComponentRef | None = None
    dataset: DatasetRef
    eval_dataset: ComponentRef | None = Field(
        None, description="evaluate on another dataset (its eval split) than the one trained on")
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)

    @model_validator(mode="after")
    def _one_compressor(self):
        if (self.tokenizer is None) == (self.codec is None):
            raise ValueError("a variant needs exactly one of 'tokenizer' or 'codec'")
        if self.generator is not None and self.tokenizer is None:
            raise ValueError("a 'generator' needs a 'tokenizer' in the same variant")
        if self.evaluate.generation is not None and self.generator is None:
            raise ValueError("evaluate.generation needs a 'generator' in the variant")
        return self


class TableSpec(Strict):
    """How the tidy results become the paper-style table."""

    title: str | None = None
    columns: list[str] | None = None
    sort_by: str | None = None
    decimals: int = Field(4, ge=0, le=10)
    baseline: dict[str, str] = Field(default_factory=dict, description="variant -> the variant it is compared with")
    deltas: list[str] = Field(default_factory=list, description="metrics shown also as a difference to the baseline")


class PlotSpec(Strict):
    """A plot: ``bar`` (value per variant), ``line`` (value over training step), ``layers`` (value per k),
    ``rd`` (rate-distortion: ``metric`` over the rate metrics ``x``; a line per group, a point per other variant),
    ``sweep`` (value over a swept setting ``by``; a line per variant the sweep was applied to)."""

    kind: Literal["bar", "line", "layers", "rd", "sweep"]
    metric: str
    title: str | None = None
    file: str | None = None
    groups: dict[str, list[str]] | None = Field(
        None, description="bar: group name -> variants, drawn as grouped bars; rd: group -> variants drawn as one "
                          "line (default: variants named GROUP@SETTING, e.g. x264@crf30, form group GROUP)")
    x: list[str] = Field(default_factory=lambda: ["bpp", "bpp-entropy"], min_length=1,
                         description="rd: rate metrics on the x axis; the first drawn filled, each further one hollow "
                                     "beside it (e.g. nominal and entropy-coded bpp)")
    by: str | None = Field(None, description="sweep: the swept key on the x axis, its last part as in the variant "
                                             "names (e.g. cfg_scale for evaluate.generation.cfg_scale)")


class ClaimSpec(Strict):
    """A paper claim tested as a paired comparison: a contrast of variants on one metric, clip by clip.

    ``contrast`` weights variants (e.g. ``{hitvideo: 1, single-layer: -1}`` for "hitvideo is better"; four
    weights for a difference of differences); a term ``VARIANT:METRIC`` takes another metric of that variant
    (e.g. ``{hitvideo:psnr@2: 1, hitvideo:psnr@1: -1}``: what the second layer adds). The report bootstraps the contrast's mean over clips (and seeds,
    when there are several), and gives a verdict: *holds* when the confidence interval lies on the ``expect``
    side of zero, *reversed* when it lies on the other, else *inconclusive*.
    """

    id: str
    claim: str = Field(description="the paper's claim, in words")
    source: str = Field("", description="where the paper makes it (section, figure)")
    metric: str = Field(description="a metric with per-clip values (e.g. psnr, psnr@1, ssim)")
    contrast: dict[str, float] = Field(min_length=1, description="VARIANT or VARIANT:METRIC -> weight")
    expect: Literal["positive", "negative"] = "positive"
    confidence: float = Field(0.95, gt=0, lt=1)


class ReferenceRow(Strict):
    """A row copied from a paper, shown marked with its source; never mixed with measured values."""

    variant: str
    source: str = "paper"
    values: dict[str, float | str]
    note: str = ""


class Recipe(Strict):
    """A recipe as written (variants still partial: they inherit ``dataset`` and ``evaluate``)."""

    recipe: str
    version: int = RECIPE_VERSION
    description: str = ""
    scale: Preset = "tiny"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    dataset: DatasetRef
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    eval_dataset: ComponentRef | None = None
    variants: dict[str, dict[str, Any]] = Field(min_length=1)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    table: TableSpec = Field(default_factory=TableSpec)
    plots: list[PlotSpec] = Field(default_factory=list)
    references: list[ReferenceRow] = Field(default_factory=list)
    claims: list[ClaimSpec] = Field(default_factory=list)
    run: Execution = Field(default_factory=Execution, description="how every training of the recipe executes "
                           "(strategy, micro_batch, ...): not part of the run's identity nor of any component's")

    @field_validator("version")
    @classmethod
    def _known_version(cls, v):
        if v != RECIPE_VERSION:
            raise ValueError(f"unsupported recipe version {v}; this hitbench reads version {RECIPE_VERSION}")
        return v

    @field_validator("variants")
    @classmethod
    def _names(cls, v):
        for name in v:
            if not name or any(c in name for c in "/\\ ") or name.startswith("."):
                raise ValueError(f"variant name {name!r}: use letters, digits, '-', '_', '.', '=' (no spaces or slashes)")
        return v

    @field_validator("sweep")
    @classmethod
    def _sweep_lists(cls, v):
        for key, values in v.items():
            if not values:
                raise ValueError(f"sweep {key!r} has no values")
        return v
