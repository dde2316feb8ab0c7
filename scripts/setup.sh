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
pip_install() {  # without the warnings about this machine's absent local indexes; pip's exit status kept
  local out rc=0
  out=$(.venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" 2>&1) || rc=$?
  grep -v "is ignored: it is neither a file nor a directory" <<<"$out" || true
  return $rc
}
stamp=.venv/.hitbench-installed
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing the locked dependencies and hitvideo-bench into .venv (first time: a few minutes)"
  pip_install --require-hashes -r requirements.lock
  # setuptools comes from the lock, so building the project fetches nothing unhashed
  pip_install --no-deps --no-build-isolation -e .
  if ! .venv/bin/python scripts/lockcheck.py; then
    echo "setup: requirements.lock does not match pyproject.toml (see above)" >&2
    exit 1
  fi
  .venv/bin/python -c "import hitvideo_bench, torch; print('setup: ok, torch', torch.__version__)"
  echo "$want" > "$stamp"
fi
