"""The ar-llama generator: sequence order, 3D RoPE, per-layer vocabularies, sampling (seed, KV-cache,
CFG), training, overfitting, checkpoints, text encoders and the paper preset's size."""

from __future__ import annotations

import socket
import warnings

import pytest
import torch

from hitbench_builtin.generators.ar_llama import ARLlamaConfig, ARLlamaGenerator
from hitbench_builtin.generators.rope3d import Rotary3D, sequence_positions, video_layout
from hitbench_builtin.generators.text import TextEncoder
from hitvideo_bench.errors import BadInput, WeightsUnavailable
from hitvideo_bench.memory import SavedTensorBytes
from hitvideo_bench.tokens import TokenPyramid

FIXTURE_SIZES = [64, 32, 16]
FIXTURE_GRIDS = [(2, 4, 4), (1, 2, 2), (1, 1, 1)]  # densest first: 32 + 4 + 1 = 37 tokens
CLIP = (8, 32, 32)  # the clip shape the fixture generators are built for (the fixture tokenizer's grids ignore it)
PROMPTS = ["a big red circle moves left", "a small blue square stays still",
           "a green triangle moves up", "a yellow star moves right"]


pytestmark = pytest.mark.usefixtures("one_thread")


class FixtureTokenizer:
    """Test fixture: only what a generator reads from a tokenizer (no real encoder/decoder)."""

    codebook_sizes = FIXTURE_SIZES

    def token_grid_shapes(self, frames, height, width):
        return list(FIXTURE_GRIDS)


def fixture_generator(**overrides) -> ARLlamaGenerator:
    """A small generator over the fixture pyramid, dropout off unless asked for."""
    torch.manual_seed(overrides.pop("init_seed", 0))
    base = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "text_len": 16,
            "resid_dropout": 0.0, "ffn_dropout": 0.0, "token_dropout": 0.0, "cond_drop": 0.0}
    return ARLlamaGenerator(ARLlamaConfig.from_preset("tiny", {**base, **overrides}), FixtureTokenizer(),
                            clip_shape=CLIP).eval()


def fixture_pyramid(batch: int, seed: int = 0) -> TokenPyramid:
    """Random tokens on the fixture grids, one pyramid per clip."""
    g = torch.Generator().manual_seed(seed)
    return TokenPyramid([torch.randint(0, s, (batch, *grid), generator=g) for s, grid in zip(FIXTURE_SIZES, FIXTURE_GRIDS)],
                        list(FIXTURE_SIZES))


def same(a: TokenPyramid, b: TokenPyramid) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.layers, b.layers))


# ------------------------------------------------------------------------------------------ sequence


def test_sequence_is_coarse_to_fine_raster_with_layer_ids():
    gen = fixture_generator()
    order, layer_ids, coords, ranges = gen.layout()
    assert order == [2, 1, 0]
    assert layer_ids.tolist() == [2] * 1 + [1] * 4 + [0] * 32
    assert ranges == {2: (0, 1), 1: (1, 5), 0: (5, 37)}
    # layer 1's grid (1, 2, 2) in raster order, then layer 0's (2, 4, 4) starting at t=0
    assert coords[1:5].tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]]
    assert coords[5:9].tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 0, 3]]
    assert coords[5 + 16].tolist() == [1, 0, 0] and coords[-1].tolist() == [1, 3, 3]
    pyramid = fixture_pyramid(2)
    flat = gen.flatten(pyramid)
    assert flat.shape == (2, 37)
    assert torch.equal(flat[:, 0], pyramid.layers[2].flatten(1)[:, 0])
    assert torch.equal(flat[:, 1:5], pyramid.layers[1].flatten(1))
    assert torch.equal(flat[:, 5:], pyramid.layers[0].flatten(1))
    assert same(gen.unflatten(flat), pyramid)


