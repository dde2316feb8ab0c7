#!/usr/bin/env bash
# Set everything up and run the main job on the built-in synthetic data at `tiny` scale.
# It ends by printing the comparison table and the folder the results went to.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hitbench run recipes/ablation_layers.yaml --jobs 2 "$@"
