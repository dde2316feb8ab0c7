"""The report from tidy rows, without running anything: table cells and their formats, column and row order,
baselines, notes, reference rows, the results files, re-rendering a folder, and the data each plot draws."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from matplotlib.container import BarContainer

from hitvideo_bench import report
from hitvideo_bench.errors import BadInput
from hitvideo_bench.recipe.schema import PlotSpec, ReferenceRow, TableSpec
from hitvideo_bench.report import COLUMNS, build_table, load_results, run_notes, write_results, write_tables


def row(variant, metric, value, higher=None, *, seed=0, text="", step=None, source="measured"):
    """Fixture: one tidy row."""
    return {"recipe": "r", "variant": variant, "seed": seed, "metric": metric, "value": value,
            "higher_is_better": higher, "step": step, "text": text, "provenance": "", "source": source}


def frame(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=COLUMNS)


@pytest.fixture
def figures(monkeypatch):
    """Fixture: the figures plot() would save, kept open for the test (and written nowhere)."""
    kept = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: kept.append(fig) or path)
    return kept


# ------------------------------------------------------------------------------------------ tables


def test_cells_show_whole_numbers_whole_large_values_to_one_decimal_and_the_rest_to_the_table_decimals():
    """Kills: _cell's formats swapped or their thresholds moved (|mean| >= 100), the std over seeds taken with
    ddof 0 or left out, or a text shown over a number."""
    df = frame(row("a", "count", 3.0, seed=0), row("a", "count", 6.0, seed=1),
               row("a", "big", 99.5, seed=0), row("a", "big", 100.5, seed=1),
               row("a", "neg", -150.5), row("a", "small", 0.1, seed=0), row("a", "small", 0.3, seed=1),
               row("a", "one", 0.123456), row("a", "note", math.nan, text="n/a: needs pyramid"),
               row("a", "both", 0.5, text="ignored"), row("a", "none", math.nan))
    table = build_table(df, TableSpec(decimals=3), ["a"])
    assert table.to_dict("records") == [{
        "variant": "a", "count": "4 ± 2", "big": "100.0 ± 0.7", "neg": "-150.5", "small": "0.200 ± 0.141",
        "one": "0.123", "note": "n/a: needs pyramid", "both": "0.500", "none": ""}]


def test_rows_follow_the_recipe_then_the_references_and_a_sort_puts_non_numbers_last():
    """Kills: build_table ordering variants otherwise than the recipe (then rows from elsewhere), dropping the
    source column with a reference row present, sorting descending or not stably, or filling the wrong blank
    (``n/a`` for a column nobody measured, empty for one another variant measured)."""
    df = frame(row("b", "psnr", 20.5, True), row("a", "psnr", 30.5, True), row("a", "lpips", 0.2, False),
               row("c", "psnr", math.nan, True, text="unavailable: no weights"),
               row("Paper", "psnr", 25.5, source="paper"))
    table = build_table(df, TableSpec(columns=["psnr", "lpips", "fvd"]), ["a", "b", "c"])
    assert list(table.columns) == ["variant", "source", "psnr ↑", "lpips ↓", "fvd"]
    assert table.values.tolist() == [["a", "measured", "30.5000", "0.2000", "n/a"],
                                     ["b", "measured", "20.5000", "", "n/a"],
                                     ["c", "measured", "unavailable: no weights", "", "n/a"],
                                     ["Paper", "paper", "25.5000", "", "n/a"]]
    ranked = build_table(df, TableSpec(columns=["psnr"], sort_by="psnr"), ["c", "a", "b"])
    assert ranked["variant"].tolist() == ["b", "Paper", "a", "c"]
    unsorted = build_table(df, TableSpec(columns=["psnr"], sort_by="ssim"), ["c", "a", "b"])
    assert unsorted["variant"].tolist() == ["c", "a", "b", "Paper"]
    measured_only = build_table(df[df.source == "measured"], TableSpec(), ["a", "b"])
    assert list(measured_only.columns) == ["variant", "psnr ↑", "lpips ↓"]


def test_the_table_shows_final_values_only_and_reads_directions_written_as_text():
    """Kills: build_table mixing training-curve rows (with a step) into the final values, or _as_bool reading the
    text 'False' of a CSV as true."""
    df = frame(row("a", "psnr", 30.5, "True"), row("a", "psnr", 5.0, "True", step=10.0),
               row("a", "lpips", 0.25, "False"), row("a", "bits", 2.0, math.nan))
    table = build_table(df, TableSpec(), ["a"])
    assert table.to_dict("records") == [{"variant": "a", "psnr ↑": "30.5000", "lpips ↓": "0.2500", "bits": "2"}]
    assert [report.tables._as_bool(v) for v in (True, "false", "TRUE", None, math.nan, 0)] == [True, False, True, None,
                                                                                      None, False]


def test_a_delta_column_is_the_difference_of_means_to_each_variants_baseline():
    """Kills: _delta subtracting the other way, dropping the sign or the table's decimals, comparing with a
    variant that has no values, or filling a row without a baseline."""
    df = frame(row("base", "psnr", 20.0, True, seed=0), row("base", "psnr", 22.0, True, seed=1),
               row("new", "psnr", 22.5, True), row("worse", "psnr", 19.0, True), row("lost", "psnr", 18.0, True))
    spec = TableSpec(decimals=2, deltas=["psnr"], baseline={"new": "base", "worse": "base", "lost": "gone"})
    table = build_table(df, spec, ["base", "new", "worse", "lost"])
    assert table["Δpsnr vs baseline"].tolist() == ["", "+1.50", "-2.00", ""]


def test_markdown_csv_and_html_tables_carry_the_title_notes_and_escaped_cells(tmp_path):
    """Kills: write_tables ignoring the table's title, losing the notes (their order: direction, references,
    the run's own), or writing unescaped HTML."""
    df = frame(row("<b>", "psnr", 20.0, True), row("Paper", "psnr", 25.0, source="paper"))
    files = write_tables(df, TableSpec(title="My table"), ["<b>"], tmp_path, "fallback",
                         notes=["Component versions: x"])
    assert [f.name for f in files] == ["table.md", "table.csv", "table.html"]
    md = files[0].read_text()
    assert md.startswith("# My table\n\n| variant")
    assert md.endswith("\n\n- ↑ higher is better, ↓ lower is better; mean ± std over seeds where several.\n"
                       "- Rows whose source is not 'measured' are copied from the publication named, not measured "
                       "here.\n- Component versions: x\n")
    assert pd.read_csv(files[1]).values.tolist() == [["<b>", "measured", 20.0], ["Paper", "paper", 25.0]]
    html = files[2].read_text()
    assert html.startswith("<h1>My table</h1>\n<table") and "&lt;b&gt;" in html and "<b>" not in html
    plain = write_tables(frame(row("a", "psnr", 20.0, True)), TableSpec(), ["a"], tmp_path, "fallback")
    md = plain[0].read_text()
    assert md.startswith("# fallback\n") and "copied from the publication" not in md


