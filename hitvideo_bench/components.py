"""Base classes every component builds on: configs with presets, and the small protocols of each kind.

Kinds: ``tokenizer``, ``codec``, ``generator``, ``metric``, ``dataset``. A component class has a
``Config`` attribute (a :class:`ComponentConfig` subclass) and is constructed as
``cls(config, **dependencies)``. Presets are data: ``Config.presets = {"tiny": {...}, ...}``.

Tokenizers and codecs share the :class:`Compressor` protocol (video in, reconstruction and bits
out), so one reconstruction table can hold both.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict
from torchmetrics import Metric

from .contract import overrides
from .errors import BadInput, ShapeError
from .tokens import TokenPyramid
from .training import Execution, TrainingTask, fit_component

KINDS = ("tokenizer", "codec", "generator", "metric", "dataset")
PRESETS = ("tiny", "small", "paper")
Preset = Literal["tiny", "small", "paper"]


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``over`` onto a copy of ``base`` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class ComponentConfig(BaseModel):
    """Typed, strict config of one component. Unknown keys are errors, never silent defaults.

    Subclasses declare fields with defaults and a ``presets`` table of overrides per scale.
    ``version`` is recorded in every result; bump it when a change alters results.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    preset: Preset = "tiny"
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def from_preset(cls, preset: str | None = None, overrides: Mapping[str, Any] | None = None):
        """Build the config of ``preset`` (default ``tiny``) with ``overrides`` merged on top."""
        preset = preset or "tiny"
        # start from the full defaults so that a nested override (e.g. ``train: {steps: 60}``) changes
        # only the fields it names and keeps the component's own defaults for the rest
        defaults = cls.model_construct().model_dump(exclude={"preset"})
        data = deep_merge(deep_merge(defaults, cls.presets.get(preset, {})), overrides or {})
        data["preset"] = preset
        return cls.model_validate(data)


class EmptyConfig(ComponentConfig):
    """Config of a component with no settings beyond its preset."""


# --------------------------------------------------------------------------------------------
# datasets


class VideoDataset(torch.utils.data.Dataset, ABC):
    """A split of captioned clips. Items: ``{video: float32 (3,T,H,W) in [0,1], caption: str, attrs: dict}``."""

    Config: ClassVar[type[ComponentConfig]]
    #: the split names this dataset knows (empty: any); an unknown one is bad input
    splits: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: ComponentConfig, split: str = "train"):
        if self.splits and split not in self.splits:
            raise BadInput(f"{type(self).__name__}: unknown split {split!r}; allowed: {', '.join(self.splits)}")
        self.config = config
        self.split = split

    @property
    @abstractmethod
    def clip_shape(self) -> tuple[int, int, int]:
        """``(T, H, W)`` of every clip."""

    @property
    def fps(self) -> float:
        """Frames per second of the clips (the runner writes the sample sheets of generated clips at it): the
        config's ``fps`` field if it has one, else 8 (the paper's)."""
        return float(getattr(self.config, "fps", 8.0))

    def identity(self) -> dict[str, Any]:
        """What makes this data unique (for cache keys): config plus split, plus file stats if any."""
        return {"class": type(self).__qualname__, "config": self.config.model_dump(), "split": self.split}

    def dropped(self) -> dict[str, str]:
        """Files this split left out because they could not be read (file -> why), as far as it has read them: the
        runner lists them in the run's summary (``dropped_files``) and below the table. None by default."""
        return {}


# --------------------------------------------------------------------------------------------
# compressors: tokenizers and codecs


@dataclass
class Compressed:
    """Result of compressing a batch: reconstruction, bits per clip and what was counted.

    ``info["per_clip"]`` may map names to one number per clip (e.g. the codec's chosen CRF, or the
    yuv420p ceiling PSNR); the runner reports each as its mean over the evaluated clips.
    """

    reconstruction: torch.Tensor  # (B, 3, T, H, W) in [0, 1]
    bits: torch.Tensor  # (B,) float64, bits actually spent per clip
    pyramid: TokenPyramid | None = None
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Compressor(Protocol):
    """Video in, reconstruction and bits out."""

    def compress(self, video: torch.Tensor) -> Compressed: ...


