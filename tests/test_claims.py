"""Claims: per-clip values, paired contrasts, bootstrap intervals, verdicts, and the report they end up in."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hitvideo_bench.claims import bootstrap_mean, contrast_values, covers, evaluate_claims, verdict
from hitvideo_bench.manager import get_plugins
from hitvideo_bench.recipe import load_recipe
from hitvideo_bench.recipe.schema import ClaimSpec
from hitvideo_bench.runner import RunOptions, run_recipe


def frame(values: dict[tuple[str, str], list[list[float]]]) -> pd.DataFrame:
    """Fixture: per-clip rows from ``{(variant, metric): [[clip values of seed 0], [seed 1], ...]}``."""
    rows = [{"recipe": "r", "variant": v, "seed": s, "metric": m, "clip": c, "value": x}
            for (v, m), seeds in values.items() for s, clips in enumerate(seeds) for c, x in enumerate(clips)]
    return pd.DataFrame(rows)


def test_one_seed_interval_is_the_percentile_bootstrap_over_clips():
    """Mutation: resampling seeds only, or a normal-theory interval instead of the percentile one."""
    x = np.random.default_rng(3).normal(1.0, 2.0, size=60)
    mean, lo, hi = bootstrap_mean(x[None, :], 0.95)
    ref = stats.bootstrap((x,), np.mean, confidence_level=0.95, method="percentile", n_resamples=20000,
                          random_state=0).confidence_interval
    assert mean == pytest.approx(x.mean())
    assert lo == pytest.approx(ref.low, abs=0.06) and hi == pytest.approx(ref.high, abs=0.06)
    assert bootstrap_mean(x[None, :], 0.95) == (mean, lo, hi)  # seeded: a report is reproducible


def test_several_seeds_are_resampled_too():
    """Mutation: ignoring the seed level (intervals that hide training randomness)."""
    rng = np.random.default_rng(0)
    clips = rng.normal(0, 0.1, size=40)
    values = np.stack([clips + offset for offset in (-1.0, 0.0, 1.0)])  # seeds disagree far more than clips
    _, lo, hi = bootstrap_mean(values, 0.95)
    _, lo1, hi1 = bootstrap_mean(values[1:2], 0.95)
    assert hi - lo > 10 * (hi1 - lo1)
    assert covers(3, 40).startswith("40 clips x 3 seeds") and "not covered" in covers(1, 40)


@pytest.mark.parametrize("lo,hi,expect,result", [(0.1, 0.3, "positive", "holds"), (-0.3, -0.1, "positive", "reversed"),
                                                 (-0.1, 0.2, "positive", "inconclusive"),
                                                 (-0.3, -0.1, "negative", "holds"), (0.1, 0.3, "negative", "reversed")])
def test_verdict(lo, hi, expect, result):
    assert verdict(lo, hi, expect) == result


def test_contrast_is_paired_by_seed_and_clip_and_terms_may_name_a_metric():
    """Mutation: unpaired means, or a ``VARIANT:METRIC`` term read as the claim's metric."""
    df = frame({("a", "psnr"): [[10, 20, 30], [11, 21, 31]], ("b", "psnr"): [[9, 19, 29], [10, 20, 30]],
                ("a", "psnr@1"): [[5, 6, 7], [5, 6, 7]]})
    values, why = contrast_values(df, "psnr", {"a": 1, "b": -1})
    assert why == "" and values.shape == (2, 3) and np.all(values == 1.0)
    values, _ = contrast_values(df, "psnr", {"a": 1, "a:psnr@1": -1})
    assert values[0].tolist() == [5, 14, 23]
    values, why = contrast_values(df, "psnr", {"a": 1, "c": -1})
    assert values.size == 0 and "c (psnr)" in why


