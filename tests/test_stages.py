"""A run's stages end to end on the fixture plugin's trainable tokenizer and generator: compression rows,
reconstruction and partial decodes, the training curve, tokenizing, generation rows; the component cache
(load branch, what its key covers, resume of a half-trained component); load_pretrained's checks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

import hitvideo_bench as hb
from hitvideo_bench.checkpoint import load_pretrained, load_tokenizer, save_pretrained
from hitvideo_bench.errors import BadInput
from hitvideo_bench.manager import get_catalog
from hitvideo_bench.recipe import load_recipe
from hitvideo_bench.runner import RunOptions, run_recipe
from hitvideo_bench.tokens import TokenPyramid

pytestmark = pytest.mark.usefixtures("fixture_plugin")

#: fixture recipe: 4 train and 4 val clips of 4x16x16 noise; the fixture tokenizer trains 4 steps
RECIPE = """\
version: 1
recipe: fixture-stages
seeds: [0]
dataset: {name: fixture-noise, eval_clips: 3}
evaluate:
  batch_size: 2
  compression: true
  reconstruction: [fixture-mae, fixture-mean-gap, codebook]   # per clip, whole-set, on token pyramids
  layers: all
  curve: [fixture-mae]
  curve_clips: 2
  generation: {metrics: [fixture-mean], num_samples: 3}
variants:
  pool:
    tokenizer: {name: fixture-pool, config: {train: {eval_every: 2}}}
    generator: {name: fixture-unigram}