class Codec(ABC):
    """A classical codec baseline: a bitstream and its size, no tokens."""

    Config: ClassVar[type[ComponentConfig]]
    #: the runner calls :meth:`compress` clip by clip in a worker process holding a pickled copy of the codec
    #: (:mod:`hitvideo_bench.isolation`), with :meth:`time_limit` per clip: a native crash or a hang is retried
    #: once in a fresh worker, then that clip is reported as failed and the others are measured. False only for a
    #: codec with no native code that could crash or hang (it then runs in the run's process, batch by batch).
    isolated: ClassVar[bool] = True

    def __init__(self, config: ComponentConfig):
        self.config = config

    @abstractmethod
    def compress(self, video: torch.Tensor) -> Compressed:
        """Encode and decode ``video`` (B,3,T,H,W) in [0,1]; ``bits`` counts the bitstream."""

    def time_limit(self, frames: int, height: int, width: int) -> float:
        """CPU seconds :meth:`compress` of one clip may use in its worker before it counts as hung (ten times that
        in wall time for one that waits on nothing): by default ``60 + 50e-6 * frames * height * width``, a fixed
        allowance plus about twice what a rate search of some 25 encodes takes (docs/codecs.md has the figures)."""
        return 60.0 + 50e-6 * frames * height * width

    def check_shape(self, frames: int, height: int, width: int) -> None:
        """Raise :class:`ShapeError` for a clip shape this codec cannot take."""
        if height % 2 or width % 2:
            raise ShapeError(f"{type(self).__name__}: yuv420p needs even height and width, got {height}x{width}")

    def save_figures(self, video: torch.Tensor, folder: Path) -> list[Path]:
        """Figures of one clip (``evaluate.figures``) written into ``folder``; none by default."""
        return []