def test_coarse_tokens_never_attend_to_finer_ones():
    """Changing dense (layer 0) tokens leaves every coarser prediction unchanged, and changes dense ones."""
    gen = fixture_generator()
    pyramid = fixture_pyramid(2, seed=1)
    feats, mask = gen.encode_text(PROMPTS[:2], "cpu")
    text_h, text_mask = gen.text_prefix(feats, mask)
    with torch.no_grad():
        before = gen(gen.flatten(pyramid), text_h, text_mask)
        changed = fixture_pyramid(2, seed=1)
        changed.layers[0] = (changed.layers[0] + 1) % FIXTURE_SIZES[0]
        after = gen(gen.flatten(changed), text_h, text_mask)
        changed_mid = fixture_pyramid(2, seed=1)
        changed_mid.layers[1] = (changed_mid.layers[1] + 1) % FIXTURE_SIZES[1]
        after_mid = gen(gen.flatten(changed_mid), text_h, text_mask)
    assert torch.equal(before[2], after[2]) and torch.equal(before[1], after[1])
    assert torch.allclose(before[0][:, :1], after[0][:, :1])  # first dense token: sees no dense token yet
    assert not torch.allclose(before[0][:, 1:], after[0][:, 1:])
    assert torch.equal(before[2], after_mid[2])
    assert not torch.allclose(before[0], after_mid[0])  # the densest layer does see the coarser one
    # each layer's logits cover only its own codebook
    assert [before[i].shape[-1] for i in range(3)] == FIXTURE_SIZES


# ------------------------------------------------------------------------------------------ 3D RoPE


def test_3d_positions_text_diagonal_and_per_layer_grid():
    text_len = 5
    _, layer_ids, coords = video_layout(FIXTURE_GRIDS)
    pos = sequence_positions(text_len, coords)
    assert pos.shape == (3, text_len + 1 + 37)
    for i in range(text_len + 1):  # text and the start slot on the diagonal
        assert pos[:, i].tolist() == [i, i, i]
    offset = text_len + 1
    assert pos[:, offset].tolist() == [offset] * 3  # the single coarsest token at its grid origin
    # the last dense token is at (1, 3, 3) of layer 0's grid; the last layer-1 token at (0, 1, 1) of its grid
    assert (pos[:, -1] - offset).tolist() == [1, 3, 3]
    assert (pos[:, offset + 4] - offset).tolist() == [0, 1, 1]


def test_clip_frame_puts_a_coarse_token_at_the_centre_of_the_dense_tokens_it_covers():
    """rope_frame 'clip': every layer on the densest grid, a coarse token amid the dense tokens of its region
    (in the per-layer frame the same tokens sit up to the whole grid apart)."""
    _, layer_ids, coords = video_layout(FIXTURE_GRIDS, "clip")
    _, _, own = video_layout(FIXTURE_GRIDS, "layer")
    dense = coords[layer_ids == 0]  # (2, 4, 4) raster
    assert coords[layer_ids == 2].tolist() == [[0.5, 1.5, 1.5]]  # the 1x1x1 layer: the centre of the clip
    layer1 = coords[layer_ids == 1]  # (1, 2, 2): each covers 2x2x2 dense tokens
    for i, (h, w) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        region = [dense[t * 16 + y * 4 + x] for t in range(2) for y in (2 * h, 2 * h + 1) for x in (2 * w, 2 * w + 1)]
        centre = torch.stack(region).mean(0)
        assert torch.allclose(layer1[i], centre)
        assert max(float((layer1[i] - r).abs().max()) for r in region) <= 0.5 + 1e-6  # nearby: half a dense step
    assert torch.equal(dense, own[layer_ids == 0])  # the densest layer is where it was
    with pytest.raises(BadInput, match="rope_frame"):
        video_layout(FIXTURE_GRIDS, "world")


def test_layer_weights_are_distinct_and_balance_codebook_bits():
    """The default rule weighs a layer by 1 / log2(codebook): distinct per layer, mean 1, reported in training."""
    gen = fixture_generator()
    bits = [torch.tensor(float(s)).log2().item() for s in FIXTURE_SIZES]
    expected = [1 / b for b in bits]
    expected = [w * len(bits) / sum(expected) for w in expected]
    assert gen.layer_weights == pytest.approx(expected) and len(set(gen.layer_weights)) == len(set(FIXTURE_SIZES))
    assert fixture_generator(layer_loss_weights="equal").layer_weights == [1.0] * 3
    assert fixture_generator(layer_loss_weights=[1.0, 1.0, 2.0]).layer_weights == pytest.approx([0.75, 0.75, 1.5])