"""


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "fixture-stages.yaml"
    path.write_text(RECIPE)
    return path


def run(recipe_path: Path, out: Path, sets=(), **kw):
    """Run the recipe; returns ``(tidy metrics of the run, its summary.json)``."""
    result = run_recipe(load_recipe(recipe_path, sets), RunOptions(out=out, progress=False, **kw))
    run_dir = next((result.out_dir / "runs").glob("*/seed-*"))
    return pd.read_csv(run_dir / "metrics.csv"), json.loads((run_dir / "summary.json").read_text())


def value(df: pd.DataFrame, metric: str, step=None) -> float:
    rows = df[df.metric == metric]
    rows = rows[rows.step.isna()] if step is None else rows[rows.step == step]
    assert len(rows) == 1, (metric, step, rows)
    return float(rows.value.iloc[0])


def eval_clips(count: int) -> torch.Tensor:
    ds = hb.create_dataset("fixture-noise", split="val")
    return torch.stack([ds[i]["video"] for i in range(count)])


def mae(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().double().mean())


def test_every_stage_of_a_tokenizer_and_generator_run(recipe, tmp_path, isolated_cache):
    """Kills: compression_rows, the layers / curve / generation stages or tokenize_dataset skipped or
    miscounted (each row is recomputed here from the cached components)."""
    df, summary = run(recipe, tmp_path / "out")
    # compression (Table 1 style): 4x16x16 clips, grids 4x4x4 and 2x2x2, codebooks of 8
    assert value(df, "tokens/L0") == 64 and value(df, "tokens/L1") == 8 and value(df, "tokens") == 72
    assert df[df.metric == "compression/L1"].text.item() == "2x8x8"
    assert value(df, "bpp_nominal") == pytest.approx(72 * 3 / 1024)
    assert value(df, "compression_ratio") == pytest.approx(1024 / 72)
    # the trained tokenizer, reloaded from its cache folder
    tok_folder = Path(summary["tokenizer"]["cached"])
    assert summary["tokenizer"]["trained_now"] and summary["tokenizer"]["steps"] == 4
    tokenizer = load_tokenizer(tok_folder)
    clips = eval_clips(3)
    with torch.no_grad():
        pyramid = tokenizer.encode(clips)
        assert value(df, "fixture-mae") == pytest.approx(mae(tokenizer.decode(pyramid), clips), rel=1e-6)
        assert value(df, "fixture-mae@1") == pytest.approx(mae(tokenizer.decode(pyramid, layers=1), clips), rel=1e-6)
        assert value(df, "fixture-mae@2") == pytest.approx(value(df, "fixture-mae"))
        # the curve: every 2 steps on the first 2 clips; at the last step the weights are the final ones
        assert value(df, "fixture-mae", step=4) == pytest.approx(
            mae(tokenizer.decode(tokenizer.encode(clips[:2])), clips[:2]), rel=1e-6)
    assert value(df, "fixture-mae", step=2) != value(df, "fixture-mae", step=4)
    # the train split, tokenized once and kept beside the tokenizer
    saved = list(tok_folder.glob("tokens-*.safetensors"))
    assert len(saved) == 1
    train = hb.create_dataset("fixture-noise", split="train")
    expected = tokenizer.encode(torch.stack([train[i]["video"] for i in range(len(train))]))
    assert all(torch.equal(a, b) for a, b in zip(TokenPyramid.load(saved[0]).layers, expected.layers))
    assert json.loads(saved[0].with_suffix(".json").read_text()) == [f"clip {i}" for i in range(4)]
    # the generator: trained on those tokens; generation rows from its samples
    generator = load_pretrained(Path(summary["generator"]["cached"]), tokenizer=tokenizer)
    assert summary["generator"]["clips"] == 4
    assert torch.equal(generator.counts1, torch.bincount(expected.layers[1].flatten(), minlength=8).double() + 1)
    samples = [generator.sample(["clip 0", "clip 1"], seed=0), generator.sample(["clip 2"], seed=1)]
    with torch.no_grad():
        videos = torch.cat([tokenizer.decode(p) for p in samples])
    assert value(df, "fixture-mean") == pytest.approx(float(videos.double().mean()), rel=1e-6)
    nll = generator.nll_bits_per_token(pyramid, ["clip 0", "clip 1", "clip 2"])
    assert value(df, "nll_bits/L0") == pytest.approx(nll[0]) and value(df, "nll_bits/L1") == pytest.approx(nll[1])
    assert len(list((tmp_path / "out").glob("*/*/runs/pool/seed-0/samples/sample_sheet.png"))) == 1


def test_a_generator_without_nll_reports_n_a(recipe, tmp_path, isolated_cache, monkeypatch):
    """Kills: nll_bits_per_token called on a generator that does not implement it (a crash after sampling)."""
    from hitbench_fixture_plugin import FixtureUnigramGenerator

    from hitvideo_bench.components import Generator

    monkeypatch.setattr(FixtureUnigramGenerator, "nll_bits_per_token", Generator.nll_bits_per_token)
    df, _ = run(recipe, tmp_path / "out")
    assert df[df.metric == "nll_bits"].text.item() == "n/a: FixtureUnigramGenerator has no nll_bits_per_token"
    assert not df.metric.str.startswith("nll_bits/").any()
    assert "fixture-mean" in set(df.metric)  # generation was measured


def test_a_generator_starts_from_the_same_weights_whether_its_tokenizer_was_trained_or_loaded(
        recipe, tmp_path, isolated_cache):
    """Kills: the generator's initial weights drawn from whatever RNG state the tokenizer stage left (training
    draws from it, loading does not), so a cold and a warm run train different generators."""
    _, cold = run(recipe, tmp_path / "cold")  # tokenizer and generator trained in this run
    generator_folder = Path(cold["generator"]["cached"])
    first = load_file(str(generator_folder / "model.safetensors"))
    import shutil

    shutil.rmtree(generator_folder)
    _, warm = run(recipe, tmp_path / "warm")  # the tokenizer loaded from the cache, the generator trained again
    assert not warm["tokenizer"].get("trained_now") and warm["generator"]["trained_now"]
    second = load_file(str(generator_folder / "model.safetensors"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_a_second_run_loads_every_component_from_the_cache(recipe, tmp_path, isolated_cache, monkeypatch):
    """Kills: cached_component ignoring a complete cache folder (forcing a retrain every time)."""
    first, first_summary = run(recipe, tmp_path / "out")
    plugin = __import__("hitbench_fixture_plugin")

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the cache holds the component")

    monkeypatch.setattr(plugin.FixturePoolTokenizer, "fit", no_training)
    monkeypatch.setattr(plugin.FixtureUnigramGenerator, "fit", no_training)
    again, summary = run(recipe, tmp_path / "out", resume=False)
    for key in ("tokenizer", "generator"):
        assert "trained_now" not in summary[key]
        assert summary[key]["cached"] == first_summary[key]["cached"]
    pd.testing.assert_frame_equal(first, again)


def test_no_cache_retrains_from_scratch_not_from_the_last_checkpoint(tmp_path):
    """Kills: ``--no-cache`` resuming the cached training's finished checkpoint (no step trained again)."""
    from hitvideo_bench import cache

    folder = tmp_path / "tokenizer-x"
    (folder / cache.WORK / "checkpoint").mkdir(parents=True)
    (folder / cache.WORK / "checkpoint" / "state.pt").write_text("the finished training's last checkpoint")
    cache.mark_complete(folder, {"steps": 3})
    seen = []

    def train():
        seen.append(sorted(p.name for p in folder.rglob("*")))
        return "retrained", {"steps": 3}

    thing, _, trained = cache.cached_component(folder, load=lambda: "loaded", train=train, save=lambda t, p: None,
                                               use_cache=False)
    assert (thing, trained) == ("retrained", True)
    assert "state.pt" not in seen[0] and "checkpoint" not in seen[0]
    assert cache.cached_component(folder, load=lambda: "loaded", train=train, save=lambda t, p: None)[0] == "loaded"