def test_notes_name_component_versions_by_plugin_and_each_failed_run_by_its_first_line():
    """Kills: run_notes grouping versions otherwise than by plugin and version, not sorting them, or quoting a
    failed run's whole (multi-line) error."""
    part = {"name": "fixture-quantize", "version": "1", "plugin": "tests", "plugin_version": "0.1"}
    components = {"q/seed-0": {"codec": part, "dataset": {**part, "name": "fixture-noise", "version": "2"}},
                  "q/seed-1": {"codec": part, "eval": {**part, "name": "psnr", "plugin": "builtin"}}}
    failed = {"r/seed-0": {"error": "boom\ndetails", "log": "x.log"}, "s/seed-0": {"log": "y.log"}}
    assert run_notes(components, failed) == [
        "Component versions: builtin 0.1: psnr 1; tests 0.1: fixture-noise 2, fixture-quantize 1",
        "Failed runs, not in this table (re-run the recipe to retry them): r/seed-0 (boom); s/seed-0 (failed)"]
    assert run_notes({}, {}) == []


def test_manifest_notes_are_read_from_a_results_folder_and_none_from_a_broken_manifest(tmp_path):
    """Kills: manifest_notes failing on a missing or malformed manifest, or reading components of runs that
    recorded none."""
    path = tmp_path / "manifest.json"
    assert report.manifest_notes(path) == []
    path.write_text("[1, 2]")
    assert report.manifest_notes(path) == []
    path.write_text("{not json")
    assert report.manifest_notes(path) == []
    part = {"name": "c", "version": "1", "plugin": "p", "plugin_version": "2"}
    path.write_text(json.dumps({"runs": {"a/seed-0": {"components": {"codec": part}}, "b/seed-0": None,
                                         "c/seed-0": {"wall_s": 1}},
                                "failed_runs": {"d/seed-0": {"error": "bad"}}}))
    assert report.manifest_notes(path) == [
        "Component versions: p 2: c 1",
        "Failed runs, not in this table (re-run the recipe to retry them): d/seed-0 (bad)"]


