"""I/O benchmark: one 4096x2160 RGBA half frame. Our EXR write and read against oiiotool doing the same work
in the same run, and the whole post-model step (rebuild at full resolution + premultiply + write) as ratios
to our plain write.

    python benchmarks/io_bench.py [--repeat 5] [--width 4096 --height 2160] [--json out.json]

What is timed (median of --repeat runs, interleaved so machine load hits all rows alike):
- ours write: `vera.exr.write_layers` of an (H, W, 4) float32 premultiplied layer -> R,G,B,A + matte.A half, ZIP
  (includes the float32 -> half conversion and the atomic rename).
- oiiotool write: `oiiotool -i:now=1 layer.exr --compression zip -o out.exr` with the same five half channels;
  the time of its `-o` step from `--runstats` (the image is already in memory, as ours is).
- ours read: `vera.plates.open_sequence(...).read(frame)` -> float32 (H, W, 4) over the display window
  (header scan, decode, NaN/inf check, conversion).
- oiiotool read: `oiiotool -i:now=1 plate.exr` `-i` step from `--runstats` (decodes into float, as ours does).
- post-model step: `vera.rebuild.rebuild_layer` from an 832x480 model output (edit RGB + matte, letterboxed)
  with the full-resolution plate as guide, then `write_layers`; for an object (a soft ellipse over ~1/4 of
  the frame: full-resolution work is limited to where the matte can be non-zero) and for a full-frame matte
  (background change: the whole frame is rebuilt).
Targets (issue 2): ours write <= 1.3x oiiotool's; post-model step < 3x our plain write.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def plate_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Plate-like content (smooth shading, edges and grain), (h, w, 4) float32, alpha 1: compresses like
    photographed plates do, not like white noise or flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 0.25 + 0.2 * np.sin(x / 370.0) * np.cos(y / 290.0)
    g = 0.2 + 0.15 * np.cos((x + y) / 510.0)
    b = 0.15 + 0.1 * ((x // 256 + y // 256) % 2)  # hard edges
    rgb = np.stack([r, g, b], -1) + rng.normal(0, 0.01, (h, w, 3)).astype(np.float32)
    return np.concatenate([rgb, np.ones((h, w, 1), np.float32)], -1).astype(np.float32)


def oiiotool_step(args: list[str], step: str) -> float:
    """Seconds oiiotool reports for one step (`-i`, `-o`) in its --runstats output."""
    exe = str(Path(sys.executable).with_name("oiiotool"))
    out = subprocess.run([exe, *args, "--runstats"], capture_output=True, text=True, check=True).stdout
    m = re.search(rf"^\s*{re.escape(step)}\s*:\s*([0-9.]+)", out, re.M)
    if not m:
        raise RuntimeError(f"no '{step}' time in oiiotool --runstats output:\n{out}")
    return float(m.group(1))


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--height", type=int, default=2160)
    parser.add_argument("--model-width", type=int, default=832)
    parser.add_argument("--model-height", type=int, default=480)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]  # at the start: the run itself adds to it

    import OpenEXR

    from vera import exr, plates
    from vera.rebuild import Fit, rebuild_layer

    H, W = args.height, args.width
    window = (0, 0, W - 1, H - 1)
    tmp = Path(tempfile.mkdtemp(prefix="vera_io_bench_"))
    plate = plate_like(H, W)
    plate_half = plate.astype(np.float16)
    box = (np.array([0, 0], np.int32), np.array([W - 1, H - 1], np.int32))
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "displayWindow": box, "dataWindow": box}
    OpenEXR.File(header, {c: np.ascontiguousarray(plate_half[..., i]) for i, c in enumerate("RGBA")}) \
        .write(str(tmp / "plate.1001.exr"))

    # A model output: an object in the middle of the frame, soft matte, letterboxed like the pipeline's.
    fit = Fit.compute(W, H, args.model_width, args.model_height)
    my, mx = np.mgrid[0:fit.model_h, 0:fit.model_w].astype(np.float32)
    dist = np.hypot((mx - fit.model_w / 2) / (fit.model_w / 5), (my - fit.model_h / 2) / (fit.model_h / 4))
    matte_model = np.clip(1.5 - dist, 0, 1).astype(np.float32)
    edit_model = plate_like(fit.model_h, fit.model_w, seed=1)[..., [2, 0, 1]]  # generated content, not noise
    matte_full = np.full((fit.model_h, fit.model_w), 0.9, np.float32)  # background change: the whole frame
    layer = rebuild_layer(edit_model, matte_model, plate[..., :3], fit)
    # The same five half channels ours writes, as oiiotool's input.
    layer_half = layer.astype(np.float16)
    OpenEXR.File(header, {**{c: np.ascontiguousarray(layer_half[..., i]) for i, c in enumerate("RGBA")},
                          "matte.A": np.ascontiguousarray(layer_half[..., 3])}).write(str(tmp / "layer.exr"))

    pattern = str(tmp / "plate.####.exr")
    attrs = {"prompt": "benchmark", "seed": 0, "model": "none", "source": str(tmp / "plate.1001.exr")}
    cases = {"object": matte_model, "full frame": matte_full}
    rows = {name: [] for name in ("ours write", "oiiotool write", "ours read", "oiiotool read")}
    for case in cases:
        rows.update({f"rebuild ({case})": [], f"write ({case})": []})
    plates.open_sequence(pattern).read(1001)  # warm up imports and the file cache
    for _ in range(args.repeat):
        rows["ours write"].append(timed(lambda: exr.write_layers(tmp / "ours.exr", layer, window, attrs)))
        rows["oiiotool write"].append(oiiotool_step(
            ["-i:now=1", str(tmp / "layer.exr"), "--compression", "zip", "-o", str(tmp / "oiio.exr")], "-o"))
        rows["ours read"].append(timed(lambda: plates.open_sequence(pattern).read(1001)))
        rows["oiiotool read"].append(oiiotool_step(["-i:now=1", str(tmp / "plate.1001.exr")], "-i"))
        for case, matte in cases.items():
            t0 = time.perf_counter()
            rgba = rebuild_layer(edit_model, matte, plate[..., :3], fit)
            t1 = time.perf_counter()
            exr.write_layers(tmp / "post.exr", rgba, window, attrs)
            rows[f"rebuild ({case})"].append(t1 - t0)
            rows[f"write ({case})"].append(time.perf_counter() - t1)
            del rgba

    med = {k: statistics.median(v) for k, v in rows.items()}
    for case in cases:  # the whole post-model step, per run, then its median
        rows[f"post-model step ({case})"] = [r + w for r, w in zip(rows[f"rebuild ({case})"],
                                                                   rows[f"write ({case})"])]
        med[f"post-model step ({case})"] = statistics.median(rows[f"post-model step ({case})"])
    # Each row's base: a case's rebuild and post-model step against the plain write of the layer that case
    # produces (what compresses is the same), everything else against our write of the object layer. The
    # summary's post-model ratios are the same numbers as the table's.
    table = []
    for name, seconds in med.items():
        case = next((c for c in cases if name.endswith(f"({c})") and not name.startswith("write")), None)
        base = f"write ({case})" if case else "ours write"
        table.append({"step": name, "seconds": seconds, "ratio": seconds / med[base], "base": base})
    # oiiotool's --runstats counts in milliseconds: a tiny frame can read as 0, and a ratio to 0 means nothing
    write_ratio = med["ours write"] / med["oiiotool write"] if med["oiiotool write"] > 0 else None
    read_ratio = med["ours read"] / med["oiiotool read"] if med["oiiotool read"] > 0 else None
    post = {case: med[f"post-model step ({case})"] / med[f"write ({case})"] for case in cases}
    result = {"size": f"{W}x{H}", "median_seconds": med, "runs": rows, "table": table, "write_ratio": write_ratio,
              "read_ratio": read_ratio, "post_model_ratio": post, "repeat": args.repeat, "cpus": os.cpu_count(),
              "load_average": round(load, 1)}
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return 0


def _ratio_text(ratio) -> str:
    return "n/a (oiiotool's time rounds to 0 at this size)" if ratio is None else f"**{ratio:.2f}x**"


def markdown(result: dict) -> str:
    """The table and the targets (printed by main, and the docs' block: scripts/docs_numbers.py)."""
    rows = [f"One {result.get('size', '4096x2160')} RGBA half frame, ZIP; median of {result['repeat']}; "
            f"{result['cpus']} CPUs, load average {result['load_average']} at the start of the run.", "",
            "| step | seconds | x its base | base |", "|---|---|---|---|"]
    for row in result["table"]:
        rows.append(f"| {row['step']} | {row['seconds']:.3f} | {row['ratio']:.2f} | {row['base']} |")
    write, post = result["write_ratio"], result["post_model_ratio"]
    write_met = "" if write is None else f" ({'met' if write <= 1.3 else 'NOT met'})"
    rows += ["", "| target (issue 2) | result |", "|---|---|",
             f"| our write within 1.3x of oiiotool's | {_ratio_text(write)}{write_met} |",
             "| post-model step under 3x the plain write of the same layer | "
             + ", ".join(f"**{ratio:.2f}x** {case}" for case, ratio in post.items())
             + f" ({'met' if all(r < 3 for r in post.values()) else 'NOT met'}) |",
             f"| (read, no target) | {_ratio_text(result['read_ratio'])} oiiotool's |"]
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
