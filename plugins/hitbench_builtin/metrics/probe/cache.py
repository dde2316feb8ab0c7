"""Where a trained probe lives: its cache identity (version, training config, data), its cache folder, and
:func:`obtain_probe`, which loads it from that folder or trains and caches it. Nothing is kept in memory here:
each metric instance keeps the probe it obtained, and loading a cached probe is cheap."""

from __future__ import annotations

import shutil
from typing import Any

import torch

from hitvideo_bench.api import ShapeError, atomic_path, cached_component, component_dir, local_training

from ...datasets.synthetic import SyntheticShapesConfig
from .config import PROBE_VERSION, ProbeConfig
from .model import Probe, ProbeNet
from .task import train_probe


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
    return component_dir("probe", "synthetic-attributes", probe_identity(config, probe_data_config(config, clip_shape)))


def obtain_probe(config: ProbeConfig, clip_shape: tuple[int, int, int], device: torch.device) -> Probe:
    """The probe for clips of ``clip_shape`` (T, H, W), on ``device``: from the cache, or trained now and cached.
    Every call returns a new :class:`Probe` (each metric keeps its own); loading from the cache is cheap."""
    from safetensors.torch import load_file, save_file

    data_config = probe_data_config(config, tuple(int(s) for s in clip_shape))
    identity = probe_identity(config, data_config)
    folder = component_dir("probe", "synthetic-attributes", identity)
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
        net, summary, trained = cached_component(folder, load=load, train=train, save=save)
    if trained:
        shutil.rmtree(folder / "train", ignore_errors=True)  # the resumable checkpoint is no longer needed
    probe = Probe(net.eval(), config, summary)
    probe.net.to(device)
    return probe
