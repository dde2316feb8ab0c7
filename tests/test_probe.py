"""The suite-trained synthetic-attributes probe and its metrics probe-fd and prompt-acc."""

from __future__ import annotations

import random
import time
import warnings

import pytest
import torch
import torch.nn.functional as F

import hitvideo_bench as hb
from hitvideo_bench import cache
from hitvideo_bench.errors import BadInput, ShapeError
from hitbench_builtin.metrics.probe import cache as probe_cache
from hitbench_builtin.metrics.probe import (ProbeConfig, ProbeNet, cpu_threads, obtain_probe, probe_folder,
                                            probe_inputs)

HELD_OUT = 256  # per split: at 64 clips the sampling noise of a Frechet distance hides mild degradations
ATTRIBUTES = ("shape", "colour", "size", "motion", "background")


@pytest.fixture(scope="module")
def real_clips():
    """Fixture: real synthetic-shapes clips of two held-out splits (val, test), tiny preset shape."""
    out = {}
    with cpu_threads(1, torch.device("cpu")):  # rendering is many tiny ops: one thread is far faster
        for split in ("val", "test"):
            ds = hb.create_dataset("synthetic-shapes", preset="tiny", split=split,
                                   val_clips=HELD_OUT, test_clips=HELD_OUT)
            items = [ds[i] for i in range(HELD_OUT)]
            out[split] = (torch.stack([it["video"] for it in items]), [it["caption"] for it in items])
    return out


@pytest.fixture(scope="module")
def trained_probe(real_clips):
    """Fixture: the probe, trained once per test session (cached under the session's HITBENCH_CACHE)."""
    began = time.perf_counter()
    probe = obtain_probe(ProbeConfig(), tuple(real_clips["val"][0].shape[2:]), torch.device("cpu"))
    print(f"\nprobe obtained in {time.perf_counter() - began:.1f} s: {probe.summary.get('heldout_accuracy')}, "
          f"render {probe.summary.get('render_seconds')} s, train {probe.summary.get('train_seconds')} s")
    return probe


@pytest.mark.slow
def test_probe_reaches_its_accuracy_on_held_out_clips(trained_probe, real_clips):
    acc = trained_probe.summary["heldout_accuracy"]
    assert acc["all"] >= 0.95, acc
    assert all(acc[name] >= 0.95 for name in ATTRIBUTES), acc
    # an independent check on the test split, which the probe never saw either
    video, captions = real_clips["test"]
    metric = hb.create_metric("prompt-acc")
    metric.update(pred=video, captions=captions)
    out = metric.compute()
    assert float(out[""]) >= 0.95, out
    assert all(float(out[name]) >= 0.95 for name in ATTRIBUTES), out


@pytest.mark.slow
def test_probe_is_cached_and_reused_without_retraining(trained_probe, real_clips, monkeypatch):
    shape = tuple(real_clips["val"][0].shape[2:])
    folder = probe_folder(ProbeConfig(), shape)
    assert cache.is_complete(folder) and (folder / "model.safetensors").is_file()
    assert cache.read_summary(folder)["heldout_accuracy"] == trained_probe.summary["heldout_accuracy"]

    def no_training(*args, **kwargs):
        raise AssertionError("the cached probe was trained again")

    monkeypatch.setattr(probe_cache, "train_probe", no_training)  # obtain_probe's training, looked up there
    again = obtain_probe(ProbeConfig(), shape, torch.device("cpu"))
    video = real_clips["val"][0][:8]
    assert torch.equal(again.features(video), trained_probe.features(video))
    # a different probe config is a different cache entry
    assert probe_folder(ProbeConfig(width=16), shape) != folder


