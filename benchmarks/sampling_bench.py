"""Sampling benchmark: the speed presets (vera.presets) against the full recipe, on the embedded demo bundle.

    python benchmarks/sampling_bench.py                  # 16 held-out clips, both recipes, + torch.compile
    python benchmarks/sampling_bench.py --clips 4 --json out.json

Held-out clips: `vera-train synth` with seed 3000 (training used 0 and 1, the demo's evaluation 1000), 128x96,
5 frames, half object additions and half background changes. Each clip is rendered through the real pipeline
(vera.train.evaluate.evaluate_shot, the code `vera-train eval` runs) with each preset in turn (interleaved, so
the machine's load hits every preset alike) under two recipes:

- paper-like: 50 steps with classifier-free guidance 5 (Wan2.1 T2V's steps and guidance), the bundle's sampler;
- demo default: the bundle's own recipe (12 Euler steps, no guidance).

Per preset: joint-layer evaluations per clip (full and skipped, counted by vera.stepcache's hooks), the transformer
FLOPs that many evaluations cost vera-1.3b at 81 frames of 832x480 (analytic, benchmarks/model_bench.py), wall
time as a ratio to `quality` of the same recipe in the same run, matte IoU / colour / untouched pixels (as
`vera-train eval`), the PSNR of its layers (premultiplied RGBA, all frames) against `quality`'s, and the
matte leak: the share of the frames where its matte is > 1/255 and `quality`'s is not.

`turbo` renders with the bundle's distilled student (`vera-train distill`) on the student's own recipe, so its
row is the same under both recipes; it is compared with each recipe's `quality`. `--presets` leaves presets
out (a bundle without a student: `--presets quality,balanced,preview`).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "core"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from vera.plan import VAE_STRIDE, forward_flops  # noqa: E402  (one FLOP model: the planner's)

from vera.model.configs import CONFIGS  # noqa: E402
from vera.presets import PRESET_TABLE, PRESETS  # noqa: E402
from vera.stepcache import compile_blocks, layer_count  # noqa: E402

DATA_SEED = 3000
RECIPES = {"paper-like": {"steps": 50, "guidance": 5.0}, "demo default": {"steps": None, "guidance": None}}


def flops_per_evaluation(name: str = "vera-1.3b", frames: int = 81, size=(832, 480)) -> tuple[float, float]:
    """(FLOPs of one joint layer for one batch row, FLOPs of embedding + heads per model call row)."""
    cfg = CONFIGS[name]
    latent = ((frames - 1) // VAE_STRIDE[0] + 1, size[1] // VAE_STRIDE[1], size[0] // VAE_STRIDE[2])
    tokens = math.prod(s // p for s, p in zip(latent, cfg.patch_size))
    flops = forward_flops(cfg, tokens)
    return (flops["total"] - flops["embed_head"]) / cfg.num_layers, flops["embed_head"]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def leak(matte: np.ndarray, reference: np.ndarray, threshold: float = 1.0 / 255.0) -> float:
    """The fraction of the frames where this matte shows something (> 1/255) and the reference's does not: a
    cache or student that ignored the mask would paint there (cf. cache-dit issue 401)."""
    return float(np.mean((matte > threshold) & (reference <= threshold)))


def run_recipe(bundles: dict, clips: list[Path], recipe: dict, seed: int) -> dict:
    """bundles: preset -> the loaded bundle it renders with (turbo's is the student)."""
    from vera.train.evaluate import evaluate_shot, summarise

    layers_per_forward = bundles["quality"].config.num_layers
    per_layer, per_call = flops_per_evaluation()
    rows = {p: {"shots": [], "full": [], "skipped": [], "seconds": [], "psnr": [], "leak": []} for p in bundles}
    for clip in clips:
        reference = None
        for preset, bundle in bundles.items():
            count = layer_count(bundle.transformer)
            before = count.as_dict()
            start = time.perf_counter()
            shot = evaluate_shot(bundle, clip, seed=seed, steps=recipe["steps"], guidance=recipe["guidance"],
                                 speed=preset, keep_layers=True)
            rows[preset]["seconds"].append(time.perf_counter() - start)
            rows[preset]["full"].append(count.full - before["full"])
            rows[preset]["skipped"].append(count.skipped - before["skipped"])
            layers = shot.pop("layers")
            stacked = np.stack([layers[f][0] for f in sorted(layers)])
            mattes = np.stack([layers[f][1] for f in sorted(layers)])
            if reference is None:
                reference, reference_mattes = stacked, mattes
            rows[preset]["psnr"].append(psnr(stacked, reference))
            rows[preset]["leak"].append(leak(mattes, reference_mattes))
            rows[preset]["shots"].append(shot)
    result = {}
    full_seconds = sum(rows["quality"]["seconds"])
    quality_flops = None
    for preset, r in rows.items():
        full, skipped = statistics.mean(r["full"]), statistics.mean(r["skipped"])
        calls = (full + skipped) / layers_per_forward
        tflops = (full / layers_per_forward * per_layer * CONFIGS["vera-1.3b"].num_layers + calls * per_call) / 1e12
        quality_flops = quality_flops or tflops
        summary = summarise(r["shots"])
        finite = [p for p in r["psnr"] if math.isfinite(p)]
        result[preset] = {
            "layer_evaluations_full": full, "layer_evaluations_skipped": skipped,
            "tflops_vera_1.3b_81f": round(tflops, 1), "flops_reduction": round(quality_flops / tflops, 2),
            "wall_ratio": round(sum(r["seconds"]) / full_seconds, 3), "seconds": round(sum(r["seconds"]), 1),
            "object_iou": summary.get("object_addition_iou"), "background_iou": summary.get("background_change_iou"),
            "colour_match": summary.get("colour_match"), "untouched_exact": summary["untouched_exact_all"],
            "psnr_vs_quality_mean": round(statistics.mean(finite), 2) if finite else math.inf,
            "psnr_vs_quality_min": round(min(r["psnr"]), 2),
            "leak_mean": round(statistics.mean(r["leak"]), 5), "leak_max": round(max(r["leak"]), 5),
        }
    return result


# Variants of `balanced` tried at the paper-like recipe (--ablation): the evidence for its settings.
ABLATION = {
    "cache K=2, no schedule": {"cache_max_skip": 2, "guidance_until": 1.0},
    "cache K=3, no schedule (balanced)": {"cache_max_skip": 3, "guidance_until": 1.0},
    "cache K=4, no schedule": {"cache_max_skip": 4, "guidance_until": 1.0},
    "no cache, guidance first 50%": {"cache_threshold": 0.0, "guidance_until": 0.5},
    "no cache, guidance first 75%": {"cache_threshold": 0.0, "guidance_until": 0.75},
    "cache K=4, guidance first 90%": {"cache_max_skip": 4, "guidance_until": 0.9},
}


def run_ablation(bundle, clips: list[Path], seed: int) -> dict:
    """PSNR against quality and full evaluations of each ABLATION variant of `balanced`, per clip."""
    import dataclasses

    from vera.train.evaluate import evaluate_shot

    recipe, base = RECIPES["paper-like"], PRESET_TABLE["balanced"]
    count = layer_count(bundle.transformer)
    result = {name: {"psnr": [], "full": []} for name in ABLATION}
    try:
        for clip in clips:
            render = lambda preset: evaluate_shot(bundle, clip, seed=seed, steps=recipe["steps"],  # noqa: E731
                                                  guidance=recipe["guidance"], speed=preset, keep_layers=True)
            reference = render("quality")["layers"]
            for name, change in ABLATION.items():
                PRESET_TABLE["balanced"] = dataclasses.replace(base, **change)
                before = count.full
                layers = render("balanced")["layers"]
                result[name]["full"].append(count.full - before)
                result[name]["psnr"].append(round(psnr(np.stack([layers[f][0] for f in sorted(layers)]),
                                                       np.stack([reference[f][0] for f in sorted(reference)])), 2))
    finally:
        PRESET_TABLE["balanced"] = base
    for name, r in result.items():
        print(f"  {name:36s} full/clip {statistics.mean(r['full']):6.1f}  PSNR per clip {r['psnr']}")
    return result


def measure_compile(bundle, repeats: int = 10) -> dict:
    """Eager vs regionally compiled joint layers on one demo-sized forward: compile time and step time."""
    from torch._dynamo.utils import counters

    model, cfg = bundle.transformer, bundle.config
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, cfg.in_dim, 5, 12, 16, generator=g)  # a CFG batch of the demo's window
    t = torch.tensor([500.0, 500.0])
    context = torch.randn(2, cfg.text_len, cfg.text_dim, generator=g)

    def forward():
        with torch.no_grad():
            return model(x, t, context)

    def median_time():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            forward()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    forward()
    eager_out, eager = forward(), median_time()
    counters.clear()
    compile_blocks(model, report=lambda message: None)
    start = time.perf_counter()
    compiled_out = forward()
    first = time.perf_counter() - start
    compiled = median_time()
    return {"eager_forward_s": round(eager, 4), "compiled_forward_s": round(compiled, 4),
            "speedup": round(eager / compiled, 3), "first_forward_with_compile_s": round(first, 1),
            "graphs_compiled": int(counters["stats"]["unique_graphs"]), "depths": cfg.num_layers,
            "max_abs_difference": float((eager_out - compiled_out).abs().max())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16, help="held-out clips (half of each task)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--recipes", default="paper-like,demo default", help="comma-separated recipe names")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    parser.add_argument("--ablation", type=int, default=0, metavar="N",
                        help="only run the ABLATION variants of balanced on the first N clips (paper-like recipe)")
    parser.add_argument("--json", help="write every number here")
    parser.add_argument("--bundle", default="demo", help='bundle folder or "demo" (default)')
    parser.add_argument("--presets", default=",".join(PRESETS),
                        help="comma-separated presets (quality first; turbo needs a bundle with a student)")
    args = parser.parse_args(argv)

    from vera.model.bundle import load_bundle
    from vera.train.synth import generate

    report = {"clips": args.clips, "data_seed": DATA_SEED, "threads": torch.get_num_threads(), "recipes": {}}
    with tempfile.TemporaryDirectory(prefix="vera-sampling-bench-") as tmp:
        clips = generate(Path(tmp) / "heldout", args.clips, seed=DATA_SEED, size=(128, 96), frames=5)
        bundle = load_bundle(args.bundle, device="cpu")
        presets = [p for p in args.presets.split(",") if p]
        if presets[0] != "quality":
            parser.error("--presets: quality comes first (the others are measured against it)")
        bundles = {p: load_bundle(args.bundle, device="cpu", student=True) if p == "turbo" else bundle
                   for p in presets}
        if args.ablation:
            print(f"ablation of balanced, paper-like recipe, {args.ablation} clips:")
            report["ablation"] = run_ablation(bundle, clips[:args.ablation], args.seed)
            args.recipes, args.no_compile = "", True
        for name in filter(None, args.recipes.split(",")):
            report["recipes"][name] = {"recipe": RECIPES[name],
                                       "presets": run_recipe(bundles, clips, RECIPES[name], args.seed)}
            print_recipe(name, report["recipes"][name])
        if not args.no_compile:
            report["compile"] = measure_compile(load_bundle(args.bundle, device="cpu"))
            c = report["compile"]
            print(f"\ntorch.compile (regional, {c['depths']} depths -> {c['graphs_compiled']} graph(s)): first "
                  f"forward {c['first_forward_with_compile_s']} s; forward eager {c['eager_forward_s']} s, "
                  f"compiled {c['compiled_forward_s']} s ({c['speedup']}x); max |diff| {c['max_abs_difference']:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + markdown(report))
    return 0


def markdown(report: dict) -> str:
    """Every table of a run (printed by main; the docs' blocks: scripts/docs_numbers.py): the presets against
    `quality` with their targets, the ablation of `balanced`, the compiled forward."""
    parts = []
    if report.get("recipes"):
        parts.append(markdown_presets(report))
    if report.get("ablation"):
        parts.append(markdown_ablation(report))
    if report.get("compile"):
        parts.append(markdown_compile(report))
    return "\n\n".join(parts)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def markdown_presets(report: dict) -> str:
    lines = [f"{report['clips']} held-out clips (synth seed {report['data_seed']}), {report['threads']} torch "
             "thread(s):", "",
             "| recipe | preset | layer evaluations per clip (full / skipped) | TFLOPs (1.3b, 81 f) | fewer FLOPs | "
             "wall vs quality | object IoU | background IoU | colour | untouched | PSNR vs quality, mean / worst | "
             "leak, mean / worst |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for recipe, block in report["recipes"].items():
        for preset, r in block["presets"].items():
            psnr_text = "-" if preset == "quality" else f"{r['psnr_vs_quality_mean']} / {r['psnr_vs_quality_min']} dB"
            lines.append(f"| {recipe} | {preset} | {r['layer_evaluations_full']:g} / {r['layer_evaluations_skipped']:g} | "
                         f"{r['tflops_vera_1.3b_81f']:,.0f} | **{r['flops_reduction']:.2f}x** | {r['wall_ratio']:.2f} | "
                         f"{r['object_iou']} | {r['background_iou']} | {_pct(r['colour_match'])} | "
                         f"{'exact' if r['untouched_exact'] else 'CHANGED'} | {psnr_text} | "
                         f"{100 * r['leak_mean']:.3f}% / {100 * r['leak_max']:.3f}% |")
    lines += ["", *markdown_targets(report)]
    return "\n".join(lines)


def markdown_targets(report: dict) -> list[str]:
    """The targets of issue 12 (balanced, preview) and of turbo, for the presets this run measured."""
    met = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    rows = ["| target | result |", "|---|---|"]
    recipes = report["recipes"]
    untouched = all(r["untouched_exact"] for b in recipes.values() for r in b["presets"].values())
    renders = sum(len(b["presets"]) for b in recipes.values()) * report["clips"]
    for recipe, block in recipes.items():
        q, presets = block["presets"]["quality"], block["presets"]

        def iou_diff(preset):
            return ", ".join(f"{key.split('_')[0]} {presets[preset][key] - q[key]:+.3f}"
                             for key in ("object_iou", "background_iou") if q[key] is not None)
        if "balanced" in presets:
            b = presets["balanced"]
            within = all(abs(b[k] - q[k]) <= 0.02 for k in ("object_iou", "background_iou") if q[k] is not None)
            rows += [f"| {recipe}: balanced >= 2x fewer transformer FLOPs | **{b['flops_reduction']:.2f}x** "
                     f"({met(b['flops_reduction'] >= 2)}) |",
                     f"| {recipe}: balanced matte IoU within 0.02 of quality | {iou_diff('balanced')} ({met(within)}) |",
                     f"| {recipe}: balanced PSNR vs quality >= 35 dB (mean) | **{b['psnr_vs_quality_mean']} dB**, worst "
                     f"clip {b['psnr_vs_quality_min']} dB ({met(b['psnr_vs_quality_mean'] >= 35)}) |"]
        if "preview" in presets:
            v = presets["preview"]
            rows.append(f"| {recipe}: preview >= 4x fewer FLOPs | **{v['flops_reduction']:.2f}x** "
                        f"({met(v['flops_reduction'] >= 4)}) |")
        if "turbo" in presets:
            t = presets["turbo"]
            within = {k: t[k] - q[k] for k in ("object_iou", "background_iou") if q[k] is not None}
            rows += [f"| {recipe}: turbo >= 10x less transformer work | **{t['flops_reduction']:.2f}x** "
                     f"({met(t['flops_reduction'] >= 10)}) |",
                     f"| {recipe}: turbo matte IoU within 0.03 of quality | {iou_diff('turbo')} "
                     f"({met(all(abs(d) <= 0.03 for d in within.values()))}) |",
                     f"| {recipe}: turbo matte leak (alpha > 1/255 where quality's is not) | "
                     f"{100 * t['leak_mean']:.3f}% of the frame mean, {100 * t['leak_max']:.3f}% worst clip |"]
    rows.append(f"| untouched pixels exact in every render | {'exact' if untouched else 'CHANGED'} in all {renders} "
                f"renders ({met(untouched)}) |")
    return rows


def markdown_ablation(report: dict) -> str:
    lines = ["| variant of balanced (paper-like recipe) | full evaluations per clip | PSNR vs quality per clip (dB) |",
             "|---|---|---|"]
    for name, r in report["ablation"].items():
        lines.append(f"| {name} | {statistics.mean(r['full']):g} | {', '.join(f'{p:.1f}' for p in r['psnr'])} |")
    return "\n".join(lines)


def markdown_compile(report: dict) -> str:
    c = report["compile"]
    return (f"One forward of the demo model on a CFG batch (2 rows, 5x12x16 latent), median of 10: eager "
            f"{c['eager_forward_s']} s, compiled {c['compiled_forward_s']} s (**{c['speedup']}x**); first forward "
            f"with the compile {c['first_forward_with_compile_s']} s; {c['depths']} depths -> {c['graphs_compiled']} "
            f"graph(s); largest difference from eager {c['max_abs_difference']:.1e}.")


def print_recipe(name: str, block: dict) -> None:
    print(f"\n{name}: {block['recipe']}")
    print("  preset    full/clip skipped/clip  TFLOPs(1.3b,81f)  fewer  wall  obj IoU  bg IoU  colour  "
          "untouched  PSNR mean/min  leak mean/max")
    for preset, r in block["presets"].items():
        print(f"  {preset:9s} {r['layer_evaluations_full']:9.1f} {r['layer_evaluations_skipped']:12.1f} "
              f"{r['tflops_vera_1.3b_81f']:17.1f} {r['flops_reduction']:5.2f}x {r['wall_ratio']:5.2f} "
              f"{r['object_iou']!s:>8} {r['background_iou']!s:>7} {r['colour_match']!s:>7} "
              f"{'exact' if r['untouched_exact'] else 'CHANGED':>10}  {r['psnr_vs_quality_mean']}/"
              f"{r['psnr_vs_quality_min']}  {100 * r['leak_mean']:.3f}%/{100 * r['leak_max']:.3f}%")
    if "turbo" in block["presets"]:
        q, t = block["presets"]["quality"], block["presets"]["turbo"]
        diff = lambda key: None if q[key] is None or t[key] is None else round(t[key] - q[key], 3)  # noqa: E731
        print(f"  turbo against quality: {t['flops_reduction']}x fewer FLOPs (target >= 10x); object IoU "
              f"{diff('object_iou'):+}, background IoU {diff('background_iou'):+} (targets within 0.03); matte leak "
              f"{100 * t['leak_mean']:.3f}% of the frame mean, {100 * t['leak_max']:.3f}% worst clip")


if __name__ == "__main__":
    sys.exit(main())