def test_hitbench_table_says_when_runs_were_computed_with_different_cpu_kernels(tmp_path, capsys):
    """Runs from an AVX-512 machine and from the reproducible mode in one folder: a note under the table names
    each kernel level and its runs; runs at one level, or that recorded none, get no note."""
    from hitvideo_bench.cli import main

    write_results(frame(row("a", "psnr", 20.3, True), row("b", "psnr", 21.0, True)), tmp_path)
    (tmp_path / "resolved.yaml").write_text("recipe: r\nvariants: {a: {}, b: {}}\n")
    capped = {"cpu_capability": "AVX2", "reproducible_cpu": True}
    native = {"cpu_capability": "AVX512", "reproducible_cpu": False}
    runs = {"a/seed-0": {"machine": capped}, "b/seed-0": {"machine": native}, "b/seed-1": {"machine": capped}}
    (tmp_path / "manifest.json").write_text(json.dumps({"runs": runs}))
    assert main(["table", str(tmp_path)]) == 0
    note = ("- Runs computed with different CPU kernels, so their numbers can differ in float rounding besides what "
            "the recipe varies (docs/running.md): AVX2 (reproducible mode): a/seed-0, b/seed-1; "
            "AVX512 (native): b/seed-0\n")
    assert note in capsys.readouterr().out and note in (tmp_path / "table.md").read_text()
    assert report.kernel_notes({"a/seed-0": {"machine": capped}, "b/seed-0": {"machine": capped}}) == []
    assert report.kernel_notes({"a/seed-0": {}, "b/seed-0": None}) == []
    assert "not recorded: a/seed-0" in report.kernel_notes({"a/seed-0": {}, "b/seed-0": {"machine": native}})[0]


def test_reference_rows_keep_numbers_as_values_and_words_as_text():
    """Kills: reference_rows turning a word into a number (or the reverse), or losing a row's source and note."""
    refs = [ReferenceRow(variant="Paper", source="[3] Table 2", values={"psnr": 30, "fvd": "n/r"}, note="p. 7")]
    rows = report.reference_rows("r", refs)
    assert list(rows.columns) == COLUMNS
    assert rows[["variant", "metric", "text", "provenance", "source"]].values.tolist() == [
        ["Paper", "psnr", "", "p. 7", "[3] Table 2"], ["Paper", "fvd", "n/r", "p. 7", "[3] Table 2"]]
    assert rows["value"].iloc[0] == 30.0 and isinstance(rows["value"].iloc[0], float)
    assert math.isnan(rows["value"].iloc[1]) and rows["seed"].isna().all()
    assert report.reference_rows("r", []).empty


def test_table_metrics_are_the_columns_else_every_final_metric_in_order():
    """Kills: table_metrics ignoring the table's columns, or listing a curve-only metric."""
    df = frame(row("a", "psnr", 1.0), row("a", "loss", 1.0, step=1.0), row("a", "ssim", 1.0), row("b", "psnr", 2.0))
    assert report.table_metrics(df, TableSpec()) == ["psnr", "ssim"]
    assert report.table_metrics(df, TableSpec(columns=["ssim"])) == ["ssim"]


