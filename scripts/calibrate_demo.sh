#!/usr/bin/env bash
# Re-measure the demo model's step-cache curve, core/vera/assets/demo/speed.json (docs/performance.md,
# "Sampling speed: presets"): four demo shots (seeds 21-24: two object additions, two background changes)
# calibrated at 50 steps into a copy of the bundle, whose speed.json then replaces the shipped one. Run it after
# every change of the demo transformer. Usage: scripts/calibrate_demo.sh [WORKDIR]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="${1:-demo-calibrate}"
DEMO="$HERE/../core/vera/assets/demo"
PROMPTS=(
  "add a red ball moving left"
  "change the background to blue stripes; keep the subject"
  "add a yellow star moving up"
  "change the background to green dots; keep the subject"
)
shots=()
for i in "${!PROMPTS[@]}"; do
  seed=$((21 + i))
  vera-render demo --out "$WORK/shot$seed" --prompt "${PROMPTS[$i]}" --seed "$seed" --speed quality --progress none >/dev/null
  shots+=("$WORK/shot$seed/shot.json")
done
rm -rf "$WORK/bundle"
vera-render calibrate "${shots[@]}" --steps 50 --out "$WORK/bundle" --progress none
cp "$WORK/bundle/speed.json" "$DEMO/speed.json"
echo "calibrated: $DEMO/speed.json"
