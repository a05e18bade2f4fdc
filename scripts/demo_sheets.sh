#!/usr/bin/env bash
# Contact sheets of the demo's default prompts (docs/demo-model.md, docs/images/demo-TAG-N.png): `vera-render demo`
# for each prompt below, its sheet drawn by this checkout's vera.demo.contact_sheet (titles, frame numbers, prompt)
# into docs/images. VERA_RENDER picks the program that renders, e.g. an older checkout's to show "before":
#   scripts/demo_sheets.sh after
#   scripts/demo_sheets.sh before OLD_CHECKOUT/.venv/bin/vera-render
#   SPEED=turbo scripts/demo_sheets.sh turbo      (the speed preset; default: the demo's own, balanced)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TAG="${1:?usage: scripts/demo_sheets.sh TAG [VERA_RENDER]}"
VERA_RENDER="${2:-vera-render}"
PROMPTS=(
  "add a red ball moving left"
  "add a blue ring moving right"
  "change the background to green dots; keep the subject"
)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
for i in "${!PROMPTS[@]}"; do
  # the whole output to a file first: `| head -1` would cut the render off with SIGPIPE
  "$VERA_RENDER" demo --out "$WORK/d$i" --prompt "${PROMPTS[$i]}" ${SPEED:+--speed "$SPEED"} --progress none \
    > "$WORK/d$i.log" 2>&1
  head -1 "$WORK/d$i.log"
  python - "$WORK/d$i" <<'PY'
import sys
from pathlib import Path

from vera.demo import contact_sheet
from vera.shot import ShotSpec

out = Path(sys.argv[1])
spec = ShotSpec.load(out / "shot.json")
contact_sheet(out, spec, list(range(spec.plate.first, spec.plate.last + 1)))
PY
  cp "$WORK/d$i/contact_sheet.png" "$HERE/../docs/images/demo-$TAG-$((i + 1)).png"
done