def test_claim_rows_report_mean_interval_verdict_and_coverage():
    df = frame({("multi", "psnr"): [[20.0 + 0.1 * i for i in range(30)]],
                ("single", "psnr"): [[19.0 + 0.1 * i + 0.05 * (i % 3) for i in range(30)]]})
    claims = [ClaimSpec(id="c1", claim="multi beats single", metric="psnr", contrast={"multi": 1, "single": -1}),
              ClaimSpec(id="c2", claim="missing", metric="ssim", contrast={"multi": 1, "single": -1})]
    table = evaluate_claims(df, claims).set_index("claim")
    assert table.loc["c1", "verdict"] == "holds" and table.loc["c1", "ci_low"] > 0.9
    assert table.loc["c1", "covers"] == "30 clips x 1 seed (clips resampled; training randomness not covered)"
    assert table.loc["c2", "verdict"].startswith("not measured: no per-clip values")


RECIPE = """\
version: 1
recipe: fixture-claims
seeds: [0, 1]
dataset: {name: fixture-noise, eval_clips: 4}
evaluate: {reconstruction: [fixture-mae], batch_size: 2}
variants:
  coarse: {codec: {name: fixture-quantize, config: {levels: 2}}}
  fine: {codec: {name: fixture-quantize, config: {levels: 16}}}
claims:
  - {id: finer-is-better, claim: "more levels, less error", metric: fixture-mae, contrast: {fine: 1, coarse: -1},
     expect: negative}
"""


def run_fixture_recipe(tmp_path, text: str):
    """Run the recipe ``text`` with the fixture plugin loaded; its RecipeResult."""
    get_plugins(["hitbench_fixture_plugin"])
    try:
        path = tmp_path / "r.yaml"
        path.write_text(text)
        return run_recipe(load_recipe(path), RunOptions(out=tmp_path / "out", progress=False))
    finally:
        get_plugins([])


def test_a_recipe_writes_per_clip_values_and_its_claims(tmp_path):
    result = run_fixture_recipe(tmp_path, RECIPE)
    per_clip = pd.read_csv(result.out_dir / "per_clip.csv")
    assert len(per_clip) == 2 * 2 * 4  # variants x seeds x clips
    means = per_clip.groupby("variant")["value"].mean()
    table = result.results[result.results["metric"] == "fixture-mae"].groupby("variant")["value"].mean()
    assert means.to_dict() == pytest.approx(table.to_dict())  # the clips average to the headline value
    claims = pd.read_csv(result.out_dir / "claims.csv")
    assert claims.loc[0, "verdict"] == "holds" and claims.loc[0, "ci_high"] < 0
    md = (result.out_dir / "claims.md").read_text()
    assert "finer-is-better" in md and "4 clips x 2 seeds" in md


def test_a_claim_naming_an_unknown_variant_is_located(tmp_path):
    get_plugins(["hitbench_fixture_plugin"])
    try:
        path = tmp_path / "r.yaml"
        path.write_text(RECIPE.replace("{fine: 1, coarse: -1}", "{fine: 1, corse: -1}"))
        with pytest.raises(Exception, match=r"r\.yaml:\d+: claims\.0\.contrast\.corse: .*'corse'"):
            load_recipe(path)
    finally:
        get_plugins([])


RESAMPLED_RECIPE = RECIPE.replace("[fixture-mae]", "[fixture-mae, fixture-mean-gap]") + """\
  - {id: gap, claim: "more levels, a smaller brightness gap", metric: fixture-mean-gap,
     contrast: {fine: 1, coarse: -1}, expect: negative}
table: {columns: [fixture-mae, fixture-mean-gap]}
"""


