"""Weights declared by plugins (``hitbench_register_weights``): the example plugin's metric file is listed,
imported, downloaded from a local server and found as a built-in's is; duplicate and bad declarations are
errors naming the plugin; a missing file makes the metric ``unavailable`` in a run."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
import torch
from fixture_http_server import FixtureServer, local_network_only
from test_metrics_learned import RECIPE as LPIPS_OFFLINE_RECIPE

import hitvideo_bench as hb
from hitvideo_bench import weights
from hitvideo_bench.cli import main
from hitvideo_bench.errors import BadInput, WeightsUnavailable
from hitvideo_bench.manager import get_plugins, load_plugins

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = "hitbench_example.plugin"  # the example plugin loaded by module name (-p), as a user could
#: -p arguments loading it (and blocking its entry point, should the example be pip-installed here too)
PLUGIN_ARGS = ["-p", "no:example", "-p", EXAMPLE]
FILE = "hitbench-example-patch-projection-v1.safetensors"


@pytest.fixture
def example(tmp_path, monkeypatch):
    """Fixture: the example plugin loaded with -p for one test, empty weight caches, no network but 127.0.0.1."""
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "hitbench-example-plugin"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    local_network_only(monkeypatch)
    get_plugins(PLUGIN_ARGS[1::2])
    yield tmp_path
    get_plugins([])


def fixture_projection(path: Path, seed: int = 0, shape: tuple[int, ...] = (16, 48)) -> torch.Tensor:
    """Fixture: a projection file shaped like the example metric's weights (random values from ``seed``; the
    example publishes no real file)."""
    from safetensors.torch import save_file

    projection = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"projection": projection}, str(path))
    return projection


def reference_distance(pred: torch.Tensor, target: torch.Tensor, projection: torch.Tensor) -> float:
    """The metric recomputed by reshaping (not unfolding) frames cropped to a multiple of 4."""
    def feats(video):
        B, C, T, H, W = video.shape
        video = video[..., :H // 4 * 4, :W // 4 * 4]
        patches = video.reshape(B, C, T, H // 4, 4, W // 4, 4).permute(0, 2, 3, 5, 1, 4, 6).reshape(B, -1, C * 16)
        return patches.double() @ projection.double().T

    return float((feats(pred) - feats(target)).norm(dim=-1).mean())


def _module(name: str, source: str, monkeypatch) -> None:
    module = types.ModuleType(name)
    exec("from hitvideo_bench import hookimpl\nfrom hitvideo_bench.weights import WeightInfo\n" + source,
         module.__dict__)
    monkeypatch.setitem(sys.modules, name, module)


# ------------------------------------------------------------------------------------------- the example


def test_the_listing_shows_plugin_and_built_in_weights_with_who_declared_them(example, capsys):
    assert main([*PLUGIN_ARGS, "weights"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("example-projection "))
    assert "MISSING" in lines[at] and "used by patch-distance" in lines[at]
    block = "\n".join(lines[at:at + 5])
    assert str(example / "torch" / "hub" / "checkpoints" / FILE) in block
    assert "none published" in block and f"declared: by plugin {EXAMPLE} (-p local)" in block
    assert "declared: by plugin builtin (hitvideo-bench " in out and "i3d " in out
    assert weights.registry()["example-projection"].plugin == EXAMPLE


def test_a_missing_plugin_file_makes_its_metric_unavailable_with_the_download_hint(example):
    with pytest.raises(WeightsUnavailable) as info:
        hb.create_metric("patch-distance")
    hint = info.value.hint
    assert "hitbench weights --download example-projection" in hint and "--import FILE" in hint
    assert str(example / "torch" / "hub" / "checkpoints" / FILE) in hint


def test_an_imported_plugin_file_is_found_and_the_metric_computes(example, capsys):
    source = example / "downloads" / FILE
    projection = fixture_projection(source, seed=3)
    assert main([*PLUGIN_ARGS, "weights", "--import", str(source)]) == 0
    target = example / "torch" / "hub" / "checkpoints" / FILE
    assert f"as example-projection: {target}" in capsys.readouterr().out
    assert weights.find("example-projection") == target and target.read_bytes() == source.read_bytes()
    assert "example-projection present" in weights.format_table()

    g = torch.Generator().manual_seed(1)
    pred, target_clip = torch.rand(2, 3, 3, 18, 22, generator=g), torch.rand(2, 3, 3, 18, 22, generator=g)
    metric = hb.create_metric("patch-distance")
    metric.update(pred=pred, target=target_clip)
    assert float(metric.compute()) == pytest.approx(reference_distance(pred, target_clip, projection), rel=1e-5)
    assert metric.provenance()["weights_sha256"] == weights.sha256_of(target)
    same = hb.create_metric("patch-distance")
    same.update(pred=pred, target=pred)
    assert float(same.compute()) == 0.0


def test_import_rejects_files_that_are_not_the_plugin_weight(example, capsys):
    wrong_shape = example / "downloads" / FILE
    fixture_projection(wrong_shape, shape=(16, 12))
    assert main([*PLUGIN_ARGS, "weights", "--import", str(wrong_shape)]) == 2
    err = capsys.readouterr().err
    assert str(wrong_shape) in err and "'projection'" in err and "[16, 48]" in err and "[16, 12]" in err
    not_safetensors = example / "elsewhere" / FILE
    not_safetensors.parent.mkdir()
    not_safetensors.write_bytes(b"<html>not found</html>")
    with pytest.raises(BadInput, match="not a safetensors file"):
        weights.import_file(not_safetensors)
    assert not (example / "torch" / "hub" / "checkpoints" / FILE).exists()
    renamed = example / "projection.safetensors"  # no checksum is published: only the name identifies it
    fixture_projection(renamed)
    with pytest.raises(BadInput, match=FILE):
        weights.import_file(renamed)


def test_download_fetches_a_plugin_file_from_its_url(example, monkeypatch, capsys):
    import hitbench_example.plugin

    server = FixtureServer()
    try:
        fixture_projection(example / "served" / FILE, seed=5)
        server.files = {f"/{FILE}": (example / "served" / FILE).read_bytes(), "/broken": b"not a safetensors file"}
        monkeypatch.setattr(hitbench_example.plugin, "PROJECTION_URL", f"{server.base}/broken")
        assert main([*PLUGIN_ARGS, "weights", "--download", "example-projection"]) == 1
        assert "not a safetensors file" in capsys.readouterr().err
        assert not list((example / "torch" / "hub" / "checkpoints").iterdir())  # nothing placed, nothing left

        monkeypatch.setattr(hitbench_example.plugin, "PROJECTION_URL", f"{server.base}/{FILE}")
        assert main([*PLUGIN_ARGS, "weights", "--download", "example-projection"]) == 0
        assert "example-projection: downloaded: " in capsys.readouterr().out
        assert weights.find("example-projection").read_bytes() == server.files[f"/{FILE}"]
        assert server.requests[-1] == (f"/{FILE}", None)
    finally:
        server.stop()


#: the offline-weights recipe of test_metrics_learned with the example plugin's metric in place of lpips
RECIPE = LPIPS_OFFLINE_RECIPE.replace("[fixture-mae, lpips]", "[fixture-mae, patch-distance]")


def test_in_a_run_the_plugin_metric_reads_unavailable_then_computes_once_imported(example, tmp_path):
    recipe = tmp_path / "fixture-plugin-weights.yaml"
    recipe.write_text(RECIPE)

    def run(out: str) -> pd.DataFrame:
        assert main(["-p", "hitbench_fixture_plugin", *PLUGIN_ARGS, "run", str(recipe), "--out",
                     str(tmp_path / out), "--quiet"]) == 0
        df = pd.read_csv(next((tmp_path / out).rglob("metrics.csv")))
        return df[df.metric == "patch-distance"].iloc[0]

    missing = run("missing")
    assert math.isnan(missing.value) and missing.text.startswith("unavailable:")
    assert "hitbench weights --download example-projection" in missing.text
    fixture_projection(tmp_path / "downloads" / FILE)
    weights.import_file(tmp_path / "downloads" / FILE)
    assert run("present").value > 0


# ------------------------------------------------------------------------------------------- declarations


def test_a_weight_name_declared_by_two_plugins_names_both(monkeypatch, capsys):
    _module("dup_weights_fixture", (
        "@hookimpl\n"
        "def hitbench_register_weights():\n"
        "    return [WeightInfo('i3d', 'somewhere', '/tmp/i3d.pt', 'https://example.org/i3d.pt')]\n"), monkeypatch)
    with pytest.raises(BadInput, match=r"weight 'i3d' is declared twice: by plugin builtin .* by plugin "
                                       r"dup_weights_fixture"):
        weights.registry(load_plugins(["dup_weights_fixture"]))
    try:
        assert main(["-p", "dup_weights_fixture", "weights"]) == 2
    finally:
        get_plugins([])
    assert "dup_weights_fixture" in capsys.readouterr().err


@pytest.mark.parametrize("declaration, message", [
    ("[WeightInfo('x', 'm', '/tmp/x', 'https://example.org/x', kind='zip')]",
     "weight 'x': kind 'zip': allowed: file, hf-model, package"),
    ("[WeightInfo('x', 'm', '/tmp/x', 'https://example.org/x', sha256='abc')]",
     "weight 'x': sha256 'abc': needs the full sha256: 64 lowercase hex digits"),
    ("[WeightInfo('x', 'm', '/tmp/x', 'ftp://example.org/x')]", "weight 'x': url 'ftp://example.org/x': needs an http"),
    ("[WeightInfo('x', 'm', '/tmp/x', '', kind='package')]", "weight 'x': package '': kind 'package' needs"),
    ("[WeightInfo('x', 'm', '/tmp/x', 'https://example.org/x', aliases='y')]",
     "weight 'x': aliases 'y': needs a tuple of strings"),
    ("{'x': '/tmp/x'}", "returned {'x': '/tmp/x'}; expected a list of hitvideo_bench.weights.WeightInfo"),
])
def test_a_bad_declaration_names_plugin_weight_field_and_allowed_values(monkeypatch, declaration, message):
    _module("bad_weights_fixture", f"@hookimpl\ndef hitbench_register_weights():\n    return {declaration}\n",
            monkeypatch)
    with pytest.raises(BadInput) as info:
        weights.registry(load_plugins(["bad_weights_fixture"]))
    assert str(info.value).startswith("plugin bad_weights_fixture: ") and message in str(info.value)


def test_a_failing_weights_hook_is_reported_and_the_others_still_listed(monkeypatch):
    _module("failing_weights_fixture", (
        "@hookimpl\n"
        "def hitbench_register_weights():\n"
        "    raise RuntimeError('no weights today')\n"), monkeypatch)
    with pytest.warns(UserWarning, match="failing_weights_fixture.*no weights today"):
        reg = weights.registry(load_plugins(["failing_weights_fixture"]))
    assert {"alexnet", "i3d", "clip-vit-b32"} <= set(reg)
