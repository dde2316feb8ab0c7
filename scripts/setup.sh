#!/usr/bin/env bash
# Create or reuse the project's virtual environment in .venv and install the locked dependencies
# (requirements.lock: every package pinned, with hashes), then the project itself. Safe to run repeatedly:
# it reinstalls only when pyproject.toml or the lock changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.hitbench-installed
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing the locked dependencies and hitvideo-bench into .venv (first time: a few minutes)"
  quiet=(--quiet --disable-pip-version-check)
  .venv/bin/python -m pip install "${quiet[@]}" --require-hashes -r requirements.lock 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  # setuptools comes from the lock, so building the project fetches nothing unhashed
  .venv/bin/python -m pip install "${quiet[@]}" --no-deps --no-build-isolation -e . 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  if ! .venv/bin/python scripts/lockcheck.py; then
    echo "setup: requirements.lock does not match pyproject.toml (see above)" >&2
    exit 1
  fi
  .venv/bin/python -c "import hitvideo_bench, torch; print('setup: ok, torch', torch.__version__)"
  echo "$want" > "$stamp"
fi