class Tokenizer(torch.nn.Module, ABC):
    """A video tokenizer: encode to a :class:`TokenPyramid`, decode from the top ``k`` layers.

    Subclasses implement :meth:`token_grid_shapes` (no compute), :attr:`codebook_sizes`, :meth:`encode` and
    :meth:`decode`. A trainable tokenizer implements :meth:`training_task`; the core trains, caches and resumes
    it. Dynamic encoding (the ``masked`` wrapper) needs the latent hooks :meth:`tokens_to_latents`,
    :meth:`decode_latents` and, to fine-tune a decoder, :meth:`decoder_parameters`.
    """

    Config: ClassVar[type[ComponentConfig]]
    #: the config field holding its :class:`~hitvideo_bench.training.TrainConfig`, for a tokenizer that trains through
    #: the shared trainer (:meth:`training_task`); None: not trained that way
    train_settings: ClassVar[str | None] = None
    #: the config field naming a tokenizer this one wraps (``{name, preset, config}``, e.g. ``masked``'s ``base``): the
    #: core builds that tokenizer (trained, through the cache) and passes it to the constructor as ``base=``
    wraps: ClassVar[str | None] = None

    def __init__(self, config: ComponentConfig):
        super().__init__()
        self.config = config

    @property
    @abstractmethod
    def codebook_sizes(self) -> list[int]:
        """Per-layer codebook sizes, densest layer first."""

    @abstractmethod
    def token_grid_shapes(self, frames: int, height: int, width: int) -> list[tuple[int, int, int]]:
        """Per-layer ``(t, h, w)`` token grids for a clip of that shape; raises :class:`ShapeError`."""

    @abstractmethod
    def encode(self, video: torch.Tensor) -> TokenPyramid:
        """``(B,3,T,H,W)`` in [0,1] -> tokens."""

    @abstractmethod
    def decode(self, pyramid: TokenPyramid, layers: int | None = None) -> torch.Tensor:
        """Tokens -> ``(B,3,T,H,W)`` in [0,1] (clamped: metrics take it as it is), from the ``layers`` coarsest
        layers (all if None)."""

    @property
    def num_layers(self) -> int:
        return len(self.codebook_sizes)

    # ---------------------------------------------------------------------------- training

    @property
    def trainable(self) -> bool:
        """Whether the core trains this tokenizer: it implements :meth:`training_task` (or, to train without the
        shared trainer, :meth:`fit`)."""
        return overrides(self, Tokenizer, "training_task", "fit")

    def training_task(self, data: VideoDataset | None, device: torch.device, *,
                      shapes_only: bool = False) -> TrainingTask | None:
        """How this tokenizer trains on ``data`` (see :class:`hitvideo_bench.training.TrainingTask`), its settings in
        the config field :attr:`train_settings` names. ``shapes_only``: for the memory estimate, built on a device
        with no memory behind it and without data (the task must not read ``data``). None (default): not
        trainable."""
        return None

    def fit(self, dataset: VideoDataset, *, workdir: Path, device: torch.device, seed: int,
            progress: bool = True, eval_fn: Callable[[int], dict[str, float]] | None = None,
            execution: Execution | None = None) -> dict[str, Any]:
        """Train on ``dataset`` through the shared trainer, executed as the run says (``execution``); checkpoints go
        to ``workdir`` and training resumes from there. ``eval_fn(step)`` is called every ``eval_every`` steps of its
        train settings (for curves). Returns a summary."""
        return fit_component(self, dataset, workdir=workdir, device=device, seed=seed, progress=progress,
                             eval_fn=eval_fn, execution=execution)

    def check_shape(self, frames: int, height: int, width: int) -> None:
        """Raise :class:`ShapeError` for a clip shape this tokenizer cannot take."""
        self.token_grid_shapes(frames, height, width)

    def check_training_shape(self, frames: int, height: int, width: int) -> None:
        """Raise :class:`ShapeError` when training cannot take clips of that shape (by default: when the tokenizer
        cannot take them; a tokenizer that trains on crops also checks the crops)."""
        self.check_shape(frames, height, width)

    def training_warnings(self, frames: int, height: int, width: int) -> list[str]:
        """Training settings that are legal on clips of that shape but likely to waste training (``hitbench
        validate`` prints them), e.g. a crop that leaves a layer's grid under 2 cells on a side. Default: none."""
        return []

    # ---------------------------------------------------------------------------- dynamic-encoding hooks

    @property
    def exposes_latents(self) -> bool:
        """Whether this tokenizer implements the latent hooks that dynamic encoding needs."""
        return all(overrides(self, Tokenizer, name) for name in ("tokens_to_latents", "decode_latents"))

    def tokens_to_latents(self, pyramid: TokenPyramid) -> list[torch.Tensor]:
        """The quantised latent of every layer, ``(B, C_l, t, h, w)`` on the layer's token grid (densest first):
        what a masked token is filled in, before :meth:`decode_latents`."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its quantised latents")

    def decode_latents(self, latents: list[torch.Tensor | None], layers: int | None = None) -> torch.Tensor:
        """Quantised latents (as :meth:`tokens_to_latents` gives them) -> video, from the ``layers`` coarsest
        layers; unclamped, so that a fill can be trained through it."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its quantised latents")

    def latent_channels(self) -> list[int] | None:
        """Channels ``C_l`` of each layer's latent in :meth:`tokens_to_latents` (a learned fill has one value per
        channel); None (default): not declared."""
        return None

    def decoder_parameters(self) -> list[torch.nn.Parameter]:
        """What a dynamic-encoding fill may fine-tune: the parameters after quantisation (default: none)."""
        return []

    def save_figures(self, video: torch.Tensor, folder: Path) -> list[Path]:
        """Figures of one clip (``evaluate.figures``) written into ``folder``; none by default."""
        return []

    # ---------------------------------------------------------------------------- compression

    @torch.no_grad()
    def compress(self, video: torch.Tensor, layers: int | None = None) -> Compressed:
        """Encode, count nominal bits, decode (from the top ``layers`` only, if given)."""
        pyramid = self.encode(video)
        bits = pyramid.nominal_bits() + self.side_info_bits(pyramid)
        return Compressed(self.decode(pyramid, layers=layers), bits, pyramid,
                          {"counted": "tokens x log2(codebook) per layer" + self.side_info_note()})

    def side_info_bits(self, pyramid: TokenPyramid) -> torch.Tensor:
        """Extra bits per clip beyond the tokens (e.g. which tokens were masked). Zero by default."""
        return torch.zeros(pyramid.batch_size, dtype=torch.float64)

    def side_info_note(self) -> str:
        return ""


