"""The bundle check (vera.model.bundle_check, what `validate` and `load_bundle` run) on a vera-14b-size bundle
against the embedded demo's, in the same run: it reads headers, never tensor data.

    python benchmarks/bundle_check_bench.py             # 9 rounds, Markdown table
    python benchmarks/bundle_check_bench.py --rounds 21 --json FILE

The 14B bundle is written with every header a real one has and sparse tensor data (the file is truncated to
its full length, so it has its real size and almost no blocks on disk):

- transformer.safetensors: the vera-14b VeraMoT built on the meta device (three Wan2.1-14B streams, bf16);
- text_encoder/: umT5-xxl (Wan2.1's text encoder: d_model 4096, 24 layers, 64 heads, d_ff 10240, 256384
  tokens) built on the meta device by transformers, bf16, and a tokenizer.json with one entry per token;
- vae/: diffusers' AutoencoderKLWan with its default (Wan2.1) config, built on the meta device, float32;
- speed.json: the demo's.

Each round checks both bundles, in turn; the table gives the median time, the bytes the check read
(`rchar` of /proc/self/io, every byte read() returned), and the bundle's size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

import torch  # noqa: E402

from vera.model.bundle_manifest import DEFAULTS, DEMO_PATH, read_manifest  # noqa: E402
from vera.model.bundle_check import bundle_problems  # noqa: E402
from vera.model.configs import get_config  # noqa: E402
from vera.model.dit import build_on_meta, file_state_dict  # noqa: E402

# umT5-xxl as Wan2.1 uses it (google/umt5-xxl's config.json)
UMT5_XXL = {"vocab_size": 256384, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
            "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
            "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
SAFETENSORS_DTYPES = {torch.bfloat16: ("BF16", 2), torch.float32: ("F32", 4)}


def write_sparse_safetensors(path: Path, shapes: dict, dtype: torch.dtype, metadata: dict | None = None) -> int:
    """A safetensors file with this header and zero-filled sparse data (no blocks written); its size."""
    name, size = SAFETENSORS_DTYPES[dtype]
    header, offset = {"__metadata__": metadata or {"format": "pt"}}, 0
    for key, shape in shapes.items():
        nbytes = size
        for n in shape:
            nbytes *= n
        header[key] = {"dtype": name, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
    os.truncate(path, 8 + len(raw) + offset)
    return 8 + len(raw) + offset


def make_14b_bundle(folder: Path) -> int:
    """The vera-14b-size bundle (see the module docstring); returns its apparent size in bytes."""
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = get_config("vera-14b")
    total = 0
    model = build_on_meta(cfg)
    total += write_sparse_safetensors(folder / "transformer.safetensors",
                                      {k: tuple(v.shape) for k, v in file_state_dict(model).items()}, torch.bfloat16,
                                      {"format": "vera-mot-1", "vera_config": json.dumps(cfg.to_dict())})
    with torch.device("meta"):
        encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL))
        vae = AutoencoderKLWan()
    text = folder / "text_encoder"
    total += write_sparse_safetensors(text / "model.safetensors",
                                      {k: tuple(v.shape) for k, v in encoder.state_dict().items()
                                       if k != "encoder.embed_tokens.weight"}, torch.bfloat16)
    (text / "config.json").write_text(json.dumps({**encoder.config.to_dict(), "architectures": ["UMT5EncoderModel"]}))
    vocab = [[f"\u2581token{i}", -float(i % 97) / 7] for i in range(UMT5_XXL["vocab_size"])]
    (text / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "Unigram", "vocab": vocab}}))
    (text / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512, "pad_token": "<pad>"}))
    total += write_sparse_safetensors(folder / "vae" / "diffusion_pytorch_model.safetensors",
                                      {k: tuple(v.shape) for k, v in vae.state_dict().items()}, torch.float32)
    (folder / "vae" / "config.json").write_text(json.dumps(dict(vae.config)))
    shutil.copy(DEMO_PATH / "speed.json", folder / "speed.json")
    manifest = {"name": "vera-14b-headers", "config": cfg.to_dict(), "transformer": "transformer.safetensors",
                "vae": {"type": "wan", "path": "vae"}, "text_encoder": "text_encoder",
                "defaults": {**DEFAULTS, "resolution": [1280, 720]}}
    (folder / "bundle.json").write_text(json.dumps(manifest, indent=1))
    return total + sum(p.stat().st_size for p in folder.rglob("*.json"))


def bytes_read() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def check_once(folder: Path) -> tuple[float, int]:
    """(seconds, bytes read) of one check of the bundle: bundle.json read and checked, then every file."""
    before, start = bytes_read(), time.perf_counter()
    problems = bundle_problems(folder, read_manifest(folder))
    seconds, read = time.perf_counter() - start, bytes_read() - before
    if problems:
        raise SystemExit(f"the bundle is not valid: {problems}")
    return seconds, read


def disk_bytes(folder: Path) -> tuple[int, int]:
    """(apparent size, bytes of blocks on disk) of every file under `folder`."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), sum(p.stat().st_blocks * 512 for p in files)


def markdown(result: dict) -> str:
    """The table main prints and the docs show (scripts/docs_numbers.py)."""
    rows = result["rows"]
    lines = [f"Median of {result['rounds']} rounds (`vera.model.bundle_check.bundle_problems`); "
             f"{result.get('cpus', '?')} CPUs, load average {result.get('load_average_at_start', '?')} at the start:",
             "", "| bundle | check (ms) | bytes read by the check | bundle size | of it on disk |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['bundle']} | {r['median_ms']} | {r['bytes_read']:,} | {r['bundle_bytes']:,} | "
                     f"{r['bundle_bytes_on_disk']:,} |")
    lines += ["", f"The 14B check takes **{result['time_ratio_14b_over_demo']:.2f}x** the demo's and reads "
                  f"{rows[1]['bytes_read'] / rows[1]['bundle_bytes']:.2e} of its bundle's bytes: its headers."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--json", help="also write the numbers as JSON here")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="vera-bundle-check-"))
    try:
        make_14b_bundle(root / "vera-14b")
        bundles = {"demo": DEMO_PATH, "vera-14b": root / "vera-14b"}
        for folder in bundles.values():
            check_once(folder)  # warm: the page cache and imports, for both alike
        times = {name: [] for name in bundles}
        read = {}
        for _ in range(args.rounds):
            for name, folder in bundles.items():
                seconds, read[name] = check_once(folder)
                times[name].append(seconds)
        rows = []
        for name, folder in bundles.items():
            apparent, on_disk = disk_bytes(folder)
            rows.append({"bundle": name, "median_ms": round(1000 * statistics.median(times[name]), 2),
                         "bytes_read": read[name], "bundle_bytes": apparent, "bundle_bytes_on_disk": on_disk})
        ratio = rows[1]["median_ms"] / rows[0]["median_ms"]
        result = {"rounds": args.rounds, "rows": rows, "time_ratio_14b_over_demo": round(ratio, 2),
                  "cpus": os.cpu_count(), "load_average_at_start": round(load, 1)}
        print(markdown(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
