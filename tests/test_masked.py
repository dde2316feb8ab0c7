"""Dynamic encoding: the mask rule, the cap, the fill strategies, side information, round trips."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from hitvideo_bench.components import ComponentConfig, Tokenizer
from hitvideo_bench.errors import BadInput
from hitvideo_bench.manager import get_catalog
from hitvideo_bench.tokens import TokenPyramid
from hitbench_builtin.metrics.masking import MaskStats
from hitbench_builtin.tokenizers.masked import (MaskedConfig, MaskedTokenizer, fill, keep_mask,
                                                side_information_bits)


ROOT = Path(__file__).resolve().parent.parent


class FixtureBinaryTokenizer(Tokenizer):
    """Test fixture: 4x4 average pooling, each RGB channel quantised to its sign (codebook 2^3)."""

    Config = ComponentConfig

    @property
    def codebook_sizes(self):
        return [8]

    def token_grid_shapes(self, frames, height, width):
        return [(frames, height // 4, width // 4)]

    def quantized(self, video):
        pooled = torch.nn.functional.avg_pool3d(video, (1, 4, 4))
        return torch.where(pooled > 0.5, 1.0, -1.0)

    def encode(self, video):
        bits = (self.quantized(video) > 0).long()
        tokens = (bits * torch.tensor([1, 2, 4]).view(1, 3, 1, 1, 1)).sum(1)
        return TokenPyramid([tokens], [8])

    def tokens_to_latents(self, pyramid):
        tokens = pyramid.layers[0]
        bits = torch.stack([(tokens >> i) & 1 for i in range(3)], dim=1)
        return [bits.float() * 2 - 1]

    def decode_latents(self, latents, layers=None):
        return torch.nn.functional.interpolate((latents[0] + 1) / 2, scale_factor=(1, 4, 4))

    def latent_channels(self):
        return [3]

    def decode(self, pyramid, layers=None):
        return self.decode_latents(self.tokens_to_latents(pyramid), layers)


def masked(strategy="repeat", cap=0.85):
    config = MaskedConfig.from_preset("tiny", {"strategy": strategy, "cap": cap})
    return MaskedTokenizer(config, base=FixtureBinaryTokenizer(ComponentConfig()))


def test_below_average_positions_are_masked_and_the_first_frame_kept():
    latents = torch.zeros(1, 2, 3, 2, 2)
    latents[0, :, 1, 0, 0] = 4.0   # frame 1: one position changes a lot, the other three not at all
    latents[0, 0, 2] = torch.tensor([[1.0, 2.0], [3.0, 6.0]])  # frame 2 diffs vs frame 1: 5,2,3,6 -> mean 4
    keep = keep_mask(latents, cap=0.99, seed=0)
    assert keep[0, 0].all()
    assert keep[0, 1].tolist() == [[True, False], [False, False]]
    assert keep[0, 2].tolist() == [[True, False], [False, True]]


def test_a_static_clip_ends_at_exactly_the_cap_and_is_seeded():
    latents = torch.ones(2, 3, 5, 4, 5)
    keep = keep_mask(latents, cap=0.85, seed=3)
    per_frame = (~keep[:, 1:]).flatten(2).sum(-1)
    assert (per_frame == math.floor(0.85 * 20)).all()
    assert torch.equal(keep, keep_mask(latents, cap=0.85, seed=3))
    assert not torch.equal(keep, keep_mask(latents, cap=0.85, seed=4))


def test_fill_strategies_on_a_hand_built_example():
    latents = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]).view(1, 2, 4, 1, 1)
    keep = torch.tensor([True, False, False, True]).view(1, 4, 1, 1)
    assert fill(latents, keep, "repeat")[0, 0, :, 0, 0].tolist() == [1, 1, 1, 4]
    assert fill(latents, keep, "repeat")[0, 1, :, 0, 0].tolist() == [5, 5, 5, 8]
    assert fill(latents, keep, "zero")[0, 1, :, 0, 0].tolist() == [5, 0, 0, 8]
    learned = fill(latents, keep, "learned", torch.tensor([7.0, 8.0]))
    assert learned[0, :, :, 0, 0].tolist() == [[1, 7, 7, 4], [5, 8, 8, 8]]


def test_side_information_is_counted_in_the_bits():
    tok = masked()
    video = torch.rand(2, 3, 4, 16, 16)
    video[:, :, 1:] = video[:, :, :1]  # static after the first frame: much is redundant
    out = tok.compress(video)
    keep = out.pyramid.masks[0]
    kept = keep.flatten(1).sum(1).double()
    maskable = keep[:, 1:].flatten(1).shape[1]
    assert torch.allclose(out.bits, kept * 3 + maskable)
    assert "side information" in out.info["counted"]
    entropy_bits = side_information_bits(keep, "entropy")
    assert (entropy_bits <= maskable + 1e-9).all() and (entropy_bits > 0).all()
    assert torch.equal(side_information_bits(torch.ones(1, 3, 2, 2, dtype=torch.bool), "entropy"),
                       torch.zeros(1, dtype=torch.float64))


def test_static_clip_repeat_reconstructs_as_well_as_unmasked():
    tok = masked("repeat")
    video = torch.rand(1, 3, 4, 16, 16)
    video[:, :, 1:] = video[:, :, :1]
    full = tok.base.decode(tok.base.encode(video))
    assert torch.allclose(tok.decode(tok.encode(video)), full)
    zero = masked("zero")
    assert not torch.allclose(zero.decode(zero.encode(video)), full)


def test_keep_mask_round_trips_through_a_saved_pyramid(tmp_path):
    tok = masked()
    pyramid = tok.encode(torch.rand(2, 3, 4, 16, 16))
    pyramid.save(tmp_path / "p.safetensors")
    loaded = TokenPyramid.load(tmp_path / "p.safetensors")
    assert torch.equal(loaded.masks[0], pyramid.masks[0])
    assert torch.equal(tok.decode(loaded), tok.decode(pyramid))


def test_mask_stats():
    tok = masked()
    video = torch.rand(2, 3, 4, 16, 16)
    pyramid = tok.encode(video)
    metric = MaskStats()
    metric.update(pyramid=pyramid, pixels=torch.full((2,), 4 * 16 * 16.0))
    stats = metric.compute()
    keep = pyramid.masks[0]
    assert stats["tokens_kept"] == pytest.approx(float(keep.sum()) / 2)
    assert stats["tokens_saved"] == pytest.approx(64 - float(keep.sum()) / 2)
    assert stats["mask_ratio"] == pytest.approx(float((~keep[:, 1:]).float().mean()))
    assert stats["bpp_unmasked"] == pytest.approx(64 * 3 / 1024)


@pytest.mark.parametrize("overrides, message", [({"strategy": "blur"}, "'repeat', 'zero' or 'learned'"),
                                                ({"cap": 1.0}, "cap"), ({"cap": 0}, "cap")])
def test_bad_strategy_or_cap_rejected(overrides, message):
    with pytest.raises(BadInput, match=message):
        get_catalog().make_config("tokenizer", "masked", "tiny", overrides)


class FixtureNoHooksTokenizer(FixtureBinaryTokenizer):
    """Test fixture: the same tokenizer without the latent hooks dynamic encoding needs."""

    tokens_to_latents = Tokenizer.tokens_to_latents
    decode_latents = Tokenizer.decode_latents
    latent_channels = Tokenizer.latent_channels

    def decode(self, pyramid, layers=None):
        return FixtureBinaryTokenizer.decode_latents(self, FixtureBinaryTokenizer.tokens_to_latents(self, pyramid))


def test_a_base_without_the_latent_hooks_is_rejected_naming_them():
    """Kills: a base without hooks accepted (failing at run time), or a learned fill sized without its latents."""
    with pytest.raises(BadInput, match="tokens_to_latents.*decode_latents"):
        MaskedTokenizer(MaskedConfig.from_preset("tiny"), base=FixtureNoHooksTokenizer(ComponentConfig()))
    no_width = FixtureBinaryTokenizer(ComponentConfig())
    no_width.latent_channels = lambda: None
    with pytest.raises(BadInput, match="latent_channels"):
        MaskedTokenizer(MaskedConfig.from_preset("tiny", {"strategy": "learned"}), base=no_width)
    with pytest.raises(BadInput, match="decoder_parameters"):  # the fixture has no decoder to fine-tune
        MaskedTokenizer(MaskedConfig.from_preset("tiny", {"finetune_decoder": True}),
                        base=FixtureBinaryTokenizer(ComponentConfig()))


def test_the_wrapped_tokenizer_is_given_never_built_by_the_wrapper():
    """Contract v2: the core builds the tokenizer config.base names and passes it as base=; without it, a clear
    error (no catalog lookup inside the plugin)."""
    assert MaskedTokenizer.wraps == "base" and MaskedTokenizer.train_settings == "train"
    with pytest.raises(BadInput, match=r"needs the tokenizer it wraps.*'hitvideo'.*base="):
        MaskedTokenizer(MaskedConfig.from_preset("tiny"))


@pytest.mark.parametrize("strategy", ["repeat", "zero", "learned"])
def test_every_fill_trains_over_a_third_party_base(strategy, tmp_path, one_thread):
    """The example plugin's tokenizer (written from docs/plugins.md alone) under dynamic encoding: each fill
    fine-tunes the base's decoder through the shared trainer, and the learned fill has one value per latent bit."""
    import sys

    sys.path.insert(0, str(ROOT / "examples" / "hitbench-example-plugin"))
    from hitbench_example.tokenizer import PatchBinaryConfig, PatchBinaryTokenizer

    base = PatchBinaryTokenizer(PatchBinaryConfig.from_preset("tiny", {"bits": 6}))
    config = MaskedConfig.from_preset("tiny", {"strategy": strategy, "finetune_decoder": True,
                                               "train": {"steps": 2, "batch_size": 2}})
    tok = MaskedTokenizer(config, base=base)
    assert tok.trainable
    if strategy == "learned":
        assert tok.mask_embedding.shape == (6,)
    before = [p.detach().clone() for p in base.decoder.parameters()]
    data = get_catalog().create("dataset", "synthetic-shapes", preset="tiny", split="train")
    summary = tok.fit(data, workdir=tmp_path, device=torch.device("cpu"), seed=0, progress=False)
    assert summary["steps"] == 2 and summary["final"]["l1"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, base.decoder.parameters()))
    video = torch.stack([data[i]["video"] for i in range(2)])
    out = tok.compress(video)
    assert out.reconstruction.shape == video.shape and 0 <= float(out.reconstruction.min())
    assert float(out.reconstruction.max()) <= 1 and not bool(out.pyramid.masks[0].all())
