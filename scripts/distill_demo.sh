#!/usr/bin/env bash
# Distil the embedded demo model (core/vera/assets/demo) into its 4-step `turbo` student, in place: synthetic
# conditioning clips (the demo's training seed), then `vera-train distill` with scripts/demo_distill.json, which
# writes core/vera/assets/demo/student.safetensors and the student entry of its bundle.json (docs/training.md).
# Usage: scripts/distill_demo.sh [WORKDIR] [MINUTES]   (MINUTES caps the run on a slow or busy machine: it stops,
# checkpoints and exports the student it has; re-running with the same WORKDIR resumes.)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="${1:-demo-distill}"
MINUTES="${2:-10}"
DEMO="$HERE/../core/vera/assets/demo"
# one single-threaded process: on a shared CPU torch's thread pool spins more than it computes (docs/training.md)
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
[ -f "$WORK/train/.done" ] || { vera-train synth --out "$WORK/train" --n 96 --seed 0 --size 128x96 --frames 5 \
  --progress none && touch "$WORK/train/.done"; }
vera-train distill --config "$HERE/demo_distill.json" --data "$WORK/train" --out "$WORK/run" --bundle-out "$DEMO" \
  --max-minutes "$MINUTES" --progress log