def test_rotary_uses_all_three_axes():
    rot = Rotary3D(head_dim=24)  # 12 frequencies: t 4, h 4, w 4
    assert rot.sections == (4, 4, 4)
    x = torch.zeros(1)
    base = torch.tensor([[[3]], [[3]], [[3]]])
    cos0, _ = rot(x, base)
    for axis in range(3):
        moved = base.clone()
        moved[axis] += 1
        cos1, _ = rot(x, moved)
        diff = (cos1 - cos0).abs()[0, 0, :12] > 1e-6
        owned = torch.zeros(12, dtype=torch.bool)
        owned[axis * 4:(axis + 1) * 4] = True
        assert torch.equal(diff, owned), f"axis {axis} should move exactly its own rotary frequencies"


def test_rotary_cos_sin_reach_the_decoder_layers():
    gen = fixture_generator()
    seen = []
    handle = gen.layers[0].self_attn.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["position_embeddings"]), with_kwargs=True)
    feats, mask = gen.encode_text(PROMPTS[:1], "cpu")
    text_h, text_mask = gen.text_prefix(feats, mask)
    with torch.no_grad():
        gen(gen.flatten(fixture_pyramid(1)), text_h, text_mask)
    handle.remove()
    cos, sin = seen[0]
    _, _, coords, _ = gen.layout()
    positions = sequence_positions(16, coords)[:, :16 + 37]
    want_cos, want_sin = gen.rotary(text_h, positions.unsqueeze(1))
    assert cos.shape == (1, 16 + 37, gen.llama_config.head_dim)
    assert torch.equal(cos, want_cos) and torch.equal(sin, want_sin)


# ------------------------------------------------------------------------------------------ sampling


def test_samples_lie_in_their_layer_codebook_and_grid():
    gen = fixture_generator(init_seed=3)
    with torch.no_grad():  # make the heads favour high ids: out-of-range ids would show up if heads were shared
        for head in gen.heads:
            head.weight.mul_(20)
    pyramid = gen.sample(PROMPTS, seed=0, temperature=1.5)
    assert pyramid.grid_shapes == FIXTURE_GRIDS and pyramid.codebook_sizes == FIXTURE_SIZES
    for tokens, size in zip(pyramid.layers, FIXTURE_SIZES):
        assert tokens.dtype == torch.long and 0 <= int(tokens.min()) and int(tokens.max()) < size
    assert int(pyramid.layers[0].max()) >= FIXTURE_SIZES[2]  # the dense layer uses its larger vocabulary


def test_sampling_is_deterministic_for_a_seed_and_varies_across_seeds():
    gen = fixture_generator()
    a = gen.sample(PROMPTS[:2], seed=7, top_k=20, top_p=0.95)
    b = gen.sample(PROMPTS[:2], seed=7, top_k=20, top_p=0.95)
    c = gen.sample(PROMPTS[:2], seed=8, top_k=20, top_p=0.95)
    assert same(a, b) and not same(a, c)


def test_kv_cache_gives_the_same_tokens_as_recomputing():
    gen = fixture_generator(init_seed=1, initializer_range=0.3)  # large weights: positions change the logits a lot
    feats, mask = gen.encode_text(PROMPTS[:2], "cpu")
    steps = {True: [], False: []}
    for use_cache, out in steps.items():
        gen.generate(feats, mask, temperature=1.0, seed=2, use_cache=use_cache, logits_out=out)
    tokens = gen.generate(feats, mask, temperature=1.0, seed=2)
    with torch.no_grad():
        forced = gen(tokens, *gen.text_prefix(feats, mask))  # teacher-forced on the sampled tokens
    _, _, _, ranges = gen.layout()
    assert len(steps[True]) == len(steps[False]) == 37
    for layer, (lo, hi) in ranges.items():
        for n in range(lo, hi):
            cached, full = steps[True][n], steps[False][n]
            assert cached.shape == (2, FIXTURE_SIZES[layer])
            assert torch.allclose(cached, full, atol=1e-4), n
            assert torch.allclose(cached, forced[layer][:, n - lo], atol=1e-4), n
    for kwargs in ({"temperature": 0.0}, {"temperature": 1.0, "seed": 5}, {"temperature": 0.0, "cfg_scale": 2.5}):
        cached = gen.sample(PROMPTS[:2], use_cache=True, **kwargs)
        full = gen.sample(PROMPTS[:2], use_cache=False, **kwargs)
        assert same(cached, full), kwargs