# ------------------------------------------------------------------------------------------ results files


def test_results_are_split_into_metrics_and_timings_and_read_back_together(tmp_path):
    """Kills: write_results putting timing rows into metrics.csv (or dropping them), or load_results reading only
    metrics.csv, accepting a file without the tidy columns, or leaving empty text cells as NaN."""
    df = frame(row("a", "psnr", 20.0, True), row("a", "encode_s", 1.5, source="timing"))
    files = write_results(df, tmp_path)
    assert files == [tmp_path / "metrics.csv", tmp_path / "timings.csv"]
    assert pd.read_csv(files[0])["metric"].tolist() == ["psnr"]
    assert pd.read_csv(files[1])["metric"].tolist() == ["encode_s"]
    back = load_results(tmp_path)
    assert back["metric"].tolist() == ["psnr", "encode_s"] and list(back.columns) == COLUMNS
    assert back["text"].tolist() == ["", ""] and back["provenance"].tolist() == ["", ""]
    assert load_results(tmp_path / "metrics.csv")["metric"].tolist() == ["psnr", "encode_s"]


def test_a_folder_without_results_or_with_a_foreign_csv_is_bad_input_naming_it(tmp_path):
    """Kills: load_results' messages losing the path, what it expected, or the missing columns."""
    with pytest.raises(BadInput) as info:
        load_results(tmp_path)
    assert str(info.value) == (f"no results at {tmp_path}: expected {tmp_path / 'metrics.csv'} (a folder written "
                               "by 'hitbench run')")
    (tmp_path / "metrics.csv").write_text("recipe,variant,value\nr,a,1\n")
    with pytest.raises(BadInput) as info:
        load_results(tmp_path)
    assert str(info.value) == (f"{tmp_path / 'metrics.csv'}: not a hitbench results file (missing columns: seed, "
                               "metric, higher_is_better, step, text, provenance, source)")
    (tmp_path / "metrics.csv").write_text("")
    with pytest.raises(BadInput, match=r"metrics.csv: not a readable results file \(EmptyDataError: "):
        load_results(tmp_path)


def test_rerendering_a_folder_without_a_resolved_recipe_or_with_a_broken_one_names_the_file(tmp_path):
    """Kills: rerender's messages losing the file or the reason."""
    write_results(frame(row("a", "psnr", 20.3, True)), tmp_path)
    with pytest.raises(BadInput) as info:
        report.rerender(tmp_path)
    assert str(info.value) == f"{tmp_path}: no resolved.yaml (not a folder written by 'hitbench run')"
    (tmp_path / "resolved.yaml").write_text("plots: [{kind: pie, metric: psnr}]\n")
    with pytest.raises(BadInput) as info:
        report.rerender(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'resolved.yaml'}: not a resolved recipe written by 'hitbench "
                                      "run' (ValidationError: 1 validation error for PlotSpec)")
    (tmp_path / "resolved.yaml").write_text("recipe: r\ndescription: Rerendered\nvariants: {a: {}}\n"
                                            "table: {decimals: 1}\n")
    files = report.rerender(tmp_path)
    assert tmp_path / "table.md" in files
    assert (tmp_path / "table.md").read_text().startswith("# Rerendered\n") and "| 20.3 " in files[2].read_text()


# ------------------------------------------------------------------------------------------ plots


