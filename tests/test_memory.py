"""Training memory per GPU (hitvideo_bench.memory): the fake-device trace counts what a real forward
saves, state is 16 bytes per trained parameter (+4 with EMA), activations follow the batch, and
``hitbench validate`` prints an estimate for every trainable component."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from hitbench_builtin.generators.ar_llama import ARLlamaGenerator
from hitbench_builtin.tokenizers.hitvideo import (Discriminator, HiTVideoConfig, HiTVideoTokenizer,
                                                  reconstruction_loss)
from hitbench_builtin.tokenizers.masked import MaskedTokenizer
from hitvideo_bench import memory
from hitvideo_bench.cli import main
from hitvideo_bench.errors import BadInput
from hitvideo_bench.manager import get_catalog

ROOT = Path(__file__).resolve().parent.parent
CLIP = (16, 64, 64)


pytestmark = pytest.mark.usefixtures("one_thread")


def tokenizer_config(**train) -> HiTVideoConfig:
    """Tiny hitvideo with a GAN; LPIPS off (its real weights are not needed), LFQ sampling half the tokens
    for its entropy."""
    return get_catalog().make_config("tokenizer", "hitvideo", "tiny", {
        "loss": {"perceptual": 0, "adversarial": 0.01, "entropy_sample_fraction": 0.5},
        "train": {"batch_size": 2, **train}})


def generator_config(**train):
    return get_catalog().make_config("generator", "ar-llama", "tiny", {"train": {"batch_size": 4, **train}})


def tiny_pyramid() -> tuple[list[int], list[tuple[int, int, int]]]:
    with torch.device("meta"):
        tok = HiTVideoTokenizer(tokenizer_config())
    return tok.codebook_sizes, tok.token_grid_shapes(*CLIP)


def measured(modules: list[nn.Module], step) -> int:
    """Saved-tensor bytes of a real CPU forward, with the hook the estimate uses."""
    saved = memory.SavedTensorBytes("cpu", exclude=modules)
    with saved:
        step()
    return saved.nbytes


# the trace on fake CPU tensors is compared with a real CPU forward: same kernels, so the same bytes
TOLERANCE = 0.01


@pytest.mark.parametrize("checkpointing", [False, True])
def test_tokenizer_trace_counts_what_a_real_forward_saves(checkpointing):
    config = tokenizer_config(grad_checkpointing=checkpointing)
    estimate = memory.tokenizer_training_memory(HiTVideoTokenizer, config, CLIP, device="cpu")
    torch.manual_seed(0)
    tok, disc = HiTVideoTokenizer(config), Discriminator(config.disc_channels).requires_grad_(False)
    video = torch.rand(2, 3, 16, 32, 32)  # tiny trains on 32-pixel crops, 8 per step (or 2 whole clips)

    def step():
        rec, aux = tok(video)
        return reconstruction_loss(rec, video, config.loss)[0] + aux - disc(rec * 2 - 1).mean()

    real = measured([tok, disc], step)
    assert real > 0
    assert estimate.activation_bytes == pytest.approx(real, rel=TOLERANCE)


@pytest.mark.parametrize("precision, checkpointing", [("fp32", False), ("fp32", True), ("bf16", False)])
def test_generator_trace_counts_what_a_real_forward_saves(precision, checkpointing):
    sizes, grids = tiny_pyramid()
    config = generator_config(precision=precision, grad_checkpointing=checkpointing)
    estimate = memory.generator_training_memory(ARLlamaGenerator, config, sizes, grids, device="cpu")
    torch.manual_seed(0)
    gen = ARLlamaGenerator(config.model_copy(update={"grid_shapes": grids}), SimpleNamespace(codebook_sizes=sizes),
                           load_text=False)
    gen.set_grad_checkpointing(checkpointing)
    tokens = torch.randint(0, min(sizes), (4, sum(t * h * w for t, h, w in grids)))
    feats = torch.randn(4, config.text_len, gen.text_proj.in_features)
    mask = torch.ones(4, config.text_len, dtype=torch.bool)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            text_h, text_mask = gen.text_prefix(feats, mask)
            return gen.weighted_loss(gen.layer_losses(tokens, text_h, text_mask))

    real = measured([gen], step)
    assert estimate.activation_bytes == pytest.approx(real, rel=TOLERANCE)


def test_checkpointing_and_bf16_save_less():
    base = memory.tokenizer_training_memory(HiTVideoTokenizer, tokenizer_config(), CLIP, device="cpu")
    ckpt = memory.tokenizer_training_memory(HiTVideoTokenizer, tokenizer_config(grad_checkpointing=True), CLIP,
                                            device="cpu")
    assert ckpt.activation_bytes < base.activation_bytes
    sizes, grids = tiny_pyramid()
    fp32 = memory.generator_training_memory(ARLlamaGenerator, generator_config(), sizes, grids)
    bf16 = memory.generator_training_memory(ARLlamaGenerator, generator_config(precision="bf16"), sizes, grids)
    assert bf16.activation_bytes < fp32.activation_bytes


def test_state_is_16_bytes_per_trained_parameter_plus_4_with_ema():
    trained, frozen = nn.Linear(10, 20), nn.Linear(3, 4)
    n, m = sum(p.numel() for p in trained.parameters()), sum(p.numel() for p in frozen.parameters())
    assert memory.state_bytes([trained]) == 16 * n
    assert memory.state_bytes([trained], ema=True) == 20 * n
    assert memory.state_bytes([trained], [frozen]) == 16 * n + 4 * m

    plain = memory.tokenizer_training_memory(HiTVideoTokenizer, tokenizer_config(), CLIP, device="cpu")
    ema = memory.tokenizer_training_memory(HiTVideoTokenizer, tokenizer_config(ema=0.999), CLIP, device="cpu")
    config = tokenizer_config()
    with torch.device("meta"):
        tok, disc = HiTVideoTokenizer(config), Discriminator(config.disc_channels)
    params = sum(p.numel() for m in (tok, disc) for p in m.parameters())
    buffers = sum(b.numel() * b.element_size() for b in tok.buffers())
    assert plain.trainable_params == params  # the discriminator trains beside the tokenizer
    assert plain.state_bytes == 16 * params + buffers
    ema_entries = sum(v.numel() for m in (tok, disc) for v in m.state_dict().values() if v.is_floating_point())
    assert ema.state_bytes - plain.state_bytes == 4 * ema_entries
    assert ema.activation_bytes == plain.activation_bytes
    assert plain.total_bytes == plain.state_bytes + plain.activation_bytes


def test_activations_follow_the_batch_state_does_not():
    sizes, grids = tiny_pyramid()
    for estimate in (
            lambda b: memory.tokenizer_training_memory(HiTVideoTokenizer, tokenizer_config(batch_size=b), CLIP),
            lambda b: memory.generator_training_memory(ARLlamaGenerator, generator_config(batch_size=b), sizes, grids)):
        one, two, four = estimate(2), estimate(4), estimate(8)
        assert one.state_bytes == two.state_bytes == four.state_bytes
        assert two.activation_bytes == pytest.approx(2 * one.activation_bytes, rel=0.05)
        assert four.activation_bytes == pytest.approx(2 * two.activation_bytes, rel=0.05)


def test_world_size_splits_the_global_batch():
    sizes, grids = tiny_pyramid()
    whole = memory.generator_training_memory(ARLlamaGenerator, generator_config(batch_size=8), sizes, grids)
    split = memory.generator_training_memory(ARLlamaGenerator, generator_config(batch_size=32), sizes, grids,
                                             world_size=4)
    assert (split.batch, split.world_size) == (8, 4)
    assert split.activation_bytes == whole.activation_bytes
    assert "batch 8 of 32 over 4 GPUs" in split.describe()
    assert memory.per_gpu_batch(10, 4) == 3  # rank 0 takes the larger share
    uneven = memory.generator_training_memory(ARLlamaGenerator, generator_config(batch_size=10), sizes, grids,
                                              world_size=4)
    assert "batch 3 of 10 over 4 GPUs" in uneven.describe()  # the configured global batch, not 3 x 4
    with pytest.raises(memory.NotEstimated, match="train.batch_size 4 cannot be split over 8 processes"):
        memory.per_gpu_batch(4, 8)
    with pytest.raises(BadInput, match="at least 1"):
        memory.per_gpu_batch(4, 0)


def test_components_without_a_trace_are_not_estimated():
    with pytest.raises(memory.NotEstimated, match="MaskedTokenizer"):
        memory.tokenizer_training_memory(MaskedTokenizer, None, CLIP)


def test_validate_paper_prints_memory_for_tokenizer_and_generator(capsys):
    assert main(["validate", str(ROOT / "recipes" / "ablation_layers.yaml"), "--set", "scale=paper"]) == 0
    lines = capsys.readouterr().out.splitlines()
    tokenizers = [line for line in lines if line.startswith("    tokenizer ")]
    generators = [line for line in lines if line.startswith("    generator ")]
    assert len(tokenizers) == len(generators) == 2
    for line in tokenizers:
        assert "training memory per GPU at batch 8 (bf16, grad checkpointing): ~" in line
    for line in generators:
        assert "B parameters; training memory per GPU at batch 256 (bf16, grad checkpointing): ~" in line
        assert "GiB (state " in line and " + activations " in line


def test_validate_nproc_and_not_estimated(capsys):
    assert main(["validate", str(ROOT / "recipes" / "ablation_layers.yaml"), "--nproc", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("training memory per GPU at batch 4 of 8 over 2 GPUs (fp32)") == 4  # tokenizers, generators
    assert main(["validate", str(ROOT / "recipes" / "ablation_layers.yaml"), "--nproc", "8"]) == 0
    assert capsys.readouterr().out.count("training memory per GPU at batch 1 of 8 over 8 GPUs (fp32)") == 4
    assert main(["validate", str(ROOT / "recipes" / "ablation_layers.yaml"), "--nproc", "16"]) == 0
    out = capsys.readouterr().out
    assert out.count("training memory: not estimated (train.batch_size 8 cannot be split over 16 processes)") == 4
    assert main(["validate", str(ROOT / "recipes" / "ablation_masking.yaml")]) == 0
    assert "training memory: not estimated (no training trace for MaskedTokenizer)" in capsys.readouterr().out


def test_the_core_imports_no_built_in_plugin():
    """The memory estimate (and everything else in the core) reaches components only through their contract."""
    import ast

    core = ROOT / "hitvideo_bench"
    for path in core.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "hitbench_builtin" for n in names), f"{path} imports {names}"


def test_a_third_party_tokenizer_gets_an_estimate_from_its_own_trace():
    """A tokenizer outside the built-ins declares its training step and gets the same estimate a built-in does."""
    from hitvideo_bench.components import TrainingTrace

    class PluginTokenizer(HiTVideoTokenizer):
        @classmethod
        def training_trace(cls, config, clip_shape, batch, build, device):
            with build():
                net = torch.nn.Conv3d(3, 8, 3, padding=1)
                video = torch.rand(batch, 3, *clip_shape)
            return TrainingTrace(lambda: net(video).square().mean(), [net])

    estimate = memory.tokenizer_training_memory(PluginTokenizer, tokenizer_config(), CLIP, device="cpu")
    assert estimate.trainable_params == 8 * 3 * 27 + 8
    assert estimate.activation_bytes >= 4 * 8 * estimate.batch * math.prod(CLIP)  # the conv output, saved by square