def test_cfg_runs_both_streams_in_one_batch_and_scale_one_is_conditional():
    gen = fixture_generator(init_seed=2)
    batches = []
    handle = gen.layers[0].register_forward_pre_hook(lambda mod, args: batches.append(args[0].shape[0]))
    gen.sample(PROMPTS[:3], cfg_scale=3.0, temperature=0.0)
    assert set(batches) == {6}
    batches.clear()
    gen.sample(PROMPTS[:3], cfg_scale=1.0, temperature=0.0)
    assert set(batches) == {3}
    handle.remove()
    feats, mask = gen.encode_text(PROMPTS[:3], "cpu")
    plain = gen.generate(feats, mask, guide=False, temperature=0.0)
    guided_at_one = gen.generate(feats, mask, guide=True, cfg_scale=1.0, temperature=0.0)
    assert torch.equal(plain, guided_at_one)  # the unconditional stream does not disturb the conditional one
    strong = gen.generate(feats, mask, guide=True, cfg_scale=8.0, temperature=0.0)
    assert not torch.equal(plain, strong)


def test_a_fresh_generator_samples_on_its_tokenizers_grids_and_rejects_bad_settings():
    gen = ARLlamaGenerator(ARLlamaConfig.from_preset("tiny", {"hidden_size": 32, "num_heads": 2}), FixtureTokenizer(),
                           clip_shape=CLIP)
    assert gen.grid_shapes == FIXTURE_GRIDS and gen.codebook_sizes == FIXTURE_SIZES and gen.clip_shape == CLIP
    assert gen.sample(["x"], temperature=0.0).grid_shapes == FIXTURE_GRIDS  # untrained, never fitted
    config = gen.config.model_dump()
    assert "grid_shapes" not in config and "codebook_sizes" not in config  # not settings: the tokenizer's
    with pytest.raises(BadInput, match="top_p"):
        fixture_generator().sample(["x"], top_p=1.5)
    with pytest.raises(BadInput, match="layer_loss_weights"):
        fixture_generator(layer_loss_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="codebook_sizes"):  # no such setting any more
        fixture_generator(codebook_sizes=[64, 32, 8])


def test_training_data_on_other_grids_or_codebooks_is_rejected_by_name():
    gen = fixture_generator()
    captions = PROMPTS[:2]
    other_grids = TokenPyramid([torch.zeros(2, 1, 4, 4, dtype=torch.long), *fixture_pyramid(2).layers[1:]],
                               list(FIXTURE_SIZES))
    with pytest.raises(BadInput, match=r"training pyramid grids \[\(1, 4, 4\).* differ from the generator's"):
        gen.training_task((other_grids, captions), torch.device("cpu"))
    other_codebooks = TokenPyramid(fixture_pyramid(2).layers, [64, 32, 32])
    with pytest.raises(BadInput, match=r"training pyramid codebooks \[64, 32, 32\] differ from the generator's"):
        gen.training_task((other_codebooks, captions), torch.device("cpu"))


# ------------------------------------------------------------------------------------------ training


def test_training_reduces_the_loss(tmp_path):
    gen = fixture_generator(resid_dropout=0.1, ffn_dropout=0.1, token_dropout=0.1, cond_drop=0.1,
                            layer_loss_weights=[1.0, 2.0, 4.0],
                            train={"steps": 30, "batch_size": 8, "lr": 3e-3, "warmup_steps": 0})
    pyramids = fixture_pyramid(8, seed=4)
    pyramids.layers[1][:] = 3  # something learnable
    summary = gen.fit(pyramids, [PROMPTS[i % 4] for i in range(8)], workdir=tmp_path, device=torch.device("cpu"),
                      seed=0, progress=False)
    first, last = summary["losses"][0], summary["losses"][-1]
    assert summary["steps"] == 30 and {"loss", "ce/L0", "ce/L1", "ce/L2"} <= set(last)
    assert last["loss"] < first["loss"] and last["ce/L1"] < 0.5 * first["ce/L1"]
    assert gen.grid_shapes == FIXTURE_GRIDS and "grid_shapes" not in gen.config.model_dump()  # nothing written back


def test_overfits_four_clips_and_greedy_sampling_reproduces_them(tmp_path):
    gen = fixture_generator(train={"steps": 150, "batch_size": 4, "lr": 3e-3})
    pyramids = fixture_pyramid(4, seed=9)
    summary = gen.fit(pyramids, PROMPTS, workdir=tmp_path, device=torch.device("cpu"), seed=0, progress=False)
    start, end = summary["losses"][0]["loss"], summary["losses"][-1]["loss"]
    assert end < 0.1 * start, (start, end)
    assert same(gen.sample(PROMPTS, temperature=0.0), pyramids)
    bits = gen.nll_bits_per_token(pyramids, PROMPTS)
    assert set(bits) == {0, 1, 2} and max(bits.values()) < 0.5


