"""The handlers of `vera-render model-info` and `convert` (declared in vera.cli.model_cmds): they build the
network, so the CLI imports this module only when one of them runs (vera.cli.later)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from vera.cli.model_cmds import DTYPES
from vera.errors import BadInput
from vera.files import refuse_overwrite
from vera.model.checkpoint import convert_wan, save_vera
from vera.model.configs import STREAMS, get_config
from vera.model.dit import build_on_meta, count_parameters, stream_parameter_count


def model_info(name: str) -> dict:
    """Parameter counts of a named configuration, computed on the meta device."""
    cfg = get_config(name)
    model = build_on_meta(cfg)
    per_stream = {stream: stream_parameter_count(model, stream) for stream in STREAMS}
    # The conditioning adds only patch-embedding input channels (source latents + packed mask).
    conditioning = cfg.dim * (cfg.in_dim - cfg.z_dim) * math.prod(cfg.patch_size)
    total = count_parameters(model)
    return {
        "config": name,
        "streams": per_stream,
        "per_stream": per_stream[STREAMS[0]],
        "wan_per_stream": per_stream[STREAMS[0]] - conditioning,
        "conditioning_per_stream": conditioning,
        "total": total,
        "bf16_gib": round(total * 2 / 2**30, 2),
        "values": cfg.to_dict(),
    }


def print_model_info(args) -> int:
    info = model_info(args.config)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['config']}: {info['total']:,} parameters ({info['total'] / 1e9:.2f}B, "
          f"{info['bf16_gib']} GiB in bf16)")
    for stream, count in info["streams"].items():
        print(f"  {stream:<10} {count:,} = Wan2.1 {info['wan_per_stream']:,} + conditioning "
              f"{info['conditioning_per_stream']:,}")
    values = info["values"]
    print(f"  per stream: dim {values['dim']}, ffn {values['ffn_dim']}, heads {values['num_heads']}, "
          f"layers {values['num_layers']}, z_dim {values['z_dim']}, mask channels {values['mask_channels']}, "
          f"text_dim {values['text_dim']}")
    return 0


def convert(args) -> int:
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise BadInput(f"{out}: the output must be a .safetensors file")
    source = Path(args.from_wan)
    sources = sorted(source.rglob("*")) if source.is_dir() else [source]
    refuse_overwrite([(str(p), None) for p in sources if p.is_file()], [out, out.with_suffix(".json")])
    cfg = get_config(args.config) if args.config else None
    model = convert_wan(args.from_wan, cfg)
    if DTYPES[args.dtype]:
        model = model.to(getattr(torch, DTYPES[args.dtype]))
    save_vera(model, out, extra_metadata={"converted_from": str(Path(args.from_wan).name)})
    info_total = sum(p.numel() for p in model.parameters())
    print(f"wrote {out} ({info_total:,} parameters, 3 streams) and {out.with_suffix('.json')}")
    return 0
