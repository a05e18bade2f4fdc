"""VAE decode untiled vs tiled: the Wan2.1 VAE architecture (diffusers `AutoencoderKLWan`, default config, seeded
random weights), float32 on the CPU, diffusers' tiles (256 px, stride 192). Tiled is the peer: time and peak
memory as ratios to untiled, and how far the tiled frames are from the untiled ones.

    python benchmarks/vae_tiling_bench.py [--size 512x320] [--latent-frames 2] [--json out.json]

Each decode runs in its own process (peak memory = growth of the process's maximum resident set during the
decode; the model is built first). Random weights decode to random-looking frames, so the differences say how
much tiling changes the numbers, not how visible a seam is on a real picture. Values are in the VAE's [-1, 1]
range; "10-bit codes" counts pixels that differ by more than one 10-bit code (2 / 1023 in that range).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def child(mode: str, width: int, height: int, latent_frames: int, out: str) -> None:
    import torch
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    vae = AutoencoderKLWan().eval()
    vae.enable_tiling() if mode == "tiled" else vae.disable_tiling()
    z = torch.randn(1, 16, latent_frames, height // 8, width // 8, generator=torch.Generator().manual_seed(1))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with torch.no_grad():
        video = vae.decode(z).sample
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    np.save(out, video.numpy())
    print(json.dumps({"seconds": seconds, "peak_gib": peak_kib / 2**20}))


def run(mode: str, args, folder: str) -> tuple[dict, np.ndarray]:
    out = os.path.join(folder, f"{mode}.npy")
    result = subprocess.run([sys.executable, __file__, "--child", mode, "--size", args.size,
                             "--latent-frames", str(args.latent_frames), "--out", out],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1]), np.load(out)


def markdown(report: dict) -> str:
    """What main prints and the docs show (scripts/docs_numbers.py)."""
    u, t = report["untiled"], report["tiled"]
    return (f"VAE decode {report['size']}, {report['video_frames']} frames, float32 CPU, each decode in its own "
            f"process: untiled peak memory +{u['peak_gib']:.2f} GiB, tiled +{t['peak_gib']:.2f} GiB "
            f"(**{report['memory_ratio_tiled_over_untiled']:.2f}x**); time tiled / untiled "
            f"{report['time_ratio_tiled_over_untiled']:.2f}x ({t['seconds']:.0f} s vs {u['seconds']:.0f} s); tiled "
            f"minus untiled: max {report['max_abs_difference']:.2f}, mean {report['mean_abs_difference']:.3f} in "
            f"[-1, 1], {100 * report['share_beyond_one_10bit_code']:.0f} % of the values differ by more than one "
            "10-bit code.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512x320", help="frame WIDTHxHEIGHT (multiples of 8)")
    parser.add_argument("--latent-frames", type=int, default=2, help="latent frames (video frames = 4n-3)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", choices=("untiled", "tiled"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        width, height = map(int, args.size.split("x"))
        child(args.child, width, height, args.latent_frames, args.out)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        untiled, a = run("untiled", args, folder)
        tiled, b = run("tiled", args, folder)
    diff = np.abs(a - b)
    report = {
        "size": args.size, "video_frames": int(a.shape[2]), "untiled": untiled, "tiled": tiled,
        "time_ratio_tiled_over_untiled": tiled["seconds"] / untiled["seconds"],
        "memory_ratio_tiled_over_untiled": tiled["peak_gib"] / untiled["peak_gib"],
        "max_abs_difference": float(diff.max()), "mean_abs_difference": float(diff.mean()),
        "share_beyond_one_10bit_code": float((diff > 2 / 1023).mean()),
    }
    print(markdown(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
