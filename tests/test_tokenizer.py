"""HiTVideo and single-layer tokenizers: exact paper shapes, causality, top-k decoding, LFQ, checkpoints."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from vector_quantize_pytorch import LFQ

import hitvideo_bench as hb
from hitbench_builtin.tokenizers.hitvideo import (HiTVideoConfig, HiTVideoTokenizer, SingleLayerConfig,
                                                  SingleLayerTokenizer, TokenizerTask)
from hitvideo_bench.checkpoint import load_tokenizer, save_pretrained
from hitvideo_bench.errors import ShapeError

#: a very small tokenizer for fast tests (the tiny preset's structure with fewer channels)
MICRO = {"channels": 8, "z_channels": 16, "quant_dims": [6, 5, 4, 3], "disc_channels": 8,
         "train": {"steps": 4, "batch_size": 2, "checkpoint_every": 2, "log_every": 1}}


def micro(cls=HiTVideoTokenizer, **over) -> HiTVideoTokenizer:
    torch.manual_seed(0)
    base = dict(MICRO)
    if cls is SingleLayerTokenizer:
        base["quant_dims"] = [6]
    return cls(cls.Config.from_preset("tiny", {**base, **over}))


def fixture_video(batch=2, frames=16, size=32, seed=0) -> torch.Tensor:
    """Fixture: smooth random clips in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, frames // 4, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(low, size=(frames, size, size), mode="trilinear")


def test_paper_preset_reproduces_table_4_exactly():
    cfg = HiTVideoConfig.from_preset("paper")
    grids = HiTVideoTokenizer.grid_shapes(cfg, 64, 256, 256)
    assert grids == [(8, 16, 16), (4, 8, 8), (2, 8, 8), (1, 4, 4)]
    assert [math.prod(g) for g in grids] == [2048, 256, 128, 16]
    assert sum(math.prod(g) for g in grids) == 2448
    assert cfg.quant_dims == [18, 16, 14, 12]
    with torch.device("meta"):
        tok = HiTVideoTokenizer(cfg)
    assert tok.codebook_sizes == [2 ** 18, 2 ** 16, 2 ** 14, 2 ** 12]
    assert round(64 * 256 * 256 / 2448, 1) == 1713.4
    bits = sum(math.prod(g) * d for g, d in zip(grids, cfg.quant_dims))
    assert bits == 42944 and round(bits / (64 * 256 * 256), 4) == 0.0102
    assert HiTVideoTokenizer.parameter_count(cfg) > 50_000_000


def test_single_layer_paper_preset_is_8x17x17():
    cfg = SingleLayerConfig.from_preset("paper")
    assert SingleLayerTokenizer.grid_shapes(cfg, 64, 256, 256) == [(8, 17, 17)]
    assert cfg.quant_dims == [18]


@pytest.mark.parametrize("preset,clip", [("tiny", (16, 64, 64)), ("small", (32, 128, 128))])
def test_smaller_presets_keep_the_structure(preset, clip):
    multi = HiTVideoTokenizer.grid_shapes(HiTVideoConfig.from_preset(preset), *clip)
    single = SingleLayerTokenizer.grid_shapes(SingleLayerConfig.from_preset(preset), *clip)
    tokens = [math.prod(g) for g in multi]
    assert len(multi) == 4
    assert tokens[0] >= 0.8 * sum(tokens)
    dims = HiTVideoConfig.from_preset(preset).quant_dims
    assert dims == sorted(dims, reverse=True) and len(set(dims)) == 4
    assert abs(math.prod(single[0]) - sum(tokens)) <= 0.1 * sum(tokens)


def test_a_shape_the_preset_cannot_take_is_a_clear_error():
    tok = micro()
    with pytest.raises(ShapeError, match="frames 12 .*multiple of 16"):
        tok.token_grid_shapes(12, 64, 64)
    with pytest.raises(ShapeError, match="height 40 .*multiple of 32"):
        tok.token_grid_shapes(16, 40, 64)


def test_encode_decode_shapes_and_topk_decoding():
    tok = micro().eval()
    video = fixture_video()
    pyramid = tok.encode(video)
    assert pyramid.grid_shapes == tok.token_grid_shapes(16, 32, 32)
    assert pyramid.codebook_sizes == [64, 32, 16, 8]
    outs = [tok.decode(pyramid, layers=k) for k in range(1, 5)]
    assert all(o.shape == video.shape for o in outs)
    assert torch.equal(outs[-1], tok.decode(pyramid))
    # each added layer changes the output: finer layers add their detail
    assert all(not torch.allclose(a, b) for a, b in zip(outs, outs[1:]))


def test_single_layer_resizes_in_and_out():
    tok = micro(SingleLayerTokenizer).eval()
    video = fixture_video(size=64)
    pyramid = tok.encode(video)
    assert pyramid.grid_shapes == [(4, 9, 9)]
    assert tok.decode(pyramid).shape == video.shape


