#!/usr/bin/env bash
# Re-make requirements.lock from pyproject.toml: every transitive dependency pinned, with hashes (pip-tools'
# pip-compile, run from a throwaway virtual environment). Versions already locked are kept unless asked:
#   bash scripts/lock.sh                          # after editing pyproject.toml's dependencies
#   bash scripts/lock.sh --upgrade-package NAME   # move one package to its newest allowed version
#   bash scripts/lock.sh --upgrade                # move every package
# Then run bash scripts/setup.sh (it reinstalls from the new lock) and the tests, and commit the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
"$PYTHON" -m venv "$tools"
"$tools/bin/python" -m pip install --quiet --disable-pip-version-check pip-tools==7.7.0
"$tools/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras --extra test \
  --no-emit-index-url --no-emit-find-links --output-file requirements.lock "$@" pyproject.toml
# the hash of the dependency lists it was made from: scripts/lockcheck.py compares it with pyproject.toml's
header="# pyproject-dependencies-sha256: $("$PYTHON" scripts/lockcheck.py --hash)"
{ echo "$header"; grep -v '^# pyproject-dependencies-sha256: ' requirements.lock; } > requirements.lock.new
mv requirements.lock.new requirements.lock
"$tools/bin/python" -m pip install --quiet --disable-pip-version-check packaging
"$tools/bin/python" scripts/lockcheck.py
echo "lock: wrote requirements.lock ($(grep -c '^[A-Za-z0-9].*==' requirements.lock) packages)"