def test_cond_drop_swaps_in_the_unconditional_embedding_for_the_dropped_rows_only():
    gen = fixture_generator()
    torch.nn.init.normal_(gen.uncond)
    feats, mask = torch.randn(3, 16, gen.text_proj.in_features), torch.zeros(3, 16, dtype=torch.bool)
    mask[:, :5] = True
    kept_h, kept_mask = gen.text_prefix(feats, mask)
    h, dropped_mask = gen.text_prefix(feats, mask, drop=torch.tensor([False, True, False]))
    assert torch.equal(h[1], gen.uncond) and dropped_mask[1].all()  # the whole prefix is the learned embedding
    assert torch.equal(h[[0, 2]], kept_h[[0, 2]]) and torch.equal(dropped_mask[[0, 2]], kept_mask[[0, 2]])
    assert torch.equal(gen.uncond_prefix(2, "cpu")[0][0], gen.uncond)  # what guidance samples with


@pytest.mark.parametrize("dropout", ["resid_dropout", "ffn_dropout", "token_dropout", "attention_dropout"])
def test_each_dropout_acts_in_training_only(dropout):
    gen = fixture_generator(**{dropout: 0.5})
    tokens = gen.flatten(fixture_pyramid(2))
    feats, mask = torch.randn(2, 16, gen.text_proj.in_features), torch.ones(2, 16, dtype=torch.bool)

    def run(train: bool, seed: int):
        gen.train(train)
        torch.manual_seed(seed)
        with torch.no_grad():
            return gen(tokens, *gen.text_prefix(feats, mask))[0]

    assert torch.equal(run(False, 0), run(False, 1))  # evaluation: deterministic
    assert not torch.allclose(run(True, 0), run(True, 1))  # training: this dropout changes the output
    assert torch.equal(run(True, 2), run(True, 2))
    off = fixture_generator()  # every dropout 0: training mode changes nothing
    off.load_state_dict(gen.state_dict())
    off.train()
    with torch.no_grad():
        assert torch.allclose(off(tokens, *off.text_prefix(feats, mask))[0], run(False, 0), atol=1e-6)


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    from hitvideo_bench.checkpoint import load_pretrained, save_pretrained

    gen = fixture_generator(init_seed=4, layer_loss_weights=[1.0, 1.0, 2.0])
    save_pretrained(gen, tmp_path, "generator", "ar-llama")
    import safetensors.torch

    keys = safetensors.torch.load_file(str(tmp_path / "model.safetensors")).keys()
    assert not any("encoder" in k or "bert" in k.lower() for k in keys)  # the frozen text encoder is not saved
    loaded = load_pretrained(tmp_path, tokenizer=FixtureTokenizer(), clip_shape=CLIP)
    assert isinstance(loaded, ARLlamaGenerator)
    assert loaded.config == gen.config and loaded.grid_shapes == FIXTURE_GRIDS
    pyramid = fixture_pyramid(2)
    feats, mask = gen.encode_text(PROMPTS[:2], "cpu")
    with torch.no_grad():
        a = gen(gen.flatten(pyramid), *gen.text_prefix(feats, mask))
        b = loaded(loaded.flatten(pyramid), *loaded.text_prefix(feats, mask))
    assert all(torch.equal(a[i], b[i]) for i in a)
    assert same(gen.sample(PROMPTS[:2], seed=3), loaded.sample(PROMPTS[:2], seed=3))


# ------------------------------------------------------------------------------------------ text