def test_tokens_are_causal_in_time():
    tok = micro().eval()
    with torch.no_grad():  # residual branches start at zero: give every conv weights so all paths are tested
        for p in tok.parameters():
            p.add_(0.1 * torch.randn_like(p))
    video = fixture_video(frames=32)
    later = video.clone()
    later[:, :, 16:] = torch.rand_like(later[:, :, 16:])  # change the second half only
    a, b = tok.encode(video), tok.encode(later)
    for layer, (ta, tb) in enumerate(zip(a.layers, b.layers)):
        span = 32 // ta.shape[1]  # input frames per latent frame of this layer
        untouched = 16 // span
        assert torch.equal(ta[:, :untouched], tb[:, :untouched]), f"layer {layer} looked ahead"
    assert not torch.equal(a.layers[0][:, 2:], b.layers[0][:, 2:])  # the changed frames do change tokens


def test_quantiser_is_the_library_lfq_and_codes_round_trip():
    tok = micro().eval()
    video = fixture_video()
    zs = tok.latents(video)
    pyramid = tok.encode(video)
    for layer, q in enumerate(tok.quantizers):
        assert isinstance(q, LFQ)
        projected = tok.pre[layer](zs[layer])
        ref = LFQ(dim=q.dim, codebook_size=q.codebook_size, channel_first=True).eval()
        _, ref_idx, _ = ref(projected)
        assert torch.equal(ref_idx.long(), pyramid.layers[layer])
        codes = tok.tokens_to_latents(pyramid)[layer]
        assert torch.equal(codes, torch.where(projected > 0, 1.0, -1.0))


def test_training_step_uses_progressive_schedule_and_all_losses():
    tok = micro(loss={"adversarial": 0.1, "adversarial_start": 0.5}, progressive=[0, 0.25, 0.5, 0.75])
    task = TokenizerTask(tok, "cpu")
    assert [task.active_layers(s) for s in (0, 1, 2)] == [1, 2, 3]  # layers join at steps 0, 1, 2, 3 of 4
    assert task.adversarial_from == 2
    assert task.perceptual_status.startswith("off")  # no LPIPS weights on a test machine
    single = TokenizerTask(micro(SingleLayerTokenizer), "cpu")
    assert all(single.active_layers(s) == 1 for s in range(4))


def test_residual_blocks_start_as_their_skip_path():
    from hitbench_builtin.tokenizers.hitvideo import ResBlock

    x = torch.randn(2, 8, 4, 6, 6)
    for factorized in (True, False):
        assert torch.equal(ResBlock(8, 8, factorized)(x), x)
        wider = ResBlock(8, 16, factorized)
        assert torch.equal(wider(x), wider.skip(x))


def test_temporal_conv_gives_the_3d_conv_it_stands_for_and_its_gradients():
    from hitbench_builtin.tokenizers.hitvideo import temporal_conv

    torch.manual_seed(0)
    for stride in (1, 2):
        conv = torch.nn.Conv3d(6, 5, (3, 1, 1), stride=(stride, 1, 1))
        x = torch.randn(2, 6, 9, 5, 7, requires_grad=True)
        ours, ref = temporal_conv(x, conv), conv(x)
        torch.testing.assert_close(ours, ref)
        grad = torch.randn_like(ref)
        for a, b in zip(torch.autograd.grad(ours, (x, conv.weight, conv.bias), grad),
                        torch.autograd.grad(ref, (x, conv.weight, conv.bias), grad)):
            torch.testing.assert_close(a, b)


def test_training_loss_mixes_l1_and_squared_error_by_their_weights():
    tok = micro(loss={"l1": 0.5, "l2": 3.0}, layer_drop=0.0)
    logs = TokenizerTask(tok, "cpu").training_step({"video": fixture_video(size=32)}, 0, BackwardOnly())
    assert logs["loss"] == pytest.approx(0.5 * logs["l1"] + 3.0 * logs["l2"] + logs["lfq_aux"], rel=1e-5)
    tiny, paper = HiTVideoConfig().loss, HiTVideoConfig.from_preset("paper").loss
    assert (tiny.l1, tiny.l2) == (0, 10) and (paper.l1, paper.l2) == (1, 0)  # tiny: squared error; paper: L1


def test_entropy_terms_sample_a_share_of_the_tokens_but_never_fewer_than_64():
    tok = micro(loss={"entropy_sample_fraction": 0.25})
    assert tok.entropy_fraction(torch.zeros(2, 6, 4, 8, 8)) == 0.25  # 512 tokens: 128 sampled
    assert tok.entropy_fraction(torch.zeros(2, 6, 4, 4, 4)) == 0.5  # 128 tokens: 64
    assert tok.entropy_fraction(torch.zeros(2, 6, 1, 2, 2)) == 1.0  # 8 tokens: all of them (a quarter would be 2)
    tok.train()
    _, _, aux = tok.quantize(tok.latents(fixture_video(batch=1, size=32)))  # the coarsest layer holds 1 token
    assert torch.isfinite(aux)