def cache_folders(recipe: Path, out: Path, sets=()) -> tuple[str, str]:
    _, summary = run(recipe, out, sets, resume=False)
    return summary["tokenizer"]["cached"], summary["generator"]["cached"]


def test_the_cache_key_covers_version_seed_config_and_data(recipe, tmp_path, isolated_cache, monkeypatch):
    """Kills: leaving the component version, the seed, the config or the training data out of a cache key."""
    recipe.write_text(RECIPE.replace("  layers: all\n  curve: [fixture-mae]\n", "")
                      .replace("{train: {eval_every: 2}}", "{train: {steps: 1}}"))
    base = cache_folders(recipe, tmp_path / "a")
    assert cache_folders(recipe, tmp_path / "b") == base  # the same everything: the same entries
    changed = {"seed": cache_folders(recipe, tmp_path / "c", ["seeds=[1]"]),
               "config": cache_folders(recipe, tmp_path / "d", ["variants.pool.tokenizer.config.width=4"]),
               "data": cache_folders(recipe, tmp_path / "e", ["dataset.config.seed=1"])}
    spec = get_catalog().get("tokenizer", "fixture-pool")
    monkeypatch.setattr(spec, "version", "2")
    changed["tokenizer version"] = cache_folders(recipe, tmp_path / "f")
    monkeypatch.setattr(spec, "version", "1")
    monkeypatch.setattr(get_catalog().get("generator", "fixture-unigram"), "version", "2")
    generator_version = cache_folders(recipe, tmp_path / "g")
    for what, (tok, gen) in changed.items():
        assert tok != base[0] and gen != base[1], what  # a generator's key holds its tokenizer's
    assert generator_version[0] == base[0] and generator_version[1] != base[1]
    assert len({tok for tok, _ in changed.values()}) == len(changed)


def test_execution_settings_reuse_a_component_and_its_method_retrains_it(recipe, tmp_path, isolated_cache,
                                                                          monkeypatch):
    """Kills: execution settings (run.strategy, micro_batch, cadence) in a cache key or the run id, so that a component
    trained under ddp is retrained for a run under fsdp; or a method setting (train.steps) left out of the key."""
    recipe.write_text(RECIPE.replace("  layers: all\n  curve: [fixture-mae]\n", "")
                      .replace("{train: {eval_every: 2}}", "{train: {steps: 2}}"))
    ddp = cache_folders(recipe, tmp_path / "a")
    plugin = __import__("hitbench_fixture_plugin")

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although only the execution settings changed")

    with monkeypatch.context() as patched:
        patched.setattr(plugin.FixturePoolTokenizer, "fit", no_training)
        patched.setattr(plugin.FixtureUnigramGenerator, "fit", no_training)
        fsdp = ["run.strategy=fsdp", "run.micro_batch=1", "run.checkpoint_every=1", "run.log_every=1"]
        assert cache_folders(recipe, tmp_path / "b", fsdp) == ddp
        assert load_recipe(recipe, fsdp).run_id() == load_recipe(recipe).run_id()
    steps = cache_folders(recipe, tmp_path / "c", ["variants.pool.tokenizer.config.train.steps=3"])
    assert steps[0] != ddp[0] and steps[1] != ddp[1]


def test_a_method_the_run_cannot_execute_is_refused_when_the_recipe_is_loaded(recipe):
    """Kills: fp16 under run.strategy fsdp accepted by validate and failing only once that training starts."""
    with pytest.raises(BadInput, match=r"variants.pool.tokenizer.config.train.precision: .*precision fp16 is not "
                                       r"supported with run.strategy fsdp"):
        load_recipe(recipe, ["run.strategy=fsdp", "variants.pool.tokenizer.config.train.precision=fp16"])


