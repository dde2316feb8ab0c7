"""Learned and distribution metrics: Fréchet distance, FVD / CLIPSIM / LPIPS pipelines with stand-in
networks injected by the tests (never the default weights), and honest `unavailable` status offline."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch

import hitvideo_bench as hb
from hitvideo_bench import weights
from hitvideo_bench.cli import main
from hitvideo_bench.errors import ShapeError, WeightsUnavailable
from hitvideo_bench.manager import get_plugins
from hitbench_builtin.metrics.clipsim import CLIPSim, clip_preprocess
from hitbench_builtin.metrics.frechet import feature_stats, frechet_distance, frechet_distance_of
from hitbench_builtin.metrics.fvd import FVD, i3d_preprocess
from hitbench_builtin.metrics.lpips_metric import LPIPS


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """Fixture: empty torch hub and HF caches, so every pretrained weight is missing."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def random_spd(dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    return a @ a.T / dim + 0.1 * torch.eye(dim, dtype=torch.float64)


# ------------------------------------------------------------------------------------------- Fréchet


def test_frechet_matches_the_closed_form_for_diagonal_gaussians():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    var1, var2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 1.0])
    expected = float((mu1 - mu2).pow(2).sum() + (var1.sqrt() - var2.sqrt()).pow(2).sum())  # 5 + 3
    assert frechet_distance(mu1, torch.diag(var1), mu2, torch.diag(var2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_matches_scipy_sqrtm_on_full_covariances():
    s1, s2 = random_spd(6, 0), random_spd(6, 1)
    mu1, mu2 = torch.zeros(6, dtype=torch.float64), torch.linspace(0, 1, 6, dtype=torch.float64)
    covmean = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    reference = float((mu1 - mu2).pow(2).sum()) + np.trace(s1.numpy()) + np.trace(s2.numpy()) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-9)


def test_frechet_of_samples_approaches_the_gaussian_distance_and_is_zero_for_identical_sets():
    g = torch.Generator().manual_seed(0)
    dim, n = 4, 40000
    s1, s2 = random_spd(dim, 2), random_spd(dim, 3)
    mu2 = torch.full((dim,), 0.5, dtype=torch.float64)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(s1).T
    y = torch.randn(n, dim, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(s2).T + mu2
    exact = frechet_distance(torch.zeros(dim), s1, mu2, s2)
    assert frechet_distance_of(x, y) == pytest.approx(exact, rel=0.05)
    assert frechet_distance_of(x, x) == pytest.approx(0.0, abs=1e-9)
    few = torch.randn(5, 32, generator=g)  # fewer samples than dimensions: singular covariance, still finite
    assert frechet_distance_of(few, few) == pytest.approx(0.0, abs=1e-9)
    mu, sigma = feature_stats(x)
    assert sigma.dtype == torch.float64 and torch.allclose(sigma, torch.cov(x.T))


# ------------------------------------------------------------------------------------------- FVD


class FixtureI3DStandIn(torch.nn.Module):
    """Fixture: a small random network called like the I3D TorchScript model (checks what it is fed)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(3, 16, kernel_size=(4, 16, 16), stride=(4, 16, 16))
        self.calls: list[tuple] = []

    def forward(self, x, rescale=True, resize=True, return_features=False):
        self.calls.append((tuple(x.shape), float(x.min()), float(x.max()), rescale, resize, return_features))
        return self.conv(x).mean(dim=(2, 3, 4))


def clips(seed: int, n: int = 6, frames: int = 10, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def test_i3d_preprocess_resizes_short_side_crops_and_scales():
    video = torch.rand(2, 3, 10, 48, 96)
    out = i3d_preprocess(video)
    assert out.shape == (2, 3, 10, 224, 224)
    assert out.min() >= -1 and out.max() <= 1 and out.min() < -0.9
    flat = torch.full((1, 3, 10, 20, 20), 0.25)
    assert torch.allclose(i3d_preprocess(flat), torch.full((1, 3, 10, 224, 224), -0.5))


def test_fvd_pipeline_with_a_stand_in_extractor():
    stand_in = FixtureI3DStandIn()
    metric = FVD(extractor=stand_in)
    real = clips(0)
    metric.update(pred=real.clone(), target=real)
    same = metric.compute()
    assert same[""] == pytest.approx(0.0, abs=1e-6)
    assert float(same["real_clips"]) == 6 and float(same["gen_clips"]) == 6
    shape, lo, hi, rescale, resize, features = stand_in.calls[0]
    assert shape[2:] == (10, 224, 224) and lo >= -1 and hi <= 1 and (rescale, resize, features) == (False, False, True)

    metric.reset()
    metric.update(pred=(clips(1) * 0.5), target=real[:3])
    metric.update(pred=(clips(2) * 0.5), target=real[3:])
    with pytest.warns(UserWarning, match="too few"):
        shifted = metric.compute()
    assert shifted[""] > 1e-3
    prov = metric.provenance()
    assert prov["real_clips"] == 6 and prov["gen_clips"] == 12 and "too few" in prov["warning"]
    assert prov["extractor"].startswith("stand-in")


def test_fvd_needs_ten_frames_and_missing_weights_are_unavailable(no_weights):
    with pytest.raises(ShapeError, match="10 frames"):
        FVD(extractor=FixtureI3DStandIn()).update(pred=clips(0, frames=8), target=clips(1, frames=8))
    with pytest.raises(WeightsUnavailable) as info:
        FVD()
    assert "i3d_torchscript.pt" in info.value.hint and "--import" in info.value.hint
    with pytest.raises(WeightsUnavailable, match="extractor_path"):
        hb.create_metric("fvd", extractor_path=str(no_weights / "nowhere.pt"))


# ------------------------------------------------------------------------------------------- LPIPS


@pytest.fixture(scope="module")
def fixture_lpips_standin():
    """Fixture: the lpips package's own network with a random trunk and random linear layers."""
    import lpips

    torch.manual_seed(0)
    return lpips.LPIPS(pretrained=False, net="alex", pnet_rand=True, verbose=False)


def test_lpips_pipeline_scales_to_minus_one_one_and_averages_frames(fixture_lpips_standin):
    a, b = clips(3, n=2, frames=5), clips(4, n=2, frames=5)
    metric = LPIPS(network=fixture_lpips_standin)
    metric.update(pred=a, target=b)
    frames_a = a.permute(0, 2, 1, 3, 4).reshape(10, 3, 32, 32)
    frames_b = b.permute(0, 2, 1, 3, 4).reshape(10, 3, 32, 32)
    with torch.no_grad():
        expected = fixture_lpips_standin(frames_a, frames_b, normalize=True).mean()
    assert float(metric.compute()) == pytest.approx(float(expected), rel=1e-5)
    small_batches = LPIPS(LPIPS.Config(batch_frames=3), network=fixture_lpips_standin)
    small_batches.update(pred=a, target=b)
    assert float(small_batches.compute()) == pytest.approx(float(expected), rel=1e-5)
    same = LPIPS(network=fixture_lpips_standin)
    same.update(pred=a, target=a)
    assert float(same.compute()) == pytest.approx(0.0, abs=1e-6)


def test_lpips_loads_the_trunk_from_the_torch_hub_file(no_weights):
    import torchvision

    fixture_trunk = torchvision.models.alexnet(weights=None).features  # fixture: random "downloaded" weights
    path = no_weights / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    path.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in fixture_trunk.state_dict().items()}, path)
    metric = LPIPS()
    assert torch.equal(metric.network.net.slice1[0].weight, fixture_trunk[0].weight)
    assert torch.equal(getattr(metric.network.net.slice5, "10").bias, fixture_trunk[10].bias)
    assert metric.provenance()["trunk_sha256"] == weights.sha256_of(path)


