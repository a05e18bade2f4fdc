#!/usr/bin/env bash
# Contact sheets of the demo's default prompts (docs/demo-model.md, docs/images/demo-TAG-N.png): `vera-render demo`
# with BUNDLE (default: the shipped one) for each prompt below, its contact_sheet.png copied into docs/images.
# Usage: scripts/demo_sheets.sh TAG [BUNDLE]   e.g. scripts/demo_sheets.sh after; scripts/demo_sheets.sh before OLD
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TAG="${1:?usage: scripts/demo_sheets.sh TAG [BUNDLE]}"
BUNDLE="${2:-demo}"
PROMPTS=(
  "add a red ball moving left"
  "add a blue ring moving right"
  "add a yellow triangle moving up"
  "add a white star moving down"
  "change the background to green dots; keep the subject"
)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
for i in "${!PROMPTS[@]}"; do
  vera-render demo --out "$WORK/d$i" --prompt "${PROMPTS[$i]}" --bundle "$BUNDLE" --progress none 2>&1 | head -1
  cp "$WORK/d$i/contact_sheet.png" "$HERE/../docs/images/demo-$TAG-$((i + 1)).png"
done