class BackwardOnly:
    """Fixture: a trainer whose step only back-propagates, so that a test can read the gradients."""

    def autocast(self):
        return contextlib.nullcontext()

    def step(self, loss, group):
        loss.backward()


@pytest.mark.parametrize("drop_trains_decoder", [False, True])
def test_layer_drop_steps_train_the_coarse_layers_and_not_the_decoder(drop_trains_decoder):
    tok = micro(progressive=[0, 0.25, 0.5, 0.75], layer_drop=1.0, layer_drop_trains_decoder=drop_trains_decoder)
    task = TokenizerTask(tok, "cpu")
    batch = {"video": fixture_video(size=32)}

    def gradients(step):
        torch.manual_seed(1)
        k = task.active_layers(step)  # the step draws the same (32-px clips are not cropped)
        tok.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        task.training_step(batch, step, BackwardOnly())
        return k, {name: p.grad is not None for name, p in tok.named_parameters()}

    k, grads = gradients(1)  # progressive: two coarsest layers, the decoder learns with them
    assert k == 2 and all(v for n, v in grads.items() if n.startswith("decoder."))
    k, grads = gradients(3)  # after the schedule every step drops (layer_drop 1): 1 to 3 coarse layers
    assert k < 4
    assert all(v == drop_trains_decoder for n, v in grads.items() if n.startswith("decoder."))
    assert grads["absent"] and grads["post.3.weight"] and not grads["post.0.weight"]
    assert all(p.requires_grad for p in tok.parameters())  # the freeze ends with the step


def test_left_out_layers_are_replaced_by_their_learned_stand_in():
    tok = micro().eval()
    pyramid = tok.encode(fixture_video())
    before = [tok.decode(pyramid, layers=k) for k in (1, 4)]
    with torch.no_grad():
        tok.absent.add_(1.0)
    assert not torch.equal(tok.decode(pyramid, layers=1), before[0])
    assert torch.equal(tok.decode(pyramid, layers=4), before[1])  # nothing left out: no stand-in
    assert micro(SingleLayerTokenizer).absent is None


def test_fit_checkpoint_round_trip_and_resume(tmp_path):
    from hitbench_builtin.datasets.synthetic import SyntheticShapes

    data = SyntheticShapes(SyntheticShapes.Config.from_preset("tiny", {"train_clips": 8}), "train")  # 64 px
    setup = {"loss": {"adversarial": 0.1, "adversarial_start": 0.5}, "crop_until": 0.5}  # 2 crop steps, 2 whole
    a = micro(**setup)
    summary = a.fit(data, workdir=tmp_path / "a", device="cpu", seed=0, progress=False)
    assert summary["steps"] == 4 and "d_hinge" in summary["losses"][-1]

    b = micro(**setup, train={**MICRO["train"], "steps": 4})
    original = TokenizerTask.training_step

    def crash(self, batch, step, trainer):
        if step == 3:
            raise KeyboardInterrupt
        return original(self, batch, step, trainer)

    TokenizerTask.training_step = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            b.fit(data, workdir=tmp_path / "b", device="cpu", seed=0, progress=False)
    finally:
        TokenizerTask.training_step = original
    b = micro(**setup)
    b.fit(data, workdir=tmp_path / "b", device="cpu", seed=0, progress=False)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k

    save_pretrained(a, tmp_path / "saved", "tokenizer", "hitvideo")
    loaded = hb.load_tokenizer(tmp_path / "saved")
    assert isinstance(loaded, HiTVideoTokenizer)
    video = fixture_video()
    assert torch.equal(a.eval().encode(video).layers[0], loaded.encode(video).layers[0])
    assert torch.equal(load_tokenizer(tmp_path / "saved").decode(loaded.encode(video)), a.decode(a.encode(video)))