# --------------------------------------------------------------------------------------------
# generators


class Generator(torch.nn.Module, ABC):
    """A text-to-video token generator over a tokenizer's pyramid, built as ``cls(config, tokenizer=...,
    clip_shape=(T, H, W))``: it knows from the start the token grids it models (:attr:`grid_shapes`, densest layer
    first) and their codebooks (:attr:`codebook_sizes`), so a fresh instance can :meth:`sample`.

    Implement :meth:`sample`; a trainable generator implements :meth:`training_task` (its data: the tokenized
    train split and its captions); :meth:`nll_bits_per_token` is optional (``evaluate.generation.nll``).
    """

    Config: ClassVar[type[ComponentConfig]]
    #: the config field holding its :class:`~hitvideo_bench.training.TrainConfig`, for a generator that trains through
    #: the shared trainer (:meth:`training_task`); None: not trained that way
    train_settings: ClassVar[str | None] = None

    def __init__(self, config: ComponentConfig, tokenizer: Tokenizer, clip_shape: tuple[int, int, int]):
        super().__init__()
        self.config = config
        #: ``(T, H, W)`` of the clips it models
        self.clip_shape = tuple(int(s) for s in clip_shape)
        #: per-layer ``(t, h, w)`` token grids of those clips, densest layer first
        self.grid_shapes = [tuple(int(n) for n in g) for g in tokenizer.token_grid_shapes(*self.clip_shape)]
        #: per-layer codebook sizes, densest layer first
        self.codebook_sizes = [int(n) for n in tokenizer.codebook_sizes]

    @abstractmethod
    def sample(self, prompts: list[str], cfg_scale: float = 1.0, seed: int = 0, *, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None) -> TokenPyramid:
        """One pyramid per prompt, seeded by ``seed``; ``cfg_scale`` > 1 is classifier-free guidance, the rest are
        the usual sampling filters (``top_k``/``top_p`` None: off)."""

    @property
    def trainable(self) -> bool:
        """Whether the core trains this generator: it implements :meth:`training_task` (or, to train without the
        shared trainer, :meth:`fit`)."""
        return overrides(self, Generator, "training_task", "fit")

    @property
    def has_nll(self) -> bool:
        """Whether :meth:`nll_bits_per_token` is implemented."""
        return overrides(self, Generator, "nll_bits_per_token")

    def training_task(self, data: tuple[TokenPyramid, list[str]] | None, device: torch.device, *,
                      shapes_only: bool = False) -> TrainingTask | None:
        """How this generator trains on ``data`` = (the tokenized clips, their captions), settings in
        the config field :attr:`train_settings` names. ``shapes_only``: for the memory estimate, without data, on a
        device with no memory behind it. None (default): not trainable."""
        return None

    def fit(self, pyramids: TokenPyramid, captions: list[str], *, workdir: Path, device: torch.device,
            seed: int, progress: bool = True, execution: Execution | None = None) -> dict[str, Any]:
        """Train on tokenized clips and their captions through the shared trainer, executed as the run says;
        resumable from ``workdir``."""
        return fit_component(self, (pyramids, captions), workdir=workdir, device=device, seed=seed,
                             progress=progress, execution=execution)

    def nll_bits_per_token(self, pyramid: TokenPyramid, prompts: list[str]) -> dict[int, float] | None:
        """Teacher-forced negative log-likelihood of ``pyramid`` given ``prompts``, in bits per token, per layer
        (layer index -> value). None (default): not available, reported as such."""
        return None


