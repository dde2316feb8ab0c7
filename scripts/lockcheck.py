"""Does requirements.lock still match pyproject.toml? Offline, without resolving anything.

The lock's header records a hash of pyproject.toml's dependency lists (``# pyproject-dependencies-sha256:``,
written by scripts/lock.sh); every requirement there must also be locked at a version its specifier allows, and
every locked package must carry hashes. ``python scripts/lockcheck.py`` prints the disagreements (exit 1) or
nothing (exit 0); ``--hash`` prints the hash the header should carry.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = "# pyproject-dependencies-sha256: "
#: the optional dependencies that scripts/setup.sh installs, so the lock holds them too
EXTRAS = ("test",)
UPDATE = "update it with: bash scripts/lock.sh"


def requirements(pyproject: Path) -> list[str]:
    """pyproject.toml's dependencies plus those of :data:`EXTRAS`, as written there."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = project.get("optional-dependencies", {})
    return list(project.get("dependencies", [])) + [r for name in EXTRAS for r in extras.get(name, [])]


def dependency_hash(pyproject: Path) -> str:
    """sha256 of the requirement lists the lock was made from (formatting and comments of the file aside)."""
    return hashlib.sha256(json.dumps(requirements(pyproject)).encode()).hexdigest()


def locked(lock: Path) -> tuple[dict[str, str], dict[str, int], str | None]:
    """The lock's ``{name: version}``, ``{name: number of hashes}`` and recorded dependency hash."""
    versions: dict[str, str] = {}
    hashes: dict[str, int] = {}
    recorded = None
    current = None
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line.startswith(HEADER):
            recorded = line.removeprefix(HEADER).strip()
        elif m := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line):
            current = _normal(m.group(1))
            versions[current] = m.group(2)
            hashes[current] = 0
        if current is not None and "--hash=sha256:" in line:
            hashes[current] += 1
    return versions, hashes, recorded


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def problems(pyproject: Path = ROOT / "pyproject.toml", lock: Path = ROOT / "requirements.lock") -> list[str]:
    """Every way ``lock`` disagrees with ``pyproject``; empty when they agree."""
    from packaging.requirements import Requirement

    if not lock.exists():
        return [f"{lock.name}: missing; create it with: bash scripts/lock.sh"]
    versions, hashes, recorded = locked(lock)
    out = []
    if recorded != dependency_hash(pyproject):
        out.append(f"{lock.name}: made from other dependencies than {pyproject.name} lists now "
                   f"(header hash {recorded or 'absent'}, pyproject's {dependency_hash(pyproject)}); {UPDATE}")
    for text in requirements(pyproject):
        req = Requirement(text)
        version = versions.get(_normal(req.name))
        if version is None:
            out.append(f"{pyproject.name}: {text}: not in {lock.name}; {UPDATE}")
        elif not req.specifier.contains(version, prereleases=True):
            out.append(f"{pyproject.name}: {text}: {lock.name} pins {req.name}=={version}; {UPDATE}")
    out += [f"{lock.name}: {name}=={versions[name]} has no --hash; {UPDATE}" for name, n in hashes.items() if n == 0]
    return out


def main(argv: list[str]) -> int:
    if argv == ["--hash"]:
        print(dependency_hash(ROOT / "pyproject.toml"))
        return 0
    found = problems()
    for problem in found:
        print(f"lockcheck: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
