"""The best matte IoU any demo model could reach at a given model resolution (docs/demo-model.md).

For each held-out synthetic shot (`vera-train eval`'s set: seed 1000, 128x96, 5 frames), the TRUE element
matte is taken to model resolution the way training sees it (vera.rebuild.Fit.to_model), then rebuilt at plate
resolution by the render path's own code (vera.rebuild.rebuild_layer: the plate-guided upsampling, the
feathered placement box of object additions, the threshold), and compared with the true matte at 0.5 as
`vera-train eval` does (vera.train.evaluate.matte_iou). A perfect model scores exactly this; a real one less.
The peer is the same measure at another model resolution, in the same run.

    python benchmarks/matte_ceiling.py --shots 40 --resolutions 64x48,128x96 [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from vera.rebuild import Fit, feather_inside, rebuild_layer
from vera.train.evaluate import PLACEMENT_MARGIN_MODEL_PX, matte_iou
from vera.train.masks import placement_mask
from vera.train.synth import OBJECT_ADDITION, make_sample


def ceiling(shot, model_w: int, model_h: int) -> float:
    alpha = shot.element[..., 3]
    frames, height, width = alpha.shape
    fit = Fit.compute(width, height, model_w, model_h)
    margin = PLACEMENT_MARGIN_MODEL_PX * height / model_h  # as evaluate_shot scales it to plate pixels
    boxes = placement_mask(alpha, int(round(margin))) if shot.task == OBJECT_ADDITION else None
    rebuilt = []
    for i in range(frames):
        small = fit.to_model(alpha[i][..., None])[..., 0]
        garbage = None if boxes is None else feather_inside(boxes[i], margin)
        rgba = rebuild_layer(np.zeros((model_h, model_w, 3), np.float32), small, shot.plate[i].astype(np.float32),
                             fit, garbage=garbage)
        rebuilt.append(rgba[..., 3])
    return matte_iou(np.stack(rebuilt), alpha)


def markdown(result: dict) -> str:
    """The table of a run (printed by main; the docs' block: scripts/docs_numbers.py)."""
    tasks = [k for k in result["rows"][0] if k != "model"]
    lines = [f"{result['shots']} held-out shots (synth seed {result['seed']}, {result['plate']} plates): matte IoU "
             "of the true matte taken to model resolution and rebuilt by the render path",
             "", "| model resolution | " + " | ".join(t.replace("_", " ") for t in tasks) + " |",
             "|---" * (len(tasks) + 1) + "|"]
    lines += [f"| {row['model']} | " + " | ".join(f"{row[t]:.3f}" for t in tasks) + " |" for row in result["rows"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shots", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1000, help="synthetic seed (default: eval's held-out 1000)")
    parser.add_argument("--size", default="128x96", help="plate WIDTHxHEIGHT (default 128x96)")
    parser.add_argument("--resolutions", default="64x48,128x96", help="model resolutions to compare")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x"))
    resolutions = [tuple(int(v) for v in r.split("x")) for r in args.resolutions.split(",")]
    shots = [make_sample(i, args.seed, size, 5) for i in range(args.shots)]
    rows = []
    for model_w, model_h in resolutions:
        by_task: dict[str, list[float]] = {}
        for shot in shots:
            by_task.setdefault(shot.task, []).append(ceiling(shot, model_w, model_h))
        rows.append({"model": f"{model_w}x{model_h}", **{task: round(float(np.mean(v)), 4)
                                                          for task, v in sorted(by_task.items())}})
    result = {"shots": args.shots, "seed": args.seed, "plate": args.size, "rows": rows}
    print(markdown(result))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
            out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
