#!/usr/bin/env bash
# Reproduce the embedded demo model (core/vera/assets/demo): synthetic data, training, held-out evaluation.
# Usage: scripts/train_demo.sh [WORKDIR] [MAX_MINUTES]     (docs/demo-model.md; about 40 minutes on 2 CPU cores)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="${1:-demo-run}"
MINUTES="${2:-36}"
# torch's OpenMP threads spin-wait by default; on a shared CPU that wastes the other jobs' cycles and ours
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

vera-train synth --out "$WORK/train" --n 3000 --seed 0 --size 128x96 --frames 5 --progress log
vera-train synth --out "$WORK/heldout" --n 100 --seed 1000 --size 128x96 --frames 5 --progress log
vera-train fit --config "$HERE/demo_config.json" --data "$WORK/train" --out "$WORK/run" \
    --max-minutes "$MINUTES" --progress log
vera-train eval --bundle "$WORK/run/bundle" --data "$WORK/heldout" --out "$WORK/eval.json"
echo "trained bundle: $WORK/run/bundle (copy its files into core/vera/assets/demo to ship it)"