# --------------------------------------------------------------------------------------------
# metrics

#: Inputs a metric may ask for, by name, in ``inputs``:
#:   pred      (B,3,T,H,W) in [0,1]: reconstruction or generated video
#:   target    (B,3,T,H,W) in [0,1]: the reference clip (for generation: real clips of the eval split)
#:   bits      (B,) float64 bits spent per clip
#:   pixels    (B,) float64 pixels (T*H*W) per clip
#:   pyramid   TokenPyramid of the batch (tokenizers only)
#:   captions  list[str], the prompt / caption of each clip
#:   attrs     list[dict], ground-truth attributes of each clip (synthetic data only)
METRIC_INPUTS = ("pred", "target", "bits", "pixels", "pyramid", "captions", "attrs")

#: Stages a metric can serve: reconstruction (pred = tokenizer/codec output, target = input)
#: and generation (pred = generated clips, target = real clips, captions = prompts).
METRIC_STAGES = ("reconstruction", "generation")


class BenchMetric(Metric):
    """A torchmetrics metric that also says which inputs it needs and where it applies.

    Implement ``update`` (taking the names in ``inputs`` as keyword arguments) and ``compute``
    (a scalar tensor, or a dict of named scalars that the runner reports as ``metric/key``; the key
    ``""`` is the headline value, reported under the metric's own name).
    Declare state with ``add_state(..., dist_reduce_fx=...)`` so it merges across processes.
    A metric whose pretrained weights are missing raises :class:`WeightsUnavailable` from its
    constructor; the runner then reports ``unavailable: <hint>`` instead of a number.
    """

    Config: ClassVar[type[ComponentConfig]] = EmptyConfig
    inputs: ClassVar[tuple[str, ...]] = ("pred", "target")
    stages: ClassVar[tuple[str, ...]] = ("reconstruction",)
    higher_is_better: ClassVar[bool | None] = None
    #: the value is the mean over clips of a value each clip has alone (PSNR, SSIM): the runner then also scores
    #: every clip by itself, for confidence intervals and paired claims (see hitvideo_bench.claims)
    per_clip: ClassVar[bool] = False
    #: the value is a statistic of the whole set of clips (a Fréchet distance): the runner also recomputes it on
    #: bootstrap resamples of the clips through :meth:`compute_on`, the same resamples in every variant, for
    #: confidence intervals and paired claims
    resampled: ClassVar[bool] = False
    full_state_update: ClassVar[bool] = False

    def __init__(self, config: ComponentConfig | None = None, **kwargs):
        if self.resampled and type(self).compute_on is BenchMetric.compute_on:
            raise TypeError(f"{type(self).__name__} declares resampled = True but does not implement compute_on")
        super().__init__(**kwargs)
        self.config = config if config is not None else self.Config.from_preset()

    def provenance(self) -> dict[str, Any]:
        """What a reader needs to compare this value with another table's (extractor, checksum, ...)."""
        return {}

    def compute_on(self, index: torch.Tensor) -> float:
        """The headline value on the clips ``index`` (positions in update order, repeats allowed). Only called for
        metrics that declare ``resampled``, which must implement it (checked when one is created)."""
        raise TypeError(f"{type(self).__name__} is not resampled: it has no value on a resample of its clips")

    def sub_higher_is_better(self, key: str) -> bool | None:
        """Direction of the sub-value ``key`` that :meth:`compute` returns beside the headline (``""``).

        Sub-values are often of another kind than the headline (a count, an accuracy beside a distance),
        so they do not inherit ``higher_is_better``: None (no direction) unless a metric says otherwise.
        """
        return None