def test_an_execution_setting_in_a_component_config_points_to_the_run_section(recipe):
    """Kills: accepting (or silently dropping) train.strategy in a component config after it moved to ``run:``."""
    with pytest.raises(BadInput, match=r"variants.pool.tokenizer.config.train.strategy: an execution setting.*"
                                       r"run.strategy"):
        load_recipe(recipe, ["variants.pool.tokenizer.config.train.strategy=fsdp"])


def test_a_run_killed_while_training_resumes_from_the_half_written_cache_folder(recipe, tmp_path, monkeypatch,
                                                                                 isolated_cache):
    """Kills: restarting a component's training from scratch instead of from the checkpoint in its cache folder."""
    recipe.write_text(RECIPE.replace("  layers: all\n  curve: [fixture-mae]\n", ""))
    monkeypatch.setenv("HITBENCH_CACHE", str(tmp_path / "straight"))
    straight, straight_summary = run(recipe, tmp_path / "a")
    monkeypatch.setenv("HITBENCH_CACHE", str(tmp_path / "killed"))
    task = __import__("hitbench_fixture_plugin")._FixturePoolTask
    original, steps = task.training_step, []

    def killed_at_step_3(self, batch, step, trainer):
        steps.append(step)
        if step == 3 and len(steps) == 4:  # after the step-2 checkpoint, on the first attempt only
            raise KeyboardInterrupt
        return original(self, batch, step, trainer)

    monkeypatch.setattr(task, "training_step", killed_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run(recipe, tmp_path / "b")
    folder = next((tmp_path / "killed" / "tokenizer").glob("fixture-pool-*"))
    assert (folder / "train" / "checkpoint").is_dir() and not (folder / "COMPLETE").exists()
    resumed, summary = run(recipe, tmp_path / "b")
    assert steps == [0, 1, 2, 3, 2, 3]  # the second attempt starts from the step-2 checkpoint
    assert [p["step"] for p in summary["tokenizer"]["losses"]] == [1, 2, 3, 4]
    straight_weights = load_file(str(Path(straight_summary["tokenizer"]["cached"]) / "model.safetensors"))
    resumed_weights = load_file(str(folder / "model.safetensors"))
    assert all(torch.equal(straight_weights[k], resumed_weights[k]) for k in straight_weights)
    pd.testing.assert_frame_equal(straight[straight.metric != "compress_s_per_clip"],
                                  resumed[resumed.metric != "compress_s_per_clip"])


def test_load_pretrained_refuses_weights_that_do_not_match_the_config(tmp_path):
    """Kills: dropping load_pretrained's missing / unexpected weights check (a partial model would load)."""
    torch.manual_seed(0)
    tokenizer = hb.create_tokenizer("fixture-pool")
    save_pretrained(tokenizer, tmp_path, "tokenizer", "fixture-pool")
    reloaded = load_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(tokenizer.state_dict().values(), reloaded.state_dict().values()))
    weights = load_file(str(tmp_path / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if k != "decoder.1.bias"}, str(tmp_path / "model.safetensors"))
    with pytest.raises(BadInput, match=r"weights do not match tokenizer 'fixture-pool' \(missing \['decoder.1.bias'\]"):
        load_pretrained(tmp_path)
    save_file({**weights, "extra.weight": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(BadInput, match=r"unexpected \['extra.weight'\]"):
        load_pretrained(tmp_path)


def test_a_generator_trained_later_reuses_the_tokens_kept_beside_the_cached_tokenizer(recipe, tmp_path, monkeypatch,
                                                                                     isolated_cache):
    """Kills: tokenize_dataset ignoring its saved tokens file (tokenizing the train split again every time)."""
    _, summary = run(recipe, tmp_path / "out")
    saved = next(Path(summary["tokenizer"]["cached"]).glob("tokens-*.safetensors"))
    pyramid = TokenPyramid.load(saved)
    marked = TokenPyramid([pyramid.layers[0], torch.full_like(pyramid.layers[1], 7)], pyramid.codebook_sizes)
    marked.save(saved)  # a token file no encoder would give: the generator must have read it
    monkeypatch.setattr(get_catalog().get("generator", "fixture-unigram"), "version", "2")  # a new generator
    _, summary = run(recipe, tmp_path / "out", resume=False)
    assert summary["generator"]["trained_now"] and "trained_now" not in summary["tokenizer"]
    generator = load_pretrained(Path(summary["generator"]["cached"]), tokenizer=load_tokenizer(
        Path(summary["tokenizer"]["cached"])))
    assert generator.counts1.tolist() == [1.0] * 7 + [1.0 + marked.layers[1].numel()]


#: fixture recipe: the masked tokenizer learning its fill for the coarse layer (1) of the fixture tokenizer, beside
#: that tokenizer on its own
MASKED_RECIPE = """\
version: 1
recipe: fixture-masked
seeds: [0]
dataset: {name: fixture-noise, eval_clips: 3}
evaluate: {batch_size: 2, reconstruction: [fixture-mae, bpp], layers: all}
variants:
  pool: {tokenizer: {name: fixture-pool}}
  masked:
    tokenizer:
      name: masked
      config: {base: {name: fixture-pool}, strategy: learned, layer: 1,
               train: {steps: 3, batch_size: 2, lr: 0.05}}
"""


def test_a_new_base_version_retrains_the_wrapper_that_was_fitted_to_the_old_base(tmp_path, isolated_cache,
                                                                                   monkeypatch):
    """Kills: a wrapper's cache key without its base's identity (a fill fitted to the old base loaded over the new)."""
    path = tmp_path / "fixture-masked.yaml"
    path.write_text(MASKED_RECIPE.replace("  pool: {tokenizer: {name: fixture-pool}}\n", ""))

    def masked_entry(out: str) -> tuple[str, str]:
        folder = run_recipe(load_recipe(path), RunOptions(out=tmp_path / out, progress=False)).out_dir
        summary = json.loads((folder / "runs" / "masked" / "seed-0" / "summary.json").read_text())
        return summary["tokenizer"]["cached"], summary["tokenizer:masked"]["cached"]

    base, wrapper = masked_entry("a")
    monkeypatch.setattr(get_catalog().get("tokenizer", "fixture-pool"), "version", "2")
    new_base, new_wrapper = masked_entry("b")
    assert new_base != base and new_wrapper != wrapper


def test_masked_tokenizer_fits_its_fill_for_layer_1_and_reloads_from_the_cache(tmp_path, isolated_cache):
    """Kills: the masked tokenizer's fit not training its mask embedding, or masking layer 0 when asked for layer 1."""
    from hitbench_builtin.tokenizers.masked import keep_mask

    path = tmp_path / "fixture-masked.yaml"
    path.write_text(MASKED_RECIPE)
    out_dir = run_recipe(load_recipe(path), RunOptions(out=tmp_path / "out", progress=False)).out_dir
    summaries = {v: json.loads((out_dir / "runs" / v / "seed-0" / "summary.json").read_text())
                 for v in ("pool", "masked")}
    masked_summary = summaries["masked"]["tokenizer:masked"]
    assert masked_summary["trained_now"] and masked_summary["steps"] == 3
    assert summaries["masked"]["tokenizer"]["cached"] == summaries["pool"]["tokenizer"]["cached"]  # one base entry
    tokenizer = load_tokenizer(Path(masked_summary["cached"]))
    base_weights = load_file(str(Path(summaries["pool"]["tokenizer"]["cached"]) / "model.safetensors"))
    assert all(torch.equal(tokenizer.base.state_dict()[k], v) for k, v in base_weights.items())  # base frozen
    assert tokenizer.mask_embedding.abs().sum() > 0  # trained from zeros
    clips = eval_clips(3)
    with torch.no_grad():
        pyramid = tokenizer.encode(clips)
        assert pyramid.masks[0] is None
        latents = tokenizer.base.tokens_to_latents(tokenizer.base.encode(clips))
        assert torch.equal(pyramid.masks[1], keep_mask(latents[1], tokenizer.config.cap, tokenizer.config.seed))
        assert not pyramid.masks[1].all()  # something was dropped, so the fill matters
        reconstruction = tokenizer.decode(pyramid).clamp(0, 1)
        tokenizer.mask_embedding.zero_()
        assert not torch.equal(tokenizer.decode(pyramid).clamp(0, 1), reconstruction)
    df = pd.read_csv(out_dir / "runs" / "masked" / "seed-0" / "metrics.csv")
    assert value(df, "fixture-mae") == pytest.approx(mae(reconstruction, clips), rel=1e-6)
    kept_coarse = pyramid.masks[1].flatten(1).sum(1).double()
    bits = 64 * 3 + kept_coarse * 3 + 4  # dense tokens, kept coarse tokens, 1 bit per maskable coarse position
    assert value(df, "bpp") == pytest.approx(float(bits.sum() / (3 * 4 * 16 * 16)))