def blurred(video: torch.Tensor, kernel: int) -> torch.Tensor:
    """Box blur of every frame (kernel x kernel)."""
    B, C, T, H, W = video.shape
    frames = video.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W)
    out = F.avg_pool2d(F.pad(frames, [kernel // 2] * 4, mode="replicate"), kernel, stride=1)
    return out.reshape(B, T, C, H, W).permute(0, 2, 1, 3, 4)


def freeze(video: torch.Tensor, frames: int) -> torch.Tensor:
    """The last ``frames`` frames replaced by the one before them (a stalled clip)."""
    out = video.clone()
    keep = video.shape[2] - frames
    out[:, :, keep:] = video[:, :, keep - 1:keep]
    return out


@pytest.mark.slow
def test_probe_fd_is_near_zero_between_real_splits_and_grows_with_degradation(trained_probe, real_clips):
    val, _ = real_clips["val"]
    test, _ = real_clips["test"]

    def fd(pred):
        metric = hb.create_metric("probe-fd")
        metric.update(pred=pred, target=val)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # 256 clips on each side: no "too few clips" warning
            out = metric.compute()
        assert float(out["real_clips"]) == HELD_OUT and float(out["gen_clips"]) == pred.shape[0]
        assert float(out["probe_acc"]) == pytest.approx(trained_probe.accuracy)
        return float(out[""])

    assert fd(val) == pytest.approx(0.0, abs=1e-6)  # identical sets
    real_vs_real = fd(test)
    g = torch.Generator().manual_seed(0)
    # noise of std <= 0.05 is below what the probe resolves (its distance stays within sampling noise)
    with cpu_threads(1, torch.device("cpu")):
        ladders = {
            "noise": [fd((test + s * torch.randn(test.shape, generator=g)).clamp(0, 1)) for s in (0.1, 0.2, 0.3)],
            "blur": [fd(blurred(test, k)) for k in (5, 7, 11)],
            "frozen": [fd(freeze(test, k)) for k in (4, 8, 15)],
        }
    print(f"\nprobe-fd real vs real {real_vs_real:.2f}; " + "; ".join(
        f"{name} {', '.join(f'{v:.2f}' for v in values)}" for name, values in ladders.items()))
    for name, values in ladders.items():
        assert values == sorted(values), (name, values)
        assert values[0] > 1.1 * real_vs_real, (name, values, real_vs_real)
        assert values[-1] > 5 * real_vs_real, (name, values, real_vs_real)

    few = hb.create_metric("probe-fd")
    few.update(pred=test[:64], target=val[:64])
    with pytest.warns(UserWarning, match="too few"):  # 64 clips: the value comes with a warning
        few.compute()


@pytest.mark.slow
def test_prompt_acc_matches_the_probe_and_drops_for_shuffled_prompts(trained_probe, real_clips):
    val, captions = real_clips["val"]
    metric = hb.create_metric("prompt-acc")
    metric.update(pred=val[:100], captions=captions[:100])
    metric.update(pred=val[100:], captions=captions[100:])
    out = metric.compute()
    assert set(out) == {"", *ATTRIBUTES, "attributes", "probe_acc"}
    assert float(out["attributes"]) == pytest.approx(sum(float(out[a]) for a in ATTRIBUTES) / len(ATTRIBUTES))
    # the probe's held-out accuracy was measured on the first 512 val clips (these among them)
    assert float(out[""]) == pytest.approx(trained_probe.accuracy, abs=0.05)
    assert float(out["probe_acc"]) == pytest.approx(trained_probe.accuracy)
    assert metric.provenance()["clips"] == HELD_OUT

    shuffled = captions[:]
    random.Random(0).shuffle(shuffled)
    wrong = hb.create_metric("prompt-acc")
    wrong.update(pred=val, captions=shuffled)
    assert float(wrong.compute()[""]) < 0.2


def test_prompt_acc_rejects_prompts_that_are_not_synthetic():
    clips = torch.rand(1, 3, 16, 64, 64)
    metric = hb.create_metric("prompt-acc")
    with pytest.raises(BadInput, match="synthetic-shapes prompts only"):
        metric.update(pred=clips, captions=["a cat playing the piano"])
    with pytest.raises(BadInput, match="allowed"):
        metric.update(pred=clips, captions=["a small pink circle moves left on a black background"])
    with pytest.raises(BadInput, match="1 clips but 2 captions"):
        metric.update(pred=clips, captions=["a"] * 2)


@pytest.mark.parametrize("shape", [(16, 64, 64), (32, 128, 128), (5, 48, 40), (1, 20, 20)])
def test_probe_inputs_resample_any_clip_shape(shape):
    config = ProbeConfig()
    video = torch.rand(2, 3, *shape)
    motion, appearance = probe_inputs(video, config)
    assert motion.shape == (2, 3, config.input_frames, config.input_size, config.input_size)
    assert appearance.shape == (2, 3, config.appearance_size, config.appearance_size)
    assert 0 <= float(motion.min()) and float(motion.max()) <= 1
    net = ProbeNet(config.input_frames, config.width, config.appearance_width, config.feature_dim).eval()
    feats, logits = net(motion, appearance)
    assert feats.shape == (2, config.feature_dim) and logits["motion"].shape == (2, 5)


def test_probe_inputs_average_when_downsampling_and_reject_bad_shapes():
    config = ProbeConfig()
    video = torch.rand(1, 3, 16, 64, 64)
    motion, appearance = probe_inputs(video, config)
    # box average of 2x2x2 cells (16x64x64 -> 8x32x32), the middle frame untouched at 64x64
    assert torch.allclose(motion[0, :, 0, 0, 0], video[0, :, :2, :2, :2].mean((1, 2, 3)))
    assert torch.equal(appearance, video[:, :, 8])
    with pytest.raises(ShapeError, match=r"\(B, 3, T, H, W\)"):
        probe_inputs(torch.rand(3, 16, 64, 64), config)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.slow
def test_probe_metrics_run_on_cuda(trained_probe, real_clips):
    val, captions = real_clips["val"]
    metric = hb.create_metric("prompt-acc").to("cuda")
    metric.update(pred=val.cuda(), captions=captions)
    assert float(metric.compute()[""]) == pytest.approx(trained_probe.accuracy, abs=0.05)
    fd = hb.create_metric("probe-fd").to("cuda")
    fd.update(pred=val.cuda(), target=val.cuda())
    assert float(fd.compute()[""]) == pytest.approx(0.0, abs=1e-3)
