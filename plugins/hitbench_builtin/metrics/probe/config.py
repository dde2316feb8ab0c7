"""The probe's config and the names shared by its modules: :class:`ProbeConfig` (one config for both probe
metrics, so both use the same probe), :data:`PROBE_VERSION` (part of the cache identity: bump it when the
probe's training changes) and :data:`ATTRIBUTE_NAMES` (the order of the attribute heads and targets)."""

from __future__ import annotations

from pydantic import Field

from hitvideo_bench.api import ComponentConfig, TrainConfig

from ...datasets.synthetic import ATTRIBUTES

PROBE_VERSION = 2
ATTRIBUTE_NAMES = tuple(ATTRIBUTES)


def _probe_train_default() -> TrainConfig:
    return TrainConfig(steps=400, batch_size=64, lr=3e-3, weight_decay=1e-4)


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

