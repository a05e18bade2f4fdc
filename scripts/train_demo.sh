#!/usr/bin/env bash
# Reproduce the embedded demo model (core/vera/assets/demo): synthetic data, training, held-out evaluation.
# Usage: scripts/train_demo.sh [WORKDIR] [STAGE1_MINUTES] [STAGE2_MINUTES]   (docs/demo-model.md; under 60 minutes
# on 2 cores). Stage 1 trains from scratch; stage 2 continues from stage 1's bundle at a lower learning rate on a
# new data order. Each stage's config sets its steps; the minutes are caps for a slower machine.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="${1:-demo-run}"
MINUTES="${2:-30}"
STAGE2_MINUTES="${3:-24}"
# Training runs as PROCS data-parallel processes of one thread each (torchrun, gloo on the CPU): this model's
# ops are small, so two single-threaded processes do about 1.25x the work of one process with two threads. The
# configs' batch is per process (4 x 2 = 8 per step); a different PROCS changes the global batch.
PROCS="${VERA_TRAIN_PROCS:-2}"
# torch's OpenMP threads spin-wait by default; on a shared CPU that wastes the other jobs' cycles and ours
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
fit() { OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node "$PROCS" -m vera.train.cli fit "$@"; }

vera-train synth --out "$WORK/train" --n 3000 --seed 0 --size 128x96 --frames 5 --progress log
vera-train synth --out "$WORK/heldout" --n 100 --seed 1000 --size 128x96 --frames 5 --progress log
fit --config "$HERE/demo_config.json" --data "$WORK/train" --out "$WORK/run" --max-minutes "$MINUTES" --progress log
# Stage 2: the same data, from stage 1's exported bundle (absolute path written into a copy of the config).
sed "s#__STAGE1_BUNDLE__#$(cd "$WORK/run/bundle" && pwd)#" "$HERE/demo_finetune.json" > "$WORK/stage2.json"
fit --config "$WORK/stage2.json" --data "$WORK/train" --out "$WORK/stage2" --max-minutes "$STAGE2_MINUTES" --progress log
vera-train eval --bundle "$WORK/stage2/bundle" --data "$WORK/heldout" --out "$WORK/eval.json"
echo "trained bundle: $WORK/stage2/bundle (copy its files into core/vera/assets/demo to ship it)"
