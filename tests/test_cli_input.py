"""No traceback on any input: files that are not recipes exit 2 naming the file and the reason."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hitvideo_bench.cli import main


@pytest.mark.parametrize("content, reason", [
    (bytes(range(256)) * 4, "not valid UTF-8"),
    (b"recipe: x\x00\x01\x02\n", "NUL bytes"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not valid UTF-8"),
])
def test_a_binary_file_as_a_recipe_exits_2_with_file_and_reason(tmp_path, capsys, content, reason):
    path = tmp_path / "blob.yaml"
    path.write_bytes(content)
    for command in ("validate", "run"):
        assert main([command, str(path), "--out", str(tmp_path / "out")] if command == "run"
                    else [command, str(path)]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and reason in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_folder_or_unreadable_recipe_exits_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "cannot read recipe" in err and "Traceback" not in err


def test_the_console_script_prints_no_traceback_for_a_binary_recipe(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42\xff\xfe" * 8)
    proc = subprocess.run([sys.executable, "-m", "hitvideo_bench", "validate", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and str(path) in proc.stderr and "not a text file" in proc.stderr


def test_table_on_a_damaged_results_folder_exits_2(tmp_path, capsys):
    (tmp_path / "metrics.csv").write_bytes(b"\xff\xfe\x00binary")
    assert main(["table", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "metrics.csv") in err and "Traceback" not in err
    (tmp_path / "metrics.csv").write_text("recipe,variant,seed,metric,value,higher_is_better,step,text,provenance,"
                                          "source\nr,a,0,psnr,20.0,True,,,,measured\n")
    (tmp_path / "resolved.yaml").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert main(["table", str(tmp_path)]) == 2
    assert str(tmp_path / "resolved.yaml") in capsys.readouterr().err