def test_a_whole_set_metric_is_resampled_alike_in_every_variant_and_its_claim_paired(tmp_path):
    """A metric without per-clip values gets the same bootstrap resamples in every variant, its claim a paired
    interval around the contrast of the whole-set values. Kills: a claim on one term's resamples, or a whole-set
    metric left out of the per-variant intervals."""
    result = run_fixture_recipe(tmp_path, RESAMPLED_RECIPE)
    per_clip = pd.read_csv(result.out_dir / "per_clip.csv")
    gap = per_clip[per_clip["metric"] == "fixture-mean-gap#resample"]
    assert sorted(gap["clip"].unique()) == list(range(-1, 1000))  # all clips, then the resamples
    assert per_clip[per_clip["metric"] == "fixture-mean-gap#clips"]["value"].unique().tolist() == [4]
    whole = gap[gap["clip"] == -1].set_index(["variant", "seed"])["value"]
    table = result.results[result.results["metric"] == "fixture-mean-gap"].set_index(["variant", "seed"])["value"]
    assert whole.to_dict() == pytest.approx(table.to_dict())
    # the paired contrast per resample, recomputed from the fixture's clip means on the shared resamples
    wide = gap[gap["clip"] >= 0].pivot_table(index=["seed", "clip"], columns="variant", values="value")
    contrast = (wide["fine"] - wide["coarse"]).groupby("clip").mean()
    claims = pd.read_csv(result.out_dir / "claims.csv").set_index("claim")
    expected = (whole.xs("fine", level="variant") - whole.xs("coarse", level="variant")).mean()
    assert claims.loc["gap", "mean"] == pytest.approx(expected, abs=1e-3)
    assert claims.loc["gap", "ci_low"] <= expected <= claims.loc["gap", "ci_high"]
    assert claims.loc["gap", "ci_low"] >= contrast.min() - 1e-3 and claims.loc["gap", "ci_high"] <= contrast.max() + 1e-3
    assert claims.loc["gap", "covers"] == "4 clips x 2 seeds (clips and seeds resampled)"
    assert "fixture-mean-gap" in (result.out_dir / "claims.md").read_text().split("## Means")[1]


def test_resampled_interval_pairs_the_resamples():
    """Two variants whose whole-set values move together over the resamples have a narrow paired interval.
    Kills: draws that depend on anything but the clip count (unpaired), or the mean of the draws as the value."""
    from hitvideo_bench.claims import bootstrap_indices, resampled_interval

    x = np.random.default_rng(0).normal(size=50)
    draws = bootstrap_indices(50)
    assert np.array_equal(draws, bootstrap_indices(50)) and not np.array_equal(draws[:, :49], bootstrap_indices(49))
    a = np.concatenate([[x.std()], [x[i].std() for i in draws]])
    b = np.concatenate([[(x * 1.1).std()], [(x[i] * 1.1).std() for i in draws]])
    mean, lo, hi = resampled_interval((b - a)[None, :], 0.95)
    assert mean == pytest.approx(0.1 * x.std())
    _, lo_a, hi_a = resampled_interval(a[None, :], 0.95)
    assert 0 < lo < mean < hi and hi - lo < 0.2 * (hi_a - lo_a)


def test_one_clip_gives_no_interval_and_no_verdict():
    """A claim measured on a single clip of a single seed is inconclusive, not a zero-width interval that holds.
    Kills: bootstrapping one value (an interval of width 0 on the expected side)."""
    df = frame({("multi", "psnr"): [[21.0]], ("single", "psnr"): [[20.0]]})
    claims = [ClaimSpec(id="c", claim="multi beats single", metric="psnr", contrast={"multi": 1, "single": -1})]
    row = evaluate_claims(df, claims).iloc[0]
    assert row["mean"] == 1.0 and np.isnan(row["ci_low"]) and np.isnan(row["ci_high"])
    assert row["verdict"].startswith("inconclusive") and row["covers"].startswith("1 clips x 1 seed")


def test_a_resampled_metric_without_compute_on_is_refused_when_created():
    """Kills: a plugin metric declaring ``resampled`` without ``compute_on`` failing only after a whole run."""
    from hitvideo_bench.components import BenchMetric

    class Half(BenchMetric):
        resampled = True

        def update(self, pred, target):
            pass

        def compute(self):
            return 0.0

    with pytest.raises(TypeError, match="Half declares resampled = True but does not implement compute_on"):
        Half()