def test_text_encoder_loads_with_the_network_off(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("fixture: network is off")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    encoder = TextEncoder("minilm")  # a fresh instance: really loads from the package folder
    feats, mask = encoder.encode(["a red circle", "a big blue square moves left"], text_len=12)
    assert feats.shape == (2, 12, 384) and mask.dtype == torch.bool
    assert 3 <= int(mask[0].sum()) < int(mask[1].sum()) <= 12
    assert feats[0, int(mask[0].sum()):].abs().sum() == 0  # right padding is zero and masked
    assert not torch.allclose(feats[0, 1], feats[1, 1])


def test_long_prompt_is_truncated_with_a_warning():
    encoder = TextEncoder("minilm")
    long_prompt = " ".join(["a red circle moves left"] * 10)
    with pytest.warns(UserWarning, match="truncated"):
        feats, mask = encoder.encode([long_prompt, "short"], text_len=8)
    assert mask[0].all() and feats.shape == (2, 8, 384)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.encode(["short"], text_len=8)


def test_flan_t5_xl_absent_is_weights_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    gen = ARLlamaGenerator(ARLlamaConfig.from_preset("tiny", {"text_encoder": "flan-t5-xl"}), FixtureTokenizer(),
                           clip_shape=CLIP)
    with pytest.raises(WeightsUnavailable, match="flan-t5-xl") as info:  # on first use: training or sampling
        gen.encode_text(["a red circle"], "cpu")
    assert "hf download google/flan-t5-xl" in info.value.hint and str(tmp_path) in info.value.hint


# ------------------------------------------------------------------------------------------ presets


def test_paper_preset_matches_table_2_and_counts_about_3b_parameters():
    cfg = ARLlamaConfig.from_preset("paper")
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.text_len) == (24, 3200, 32, 120)
    assert cfg.resid_dropout == cfg.ffn_dropout == cfg.token_dropout == 0.1
    counts = ARLlamaGenerator.parameter_count(cfg, [16384])  # LlamaGen-3B's vocabulary
    assert 3.05e9 < counts["total"] < 3.15e9, counts  # the paper's 3.1B
    table4 = ARLlamaGenerator.parameter_count(cfg, [2**18, 2**16, 2**14, 2**12])
    assert table4["backbone"] == counts["backbone"] and table4["total"] > 5e9  # the codebooks' embeddings and heads
    tiny = ARLlamaGenerator.parameter_count(ARLlamaConfig.from_preset("tiny"), FIXTURE_SIZES)
    assert tiny["total"] < 1e6


def test_masked_tokens_are_not_supervised():
    """Dynamic encoding: tokens a keep-mask drops do not count in the loss or the NLL."""
    gen = fixture_generator()
    pyramid = fixture_pyramid(2, seed=5)
    keep = torch.ones_like(pyramid.layers[0], dtype=torch.bool)
    keep[:, 1] = False  # the whole second frame of the dense layer is dropped
    masked = TokenPyramid(pyramid.layers, pyramid.codebook_sizes, [keep, None, None])
    scrambled = TokenPyramid([pyramid.layers[0].clone(), *pyramid.layers[1:]], pyramid.codebook_sizes, [keep, None, None])
    scrambled.layers[0][:, 1] = (scrambled.layers[0][:, 1] + 7) % FIXTURE_SIZES[0]
    flat = gen.flatten(masked, masked_as_ignored=True)
    assert int((flat == -1).sum()) == 2 * 16 and int((flat[:, :5] == -1).sum()) == 0
    a = gen.nll_bits_per_token(masked, PROMPTS[:2])
    b = gen.nll_bits_per_token(scrambled, PROMPTS[:2])
    assert a == b  # the dropped (last) frame's tokens change nothing that is counted
    full = gen.nll_bits_per_token(pyramid, PROMPTS[:2])
    assert a[0] != full[0] and a[2] == full[2]


def test_grad_checkpointing_recomputes_without_changing_loss_or_gradients():
    gen = fixture_generator().train()
    tokens = gen.flatten(fixture_pyramid(2, seed=1))
    feats, mask = gen.encode_text(PROMPTS[:2], "cpu")

    def loss_and_grads():
        gen.zero_grad()
        saved = SavedTensorBytes("cpu", exclude=[gen])
        with saved:
            text_h, text_mask = gen.text_prefix(feats, mask)
            loss = gen.weighted_loss(gen.layer_losses(tokens, text_h, text_mask))
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in gen.parameters() if p.grad is not None], saved.nbytes

    plain_loss, plain_grads, plain_saved = loss_and_grads()
    gen.training_task(None, torch.device("cpu"), shapes_only=True).checkpoint_activations(True)  # what the run calls
    ckpt_loss, ckpt_grads, ckpt_saved = loss_and_grads()
    assert ckpt_saved < plain_saved  # the layers' insides are recomputed in backward, not kept
    torch.testing.assert_close(ckpt_loss, plain_loss)
    for a, b in zip(ckpt_grads, plain_grads):
        torch.testing.assert_close(a, b)
    gen.set_grad_checkpointing(False)
    assert loss_and_grads()[2] == plain_saved
