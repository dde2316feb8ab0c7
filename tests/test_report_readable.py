"""Readable tables and plots: sub-metrics with their own direction, per-attribute prompt accuracy, integer
layer ticks, the rate-distortion plot."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

import hitvideo_bench as hb
from hitvideo_bench import report
from hitvideo_bench.recipe.schema import PlotSpec, TableSpec
from hitvideo_bench.report import COLUMNS, build_table, rd_groups


def cell(variant, metric, value, higher=None, text=""):
    return {"recipe": "r", "variant": variant, "seed": 0, "metric": metric, "value": value,
            "higher_is_better": higher, "step": None, "text": text, "provenance": "", "source": "measured"}


@pytest.fixture
def figures(monkeypatch):
    """Fixture: the figures plot() would save, kept open for the test (and written nowhere)."""
    kept = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: kept.append(fig) or path)
    return kept


def test_sub_metrics_carry_their_own_direction():
    assert hb.create_metric("psnr").sub_higher_is_better("of_mean_mse") is True
    assert hb.create_metric("bpp-entropy").sub_higher_is_better("L0") is False
    probe_fd, prompt_acc = hb.create_metric("probe-fd"), hb.create_metric("prompt-acc")
    assert probe_fd.higher_is_better is False and probe_fd.sub_higher_is_better("probe_acc") is True
    assert probe_fd.sub_higher_is_better("real_clips") is None  # a count has no direction
    assert all(prompt_acc.sub_higher_is_better(k) for k in ("shape", "colour", "attributes", "probe_acc"))
    df = pd.DataFrame([cell("a", "probe-fd", 100.0, False), cell("a", "probe-fd/probe_acc", 1.0, True),
                       cell("a", "probe-fd/real_clips", 32.0, None)], columns=COLUMNS)
    assert list(build_table(df, TableSpec(), ["a"]).columns) == \
        ["variant", "probe-fd ↓", "probe-fd/probe_acc ↑", "probe-fd/real_clips"]


def test_prompt_accuracy_reports_the_mean_of_the_per_attribute_shares():
    metric = hb.create_metric("prompt-acc")
    metric.total += 4  # state as after 4 clips, none with every attribute right (no probe needed)
    metric.correct += torch.tensor([2.0, 1.0, 3.0, 1.0, 4.0], dtype=torch.float64)
    metric._update_count = 1
    out = {k: float(v) for k, v in metric.compute().items() if k != "probe_acc"}
    shares = [out[k] for k in out if k not in ("", "attributes")]
    assert out[""] == 0 and out["attributes"] == pytest.approx(sum(shares) / len(shares)) and out["attributes"] > 0


def test_layers_plot_has_integer_ticks(figures, tmp_path):
    df = pd.DataFrame([cell("h", f"psnr@{k}", 14.0 + k, True) for k in (1, 2, 3, 4)], columns=COLUMNS)
    assert report.plot(df, PlotSpec(kind="layers", metric="psnr"), ["h"], tmp_path) is not None
    ticks = [t for t in figures[0].axes[0].get_xticks() if 1 <= t <= 4]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_rd_plot_draws_a_line_per_codec_and_both_rates_per_tokenizer(figures, tmp_path):
    rows = [cell("hitvideo", "bpp", 0.055), cell("hitvideo", "bpp-entropy", 0.024), cell("hitvideo", "psnr", 24.0)]
    for crf, (bpp, psnr) in {30: (0.3, 30.0), 40: (0.12, 26.0), 51: (0.06, 23.0)}.items():
        rows += [cell(f"x264@crf{crf}", "bpp", bpp), cell(f"x264@crf{crf}", "psnr", psnr),
                 cell(f"x264@crf{crf}", "bpp-entropy", math.nan, text="n/a: needs pyramid")]
    rows += [cell("x265@crf40", "bpp", 0.1), cell("x265@crf40", "psnr", 27.0)]
    df = pd.DataFrame(rows, columns=COLUMNS)
    order = ["hitvideo", "x264@crf51", "x264@crf30", "x264@crf40", "x265@crf40"]
    assert rd_groups(order) == {"x264": ["x264@crf51", "x264@crf30", "x264@crf40"], "x265": ["x265@crf40"]}
    assert report.plot(df, PlotSpec(kind="rd", metric="psnr"), order, tmp_path) == tmp_path / "rd_psnr.png"
    ax = figures[0].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["x264"].get_xdata()) == [0.06, 0.12, 0.3]  # sorted by rate
    assert list(lines["x264"].get_ydata()) == [23.0, 26.0, 30.0]
    assert list(lines["hitvideo (bpp)"].get_xdata()) == [0.055]
    assert list(lines["hitvideo (bpp-entropy)"].get_xdata()) == [0.024]
    assert lines["hitvideo (bpp-entropy)"].get_markerfacecolor() == "none"
    assert "bpp" in ax.get_xlabel() and ax.get_ylabel() == "psnr"
    assert report.plot(df, PlotSpec(kind="rd", metric="ssim"), order, tmp_path) is None  # nothing to draw


def test_sweep_plot_draws_a_line_per_swept_variant_over_the_setting(figures, tmp_path):
    """Kills: points left in variant order instead of sorted by the setting, or every variant on one line."""
    rows = [cell(f"{v}-cfg_scale={s}", "prompt-acc", acc, True)
            for v, points in {"hitvideo": [(5.0, 0.4), (1.0, 0.1), (3.0, 0.3)], "single": [(1.0, 0.2)]}.items()
            for s, acc in points]
    rows.append(cell("mean-colour", "prompt-acc", 0.9, True))  # not swept: not drawn
    df = pd.DataFrame(rows, columns=COLUMNS)
    spec = PlotSpec(kind="sweep", metric="prompt-acc", by="cfg_scale")
    assert report.plot(df, spec, list(df["variant"]), tmp_path) == tmp_path / "sweep_prompt-acc.png"
    ax = figures[0].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {"hitvideo", "single"}
    assert list(lines["hitvideo"].get_xdata()) == [1.0, 3.0, 5.0]
    assert list(lines["hitvideo"].get_ydata()) == [0.1, 0.3, 0.4]
    assert ax.get_xlabel() == "cfg_scale"
    assert report.swept_values(["a-steps=200-cfg_scale=2.5"], "steps") == {"a-steps=200-cfg_scale=2.5":
                                                                          ("a-cfg_scale=2.5", 200.0)}


def test_a_sweep_plot_names_a_swept_key(tmp_path):
    """A sweep plot whose ``by`` is no swept key is bad input at its line, naming the allowed keys."""
    from hitvideo_bench.errors import BadInput
    from hitvideo_bench.manager import get_plugins
    from hitvideo_bench.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("version: 1\nrecipe: r\ndataset: {name: fixture-noise, eval_clips: 2}\n"
                    "evaluate: {reconstruction: [fixture-mae]}\n"
                    "variants: {q: {codec: {name: fixture-quantize}}}\n"
                    "sweep: {codec.config.levels: [2, 4]}\n"
                    "plots:\n  - {kind: sweep, metric: fixture-mae, by: level}\n")
    get_plugins(["hitbench_fixture_plugin"])
    try:
        with pytest.raises(BadInput, match=r"r\.yaml:8: plots\.0\.by: .*allowed: levels"):
            load_recipe(path)
        path.write_text(path.read_text().replace("by: level}", "by: levels}"))
        assert [v.name for v in load_recipe(path).variants] == ["q-levels=2", "q-levels=4"]
    finally:
        get_plugins([])


def test_sweep_plot_draws_the_spread_over_seeds(figures, tmp_path):
    """With several seeds each point gets an error bar of the std over seeds, in its line's colour; with one seed
    none. Kills: no error bars, error bars of 1 or of the mean, a point left without its y values."""
    rows = [{**cell(f"a-cfg_scale={s}", "probe-fd", v), "seed": seed}
            for s, values in {1.0: (10.0, 14.0), 2.0: (20.0, 20.0)}.items() for seed, v in enumerate(values)]
    df = pd.DataFrame(rows, columns=COLUMNS)
    report.plot(df, PlotSpec(kind="sweep", metric="probe-fd", by="cfg_scale"), list(df["variant"]), tmp_path)
    ax = figures[0].axes[0]
    (bars,) = ax.containers
    segments = bars.lines[2][0].get_segments()
    assert [tuple(s[:, 0]) for s in segments] == [(1.0, 1.0), (2.0, 2.0)]
    assert [tuple(s[:, 1]) for s in segments] == [(12.0 - 8 ** 0.5, 12.0 + 8 ** 0.5), (20.0, 20.0)]
    assert bars.lines[2][0].get_color()[0].tolist() == list(matplotlib_rgba(ax.get_lines()[0].get_color()))
    assert ax.get_ylabel() == "probe-fd"


def matplotlib_rgba(color) -> tuple:
    from matplotlib.colors import to_rgba

    return to_rgba(color)