def test_lpips_missing_backbone_is_unavailable_without_network(no_weights, monkeypatch):
    import socket

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("tried the network"))
    for net, file in (("alex", "alexnet-owt-7be5be79.pth"), ("vgg", "vgg16-397923af.pth")):
        with pytest.raises(WeightsUnavailable) as info:
            hb.create_metric("lpips", net=net)
        assert file in info.value.hint


# ------------------------------------------------------------------------------------------- CLIPSIM


class FixtureTokenizer:
    """Fixture: maps characters to ids and ends every prompt with the eos id (the largest id)."""

    eos = 99

    def __call__(self, texts, padding=True, truncation=True, max_length=77, return_tensors="pt"):
        rows = [[3 + (ord(c) % 90) for c in t][: max_length - 1] + [self.eos] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def fixture_clip_standin():
    """Fixture: a tiny randomly initialised transformers CLIPModel."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=77, eos_token_id=99,
                                      bos_token_id=1, pad_token_id=0),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=8), projection_dim=16)
    return CLIPModel(cfg).eval()


#: prompts whose stand-in text embeddings lie at a positive cosine to the fixture frames (with others every
#: cosine is clamped to 0, and any preprocessing would give the same value)
STANDIN_PROMPTS = ["A", "zzz"]


def standin_clipsim(model, prompts: list[str], pixels: torch.Tensor) -> float:
    """The expected CLIPSIM of ``pixels`` (each clip's frames in a row, already preprocessed) under ``model``."""
    with torch.no_grad():
        text = model.get_text_features(**FixtureTokenizer()(prompts))
        text = torch.nn.functional.normalize(getattr(text, "pooler_output", text), dim=-1)
        image = model.get_image_features(pixel_values=pixels)
        image = torch.nn.functional.normalize(getattr(image, "pooler_output", image), dim=-1)
    image = image.view(len(prompts), -1, image.shape[-1])
    return float((image * text.unsqueeze(1)).sum(-1).clamp(min=0).mean())


def test_clipsim_pipeline_with_a_stand_in_model(fixture_clip_standin):
    video = clips(5, n=2, frames=3, size=40)
    prompts = STANDIN_PROMPTS
    metric = CLIPSim(model=fixture_clip_standin, tokenizer=FixtureTokenizer())
    metric.update(pred=video, captions=prompts)
    value = float(metric.compute())
    expected = standin_clipsim(fixture_clip_standin, prompts,
                               clip_preprocess(video.permute(0, 2, 1, 3, 4).reshape(6, 3, 40, 40), 32))
    assert 0.05 <= value <= 1 and value == pytest.approx(float(expected), abs=1e-5)
    assert metric.provenance()["frames"] == 6 and "[0, 1]" in metric.provenance()["scale"]


def clip_processor_pixels(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Reference: transformers' CLIPImageProcessor (its own default CLIP mean/std) on ``(N,3,H,W)`` frames in [0,1]."""
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    images = [(f.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy() for f in frames]
    return processor(images=images, return_tensors="pt")["pixel_values"]


def test_clip_preprocess_matches_the_transformers_clip_processor():
    """Kills: a wrong CLIP mean / std, or a crop other than the centre one, in clip_preprocess."""
    g = torch.Generator().manual_seed(0)
    # fixture frames on the uint8 grid, already at the short side: no resampling, so the two agree exactly
    for shape in ((2, 3, 32, 52), (2, 3, 46, 32)):
        frames = torch.randint(0, 256, shape, generator=g).float() / 255
        ours = clip_preprocess(frames, 32)
        torch.testing.assert_close(ours, clip_processor_pixels(frames, 32), atol=1e-5, rtol=0)
    # a smooth fixture frame resized 2x: bicubic kernels differ in detail only
    y, x = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 24), indexing="ij")
    smooth = torch.stack([x, y, (x + y) / 2])[None]
    ours = clip_preprocess(smooth, 32)
    assert ours.shape == (1, 3, 32, 32)
    assert (ours - clip_processor_pixels(smooth, 32)).abs().mean() < 0.02


def test_clipsim_with_the_clip_processor_pixels_gives_the_same_value(fixture_clip_standin):
    """Kills: a wrong crop or normalisation in CLIPSim.update (the expected value uses CLIPImageProcessor)."""
    video = (torch.rand(2, 3, 3, 32, 48, generator=torch.Generator().manual_seed(1)) * 255).round() / 255
    prompts = STANDIN_PROMPTS
    metric = CLIPSim(model=fixture_clip_standin, tokenizer=FixtureTokenizer())
    metric.update(pred=video, captions=prompts)
    expected = standin_clipsim(fixture_clip_standin, prompts,
                               clip_processor_pixels(video.permute(0, 2, 1, 3, 4).reshape(6, 3, 32, 48), 32))
    assert float(metric.compute()) == pytest.approx(float(expected), abs=1e-5) and expected > 0.05


def test_clipsim_missing_model_is_unavailable(no_weights):
    with pytest.raises(WeightsUnavailable) as info:
        hb.create_metric("clipsim")
    assert "openai/clip-vit-base-patch32" in info.value.hint


# ------------------------------------------------------------------------------------------- in a run


RECIPE = """\
version: 1
recipe: fixture-lpips-offline
description: "fixture recipe: a metric whose weights are missing"
seeds: [0]
dataset: {name: fixture-noise, eval_clips: 2}
evaluate: {reconstruction: [fixture-mae, lpips], batch_size: 2}
variants:
  q: {codec: {name: fixture-quantize}}
"""


def test_missing_weights_read_unavailable_and_the_run_succeeds(no_weights, tmp_path):
    recipe = tmp_path / "fixture-lpips-offline.yaml"
    recipe.write_text(textwrap.dedent(RECIPE))
    try:
        code = main(["-p", "hitbench_fixture_plugin", "run", str(recipe), "--out", str(tmp_path / "out"), "--quiet"])
    finally:
        get_plugins([])
    assert code == 0
    csv = next((tmp_path / "out").rglob("metrics.csv"))
    df = pd.read_csv(csv)
    lpips_row = df[df.metric == "lpips"].iloc[0]
    assert math.isnan(lpips_row.value) and lpips_row.text.startswith("unavailable:")
    assert "alexnet-owt-7be5be79.pth" in lpips_row.text
    assert df[df.metric == "fixture-mae"].value.notna().all()