def test_training_crops_then_whole_clips_at_the_same_pixels_per_step():
    task = TokenizerTask(micro(crop_until=0.5), "cpu")  # tiny: 32-pixel crops; 4 steps
    pixel = torch.arange(64.0 * 64).view(1, 1, 1, 64, 64)  # value = y * 64 + x, plus 10^4 per clip
    video = (pixel + 1e4 * torch.arange(4.0).view(4, 1, 1, 1, 1)).expand(4, 3, 16, 64, 64)
    torch.manual_seed(0)
    crops, resized = task.training_clips(video, step=1)
    assert crops.shape == (4, 3, 16, 32, 32) and resized
    for b, crop in enumerate(crops):  # each crop is a window of its own clip
        y0, x0 = divmod(int(crop[0, 0, 0, 0]) - b * 10_000, 64)
        assert torch.equal(crop, video[b, :, :, y0:y0 + 32, x0:x0 + 32])
    torch.manual_seed(0)
    assert torch.equal(task.training_clips(video, step=1)[0], crops)  # offsets come from the (checkpointed) RNG
    whole, resized = task.training_clips(video, step=2)
    assert torch.equal(whole, video[:1]) and not resized  # 4 clips x 32^2 pixels = 1 clip x 64^2

    one_layer = {"quant_dims": [6], "layer_strides": [], "crop_frames": 4, "crop_size": None}
    frames = TokenizerTask(micro(**one_layer), "cpu")  # 4-frame crops on latent-frame boundaries
    clip = torch.arange(16.0).view(1, 1, 16, 1, 1).expand(8, 3, 16, 64, 64)
    crops, _ = frames.training_clips(clip, step=0)
    assert {int(c[0, 0, 0, 0]) for c in crops} <= {0, 4, 8, 12} and crops.shape == (8, 3, 4, 64, 64)


def test_single_layer_crops_are_cut_after_resizing_and_trained_without_resizing_again():
    single = micro(SingleLayerTokenizer)  # 64 px clips are resized to 72 px; 32-pixel crops of those
    task = TokenizerTask(single, "cpu")
    video = torch.rand(4, 3, 16, 64, 64)
    torch.manual_seed(0)
    crops, resized = task.training_clips(video, step=0)
    assert crops.shape == (4, 3, 16, 32, 32) and resized
    big = single.resize_input(video)
    assert big.shape[-2:] == (72, 72)
    assert all(any(torch.equal(crop, big[b, :, :, y:y + 32, x:x + 32]) for y in range(41) for x in range(41))
               for b, crop in enumerate(crops))
    rec, _ = single(crops, resized=True)  # 32 px crops make 4x4 token grids: no resize in or out
    assert rec.shape == crops.shape
    whole, resized = task.training_clips(video, step=3)
    assert whole.shape == (1, 3, 16, 64, 64) and not resized  # as many clips as hitvideo: 4 x 32^2 px = 1 x 64^2
    assert single(whole)[0].shape == whole.shape
    logs = task.training_step({"video": video}, 0, BackwardOnly())  # the step trains on the crops as they are
    assert logs["layers"] == 1 and math.isfinite(logs["loss"])


def test_a_crop_the_tokenizer_cannot_take_names_the_field():
    task = TokenizerTask(micro(SingleLayerTokenizer, crop_size=36), "cpu")  # 36 px crops of 72 px: 4.5 tokens
    with pytest.raises(ShapeError, match="crop_size 36 on 16x64x64 clips: height 36 does not suit"):
        task.training_clips(torch.rand(2, 3, 16, 64, 64), step=0)


def test_a_nested_override_keeps_the_other_defaults():
    cfg = HiTVideoConfig.from_preset("tiny", {"train": {"eval_every": 40}})
    assert cfg.train.eval_every == 40
    assert cfg.train.steps == HiTVideoConfig().train.steps and cfg.train.lr == HiTVideoConfig().train.lr
    assert HiTVideoConfig.from_preset("paper", {"train": {"steps": 5}}).train.precision == "bf16"


@pytest.mark.parametrize("preset,clip", [("tiny", (16, 64, 64)), ("small", (32, 128, 128)), ("paper", (64, 256, 256))])
def test_dropping_a_spatial_down_sampling_keeps_the_grids_at_half_the_resolution(preset, clip):
    frames, h, w = clip
    full = HiTVideoTokenizer.grid_shapes(HiTVideoConfig.from_preset(preset), frames, h, w)
    low = HiTVideoConfig.from_preset(preset, {"drop_spatial_down": 1})
    assert HiTVideoTokenizer.grid_shapes(low, frames, h // 2, w // 2) == full
    with pytest.raises(ValueError, match="drop_spatial_down 9 exceeds"):
        HiTVideoConfig.from_preset(preset, {"drop_spatial_down": 9})


@pytest.mark.parametrize("coarse_grad", [False, True])
def test_coarse_layers_train_the_main_encoder_only_when_asked(coarse_grad):
    tok = micro(coarse_grad_to_encoder=coarse_grad)
    zs = tok.latents(fixture_video())
    sum(z.sum() for z in zs[1:]).backward()  # a loss on the coarse layers alone
    encoder_grad = sum(float(p.grad.abs().sum()) for p in tok.encoder.parameters() if p.grad is not None)
    assert (encoder_grad > 0) is coarse_grad
    assert all(p.grad is not None for p in tok.stages.parameters())
