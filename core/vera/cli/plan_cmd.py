"""`vera-render plan` and `vera-train plan`: the strategy the planner (vera.plan) picks and the memory per GPU.

Both print the same planner's answer; a run that cannot fit is refused with exit 2 and the reason (and for
`--json` the plan is printed first, with `"fits": false`, for tools).
"""

from __future__ import annotations

import json

from vera.cli import frame_size
from vera.errors import BadInput
from vera.model.configs import CONFIGS, get_config
from vera.plan import DEFAULT_LORA_RANK, DEFAULT_TFLOPS, Components, bundle_components, plan

LABELS = {"weights": "weights", "gradients": "gradients", "optimizer": "optimizer state",
          "activations": "activations", "vae": "VAE", "text_encoder": "text encoder", "overhead": "overhead"}
COMMON = {"vae": "float32 weights + decode working set", "overhead": "CUDA context, allocator slack (allowance)"}
WHAT = {  # what each row counts, per mode (vera.plan)
    "inference": {**COMMON, "weights": "bf16 transformer: all, an FSDP shard + 2 blocks, or 2 streamed blocks",
                  "activations": "one joint block's peak, both CFG branches unless on 2 groups",
                  "text_encoder": "umT5 weights (bf16) while prompts encode"},
    "full": {**COMMON, "weights": "float32 master shard + 2 gathered bf16 blocks", "gradients": "float32, sharded",
             "optimizer": "AdamW's 2 float32 moments, sharded",
             "activations": "checkpointed residuals + 1 recomputed block"},
    "lora": {**COMMON, "weights": "frozen bf16 (shard) + float32 adapters", "gradients": "adapters only",
             "optimizer": "AdamW moments of the adapters", "activations": "checkpointed residuals + 1 recomputed block"},
}


def add_arguments(p, training: bool) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="NAME", help=f"a named configuration ({', '.join(CONFIGS)}); "
                                                         "assumes Wan2.1's umT5-xxl encoder and VAE")
    source.add_argument("--bundle", metavar="DIR", help="a model bundle (its config, encoder and VAE are counted)")
    p.add_argument("--frames", type=int, help="frames per clip, 4k+1 (default: "
                   + ("49" if training else "the bundle's window, or 81") + ")")
    p.add_argument("--size", type=frame_size, metavar="WxH", help="frame size (default: the bundle's, or 832x480)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs available (default 1)")
    p.add_argument("--gpu-memory", type=float, default=80.0, metavar="GiB", help="memory per GPU (default 80)")
    p.add_argument("--tflops", type=float, default=DEFAULT_TFLOPS,
                   help=f"assumed sustained TFLOP/s per GPU for the time estimate (default {DEFAULT_TFLOPS:g})")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def register(subparsers) -> None:
    p = subparsers.add_parser("plan", help="the strategy `--memory auto` picks and the memory per GPU of a render",
                              description="Plan a render on GPUs: the cheapest strategy that fits (FSDP sharding, "
                                          "sequence parallel, offload tiers), memory per GPU, FLOPs and time "
                                          "per step. Exit 2 when nothing fits.")
    add_arguments(p, training=False)
    p.add_argument("--steps", type=int, help="sampling steps (default: the bundle's, or 50)")
    p.add_argument("--guidance", type=float, help="CFG scale; > 1 runs two branches (default: the bundle's, or 5)")
    p.set_defaults(func=run_inference_plan)


def register_training(subparsers) -> None:
    p = subparsers.add_parser("plan", help="memory per GPU of a training run, refused when it cannot fit",
                              description="Plan a training run: weights, gradients, optimizer state and "
                                          "activations per GPU with FSDP2 and activation checkpointing; exit 2 "
                                          "with the GPU count that would fit when it does not.")
    add_arguments(p, training=True)
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--full", dest="lora", action="store_false", help="train every weight (default)")
    kind.add_argument("--lora", dest="lora", action="store_true", help="train LoRA adapters on frozen weights")
    p.add_argument("--lora-rank", type=int, default=DEFAULT_LORA_RANK, help=f"default {DEFAULT_LORA_RANK}")
    p.set_defaults(func=run_training_plan, lora=False)


def _workload(args, training: bool):
    """(config, components, frames, width, height, defaults) from --config or --bundle and the options."""
    if args.bundle:
        cfg, components, defaults = bundle_components(args.bundle)
    else:
        cfg, components, defaults = get_config(args.config), Components(), {}
    frames = args.frames or (49 if training else int(defaults.get("window", 81)))
    width, height = args.size or tuple(defaults.get("resolution", (832, 480)))
    return cfg, components, frames, int(width), int(height), defaults


def run_inference_plan(args) -> int:
    cfg, components, frames, width, height, defaults = _workload(args, training=False)
    guidance = args.guidance if args.guidance is not None else float(defaults.get("guidance", 5.0))
    steps = args.steps or int(defaults.get("steps", 50))
    result = plan(cfg, frames, width, height, args.gpus, args.gpu_memory, "inference", guidance=guidance > 1.0,
                  steps=steps, tflops=args.tflops, components=components)
    return _report(result, args)


def run_training_plan(args) -> int:
    cfg, components, frames, width, height, _ = _workload(args, training=True)
    result = plan(cfg, frames, width, height, args.gpus, args.gpu_memory, "lora" if args.lora else "full",
                  lora_rank=args.lora_rank, tflops=args.tflops, components=components)
    return _report(result, args)


def _report(result, args) -> int:
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_plan(result))
    if not result.fits:
        raise BadInput(result.reason)
    return 0


def format_plan(result) -> str:
    """The plan as a short table for people."""
    gpus = f"{result.gpus} x {result.gpu_memory_gib:g} GiB GPU{'s' if result.gpus > 1 else ''}"
    work = {"inference": "render", "lora": "LoRA training", "full": "full training"}[result.mode]
    lines = [f"{work}, {result.frames} frames at {result.width}x{result.height}: "
             f"{result.tokens_per_stream:,} tokens per stream ({3 * result.tokens_per_stream:,} joint), on {gpus}"]
    if result.fits:
        lines.append(f"strategy: {result.strategy.describe()}")
    else:
        lines.append("does not fit; the leanest strategy would need:")
    lines.append("per GPU (GiB):")
    for key, value in result.memory.items():
        if key != "peak":
            note = WHAT[result.mode].get(key, "")
            lines.append(f"  {LABELS[key]:<16}{value:8.2f}  {note}")
    turns = "" if result.mode != "inference" else (
        "; text encoder and denoising take turns" if result.strategy and result.strategy.memory == "resident"
        else "; text encoder, denoising and VAE take turns")
    lines.append(f"  {'peak':<16}{result.memory['peak']:8.2f}  of {result.gpu_memory_gib:g}{turns}")
    if result.host_memory_gib:
        lines.append(f"  CPU memory for the offloaded parts: {result.host_memory_gib:.1f} GiB")
    if result.mode == "inference":
        total = result.seconds_per_step * result.steps
        lines.append(f"FLOPs per step: {result.flops_per_step / 1e12:,.1f} TFLOPs (both guidance branches when "
                     f"CFG is on); {result.seconds_per_step:.2f} s per step, {total / 60:.1f} min for "
                     f"{result.steps} steps")
    else:
        lines.append(f"FLOPs per sample: {result.flops_per_step / 1e12:,.1f} TFLOPs (forward, recompute, "
                     f"backward); {result.seconds_per_step:.2f} s per optimizer step (one sample per "
                     f"data-parallel rank)")
    lines.extend(f"note: {note}" for note in result.notes)
    return "\n".join(lines)
