"""requirements.lock agrees with pyproject.toml (checked offline by scripts/lockcheck.py), and the check names
each kind of disagreement."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("lockcheck", ROOT / "scripts" / "lockcheck.py")
lockcheck = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lockcheck)


def test_the_lock_matches_pyproject():
    assert lockcheck.problems() == []


@pytest.fixture
def copies(tmp_path):
    """Fixture: copies of pyproject.toml and requirements.lock to edit."""
    return (Path(shutil.copy(ROOT / "pyproject.toml", tmp_path)),
            Path(shutil.copy(ROOT / "requirements.lock", tmp_path)))


def test_a_changed_dependency_list_is_named_with_the_command_that_updates_the_lock(copies):
    pyproject, lock = copies
    text = pyproject.read_text()
    pyproject.write_text(text.replace('"pandas>=2.0",', '"pandas>=99",\n    "surely-not-locked>=1",'))
    found = lockcheck.problems(pyproject, lock)
    assert found[0].startswith("requirements.lock: made from other dependencies than pyproject.toml lists now")
    assert found[1:] == [
        "pyproject.toml: pandas>=99: requirements.lock pins pandas==3.1.1; update it with: bash scripts/lock.sh",
        "pyproject.toml: surely-not-locked>=1: not in requirements.lock; update it with: bash scripts/lock.sh"]
    pyproject.write_text(text.replace("dependencies = [", "dependencies = [  # comments change no hash"))
    assert lockcheck.problems(pyproject, lock) == []


def test_a_package_locked_without_hashes_or_a_missing_lock_is_named(copies, tmp_path):
    pyproject, lock = copies
    lines = lock.read_text().splitlines()
    start = lines.index("pluggy==1.7.0 \\")
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].lstrip().startswith("--hash"))
    lock.write_text("\n".join(lines[:start] + ["pluggy==1.7.0"] + lines[end:]) + "\n")
    assert lockcheck.problems(pyproject, lock) == [
        "requirements.lock: pluggy==1.7.0 has no --hash; update it with: bash scripts/lock.sh"]
    assert lockcheck.problems(pyproject, tmp_path / "none.lock") == [
        "none.lock: missing; create it with: bash scripts/lock.sh"]