def test_a_bar_plot_draws_the_mean_and_std_over_seeds_in_the_recipe_order(figures, tmp_path):
    """Kills: _bar_plot drawing another statistic, another order, variants without a value, or no error bars;
    plot() naming the file or titling the plot otherwise."""
    df = frame(row("b", "psnr", 20.0, seed=0), row("b", "psnr", 24.0, seed=1), row("a", "psnr", 30.0),
               row("c", "psnr", math.nan, text="unavailable"), row("Paper", "psnr", 99.0, source="paper"),
               row("a", "psnr", 1.0, step=5.0))
    assert report.plot(df, PlotSpec(kind="bar", metric="psnr"), ["a", "b", "c"], tmp_path) == \
        tmp_path / "bar_psnr.png"
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert [p.get_height() for p in ax.patches] == [30.0, 22.0]
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [seg[1][1] - seg[0][1] for seg in bars.errorbar.lines[2][0].get_segments()] == pytest.approx(
        [0.0, 2 * math.sqrt(8)])
    assert ax.get_title() == "psnr (bar)" and ax.get_ylabel() == "psnr"
    spec = PlotSpec(kind="bar", metric="probe-fd/probe_acc", title="T", file="f.png")
    assert report.plot(frame(row("a", "probe-fd/probe_acc", 1.0)), spec, ["a"], tmp_path) == tmp_path / "f.png"
    assert figures[1].axes[0].get_title() == "T"
    assert report.plot(frame(row("a", "x/y", 1.0)), PlotSpec(kind="bar", metric="x/y"), ["a"], tmp_path) == \
        tmp_path / "bar_x_y.png"
    assert report.plot(df, PlotSpec(kind="bar", metric="ssim"), ["a"], tmp_path) is None


def test_grouped_bars_cluster_each_group_and_label_bars_by_what_the_variant_adds(figures, tmp_path):
    """Kills: _grouped_bars misplacing a bar (cluster or offset), labelling it by the full variant name, or
    _member_label not calling the group's own variant 'base'."""
    df = frame(row("ar", "psnr", 10.0), row("ar-big", "psnr", 12.0), row("mlm", "psnr", 20.0),
               row("mlm_big", "psnr", 22.0))
    spec = PlotSpec(kind="bar", metric="psnr", groups={"ar": ["ar", "ar-big"], "mlm": ["mlm", "mlm_big"]})
    report.plot(df, spec, ["ar", "ar-big", "mlm", "mlm_big"], tmp_path)
    ax = figures[0].axes[0]
    bars = {c.get_label(): [(round(p.get_x() + p.get_width() / 2, 6), p.get_height()) for p in c.patches]
            for c in ax.containers if isinstance(c, BarContainer)}
    assert bars == {"base": [(-0.2, 10.0), (0.8, 20.0)], "big": [(0.2, 12.0), (1.2, 22.0)]}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ar", "mlm"]
    assert report.plots._member_label("other", "ar") == "other"


def test_line_and_layers_plots_draw_the_mean_over_seeds_per_step_and_per_layer_count(figures, tmp_path):
    """Kills: _line_plot drawing final values or one seed only, _layers_plot reading k from the wrong part of
    ``metric@k`` or drawing other metrics, and the axis labels."""
    df = frame(row("a", "psnr", 10.0, step=1.0, seed=0), row("a", "psnr", 12.0, step=1.0, seed=1),
               row("a", "psnr", 20.0, step=2.0, seed=0), row("a", "psnr", 22.0, step=2.0, seed=1),
               row("a", "psnr", 99.0), row("b", "psnr", 5.0, step=1.0),
               row("a", "psnr@1", 14.0), row("a", "psnr@2", 16.0), row("a", "psnr@12", 18.0),
               row("a", "ssim@1", 0.5))
    report.plot(df, PlotSpec(kind="line", metric="psnr"), ["a", "b"], tmp_path)
    ax = figures[0].axes[0]
    assert [(line.get_label(), list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()] == [
        ("a", [1.0, 2.0], [11.0, 21.0]), ("b", [1.0], [5.0])]
    assert ax.get_xlabel() == "training step" and ax.get_ylabel() == "psnr"
    report.plot(df, PlotSpec(kind="layers", metric="psnr"), ["a"], tmp_path)
    ax = figures[1].axes[0]
    assert [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()] == [
        ([1, 2, 12], [14.0, 16.0, 18.0])]
    assert ax.get_xlabel() == "layers decoded (coarsest k)" and ax.get_ylabel() == "psnr"
    assert report.plot(df, PlotSpec(kind="line", metric="ssim"), ["a"], tmp_path) is None
    assert report.plot(df, PlotSpec(kind="layers", metric="lpips"), ["a"], tmp_path) is None
