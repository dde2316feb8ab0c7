"""video-folder isolation: a file whose probe crashes libav (SIGSEGV) and one whose probe hangs cost those two files,
not the run: the dataset yields the other clips, and both files are reported with their reason (a warning, the
dataset's ``dropped`` and identity, the run's summary, log and table note). A clip whose decode fails twice stops
the run with an error naming the file. One fork server for all; a fresh worker only after each crash or hang."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from fixture_video_reader import FIXTURE_HANG_LIMIT_S, FixtureFaultyReader
from hitvideo_bench.cli import main
from hitvideo_bench.errors import BadInput
from hitbench_builtin.datasets.video_folder import UnreadableClip, VideoFolder
from test_video_folder import folder, make_fixture_video

SEGFAULT = "the worker was killed by SIGSEGV"
CRASHED_TWICE = f"{SEGFAULT}; retried in a fresh worker: probe: {SEGFAULT}"
# the hang is caught by its CPU time; on a machine so loaded that the busy loop gets under a tenth of a core, by
# the wall-time bound first
HUNG = (rf"probe (used more than {FIXTURE_HANG_LIMIT_S:g} s of CPU time|did not answer in "
        rf"{10 * FIXTURE_HANG_LIMIT_S:g} s) \(the worker was killed\)")


@pytest.fixture
def fixture_faulty_folder(tmp_path) -> Path:
    """Fixture folder: good ``a.mp4`` and ``z.mp4`` around ``crash.mp4`` and ``hang.mp4``, which the fixture reader
    crashes and hangs on."""
    root = tmp_path / "videos"
    for i, name in enumerate(["a", "crash", "hang", "z"]):
        make_fixture_video(root / f"{name}.mp4", offset=i)
    return root


@pytest.fixture
def fixture_faulty_reader(monkeypatch):
    """Puts :class:`FixtureFaultyReader` (faulting at the stage given) in place of the dataset's reader."""
    def use(stage: str) -> None:
        monkeypatch.setattr(VideoFolder, "reader", FixtureFaultyReader(stage))
    return use


def test_a_crash_and_a_hang_in_probing_drop_their_files_and_the_others_are_read(fixture_faulty_folder,
                                                                                fixture_faulty_reader):
    fixture_faulty_reader("probe")
    root = fixture_faulty_folder
    ds = folder(root, frames=8, on_error="skip")
    with pytest.warns(UserWarning) as record:
        assert len(ds) == 2
    assert [Path(ds[i]["attrs"]["file"]).name for i in range(2)] == ["a.mp4", "z.mp4"]
    assert ds[1]["video"].shape == (3, 8, 64, 64)
    dropped = ds.dropped()
    assert list(dropped) == [str(root / "crash.mp4"), str(root / "hang.mp4")]
    assert dropped[str(root / "crash.mp4")] == f"cannot read video: probe: {CRASHED_TWICE}"
    assert re.fullmatch(f"cannot read video: {HUNG}; retried in a fresh worker: {HUNG}",
                        dropped[str(root / "hang.mp4")])
    warned = [str(w.message) for w in record if "video-folder" in str(w.message)]
    assert warned == [f"video-folder: skipping a file: {file}: {why}" for file, why in dropped.items()]
    assert ds.identity()["dropped"] == ["crash.mp4", "hang.mp4"]  # a split without them has another cache key

    with pytest.raises(BadInput, match=re.escape(f"crash.mp4: cannot read video: probe: {CRASHED_TWICE}")):
        len(folder(root, frames=8))  # on_error: raise (the default) names the file and why


def test_a_decode_that_crashes_twice_stops_the_run_naming_the_file(fixture_faulty_folder, fixture_faulty_reader):
    fixture_faulty_reader("decode")
    (fixture_faulty_folder / "hang.mp4").unlink()
    ds = folder(fixture_faulty_folder, frames=8)
    assert len(ds) == 3 and ds.dropped() == {}  # the probes passed
    with pytest.raises(UnreadableClip, match=re.escape(
            f"crash.mp4: decoding its clip at 0 s failed: decode: {SEGFAULT}; retried in a fresh worker: decode: "
            f"{SEGFAULT} (the file probed fine")):
        ds[1]
    assert Path(ds[2]["attrs"]["file"]).name == "z.mp4"  # a fresh worker reads on


RECIPE = """\
version: 1
recipe: fixture-unreadable
seeds: [0]
dataset:
  name: video-folder
  config: {{root: {root}, split_rule: all, on_error: skip, frames: 8, height: 16, width: 16}}
  eval_clips: 2   # the two readable files (validate refuses more than the split holds once crash.mp4 is dropped)
evaluate: {{reconstruction: [fixture-mae], batch_size: 2}}
variants:
  plain: {{codec: {{name: fixture-quantize}}}}
"""


@pytest.mark.usefixtures("fixture_plugin")
def test_a_run_reports_the_file_it_dropped_in_its_summary_log_and_table(tmp_path, fixture_faulty_folder,
                                                                       fixture_faulty_reader):
    fixture_faulty_reader("probe")
    (fixture_faulty_folder / "hang.mp4").unlink()
    recipe = tmp_path / "unreadable.yaml"
    recipe.write_text(RECIPE.format(root=fixture_faulty_folder))
    with pytest.warns(UserWarning, match="crash.mp4"):
        assert main(["-p", "hitbench_fixture_plugin", "run", str(recipe), "--out", str(tmp_path / "out"),
                     "--quiet"]) == 0
    out = next((tmp_path / "out" / "fixture-unreadable").iterdir())
    crash = str(fixture_faulty_folder / "crash.mp4")
    why = f"cannot read video: probe: {CRASHED_TWICE}"
    summary = json.loads((out / "runs" / "plain" / "seed-0" / "summary.json").read_text())
    assert summary["dropped_files"] == {crash: why}
    assert len(pd.read_csv(out / "per_clip.csv")) == 2  # a.mp4 and z.mp4 measured
    assert f"plain/seed-0: files left out of the data, they could not be read: {crash} ({why})" in (
        out / "table.md").read_text()
    log = (out / "logs" / "plain-seed-0.log").read_text()
    assert f"{crash}: probe: {SEGFAULT}; retrying in a fresh worker" in log
    assert "Fatal Python error: Segmentation fault" in log  # the worker's fault handler writes into the run's log
    assert f"plain/seed-0: warning: video-folder: skipping a file: {crash}: {why}" in log
