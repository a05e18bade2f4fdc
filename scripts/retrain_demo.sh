#!/usr/bin/env bash
# Retrain the embedded demo model (core/vera/assets/demo) on today's synthetic data, starting from the shipped
# bundle (docs/demo-model.md, "How it was trained"): a warm start (scripts/demo_warm_start.py: same transformer,
# text encoder grown by the grammar's new words), one fine-tuning stage (scripts/demo_retrain.json), the
# held-out evaluation. Usage: scripts/retrain_demo.sh [WORKDIR] [MINUTES=24] [FROM_BUNDLE=core/vera/assets/demo]
# (scripts/train_demo.sh trains from scratch; its two stages made the bundle this one started from.)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="${1:-demo-retrain}"
MINUTES="${2:-24}"
FROM="${3:-$HERE/../core/vera/assets/demo}"
PROCS="${VERA_TRAIN_PROCS:-2}"  # data-parallel processes of one thread each (see scripts/train_demo.sh)
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
fit() { OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node "$PROCS" -m vera.train.cli fit "$@"; }

[ -d "$WORK/train" ] || vera-train synth --out "$WORK/train" --n 2000 --seed 0 --size 128x96 --frames 5 --progress log
[ -d "$WORK/heldout" ] || vera-train synth --out "$WORK/heldout" --n 100 --seed 1000 --size 128x96 --frames 5 --progress log
rm -rf "$WORK/warm"
python "$HERE/demo_warm_start.py" "$FROM" "$WORK/warm"
sed "s#__WARM_BUNDLE__#$(cd "$WORK/warm" && pwd)#" "$HERE/demo_retrain.json" > "$WORK/retrain.json"
fit --config "$WORK/retrain.json" --data "$WORK/train" --out "$WORK/run" --max-minutes "$MINUTES" --progress log
vera-train eval --bundle "$WORK/run/bundle" --data "$WORK/heldout" --out "$WORK/eval.json"
echo "trained bundle: $WORK/run/bundle (copy its files into core/vera/assets/demo to ship it)"
