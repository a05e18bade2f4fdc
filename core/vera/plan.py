"""How a render or a training run is laid out on the hardware: the `Strategy` that the planner chooses and that
vera.parallel / the pipeline apply, and the planner itself.

The planner is an analytic model (no weights are loaded, nothing is allocated): parameter counts from the config
(checked exactly against the built module), FLOPs of one forward, and the bytes live on one GPU at its peak.
`plan(cfg, frames, width, height, gpus, gpu_memory_gib, mode)` walks the strategies from cheapest to leanest and
returns the first that fits; `vera-render plan`, `vera-train plan` and `--memory auto` all use it.

What the memory model counts, per GPU (docs/gpus.md has the why of each term):
  weights      the transformer's bytes on the GPU: all of them, a 1/N FSDP shard plus two gathered joint blocks
               (the running one and the prefetched next), or (memory "layers") the embedders/heads plus two
               streamed blocks;
  activations  the peak of one joint block's forward (inference: no autograd; batch 2 for classifier-free
               guidance unless the branches run on two device groups), tokens split by the sequence-parallel
               degree; training: the float32 residual saved at every block (activation checkpointing per joint
               block) plus one block recomputed with autograd and its gradients;
  vae          Wan VAE weights (float32) plus its decode working set (one causal chunk of 4 frames);
  text encoder umT5-xxl weights (bf16) while prompts are encoded, then unloaded (training reads the prompt cache);
  optimizer    (training) float32 master weights, gradients and AdamW's two moments, sharded by FSDP;
  overhead     the CUDA context and allocator slack, a fixed allowance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safetensors import safe_open

from vera.errors import BadInput
from vera.model.bundle_manifest import bundle_folder, read_manifest
from vera.model.configs import CONFIGS, STREAMS, VeraConfig

# Where the weights live on one device while the model runs.
MEMORY_MODES = ("resident", "parts", "layers")
MEMORY_CHOICES = ("auto", *MEMORY_MODES)  # `--memory`: auto asks the planner
#   resident: everything on the GPU for the whole render;
#   parts:    text encoder and VAE on the GPU only while they run (the transformer resident);
#   layers:   also the transformer's joint blocks streamed from CPU memory, with prefetch.


@dataclass(frozen=True)
class Strategy:
    devices: int = 1              # worker processes (one GPU each)
    shard_weights: bool = False   # FSDP2: every joint block and the root sharded across the devices
    sequence_parallel: int = 1    # Ulysses degree of the joint attention (divides the head count)
    cfg_parallel: bool = False    # the two guidance branches on two device groups
    memory: str = "resident"      # one of MEMORY_MODES
    fp8_storage: bool = False     # weights stored as float8, computed in bf16 (layerwise casting)

    def __post_init__(self):
        if self.memory not in MEMORY_MODES:
            raise ValueError(f"memory must be one of {', '.join(MEMORY_MODES)}, got {self.memory!r}")
        if self.devices < 1 or self.sequence_parallel < 1 or self.devices % self.sequence_parallel:
            raise ValueError(f"sequence_parallel {self.sequence_parallel} must divide devices {self.devices}")

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        parts = [f"{self.devices} GPU{'s' if self.devices > 1 else ''}"]
        if self.shard_weights:
            parts.append("FSDP-sharded weights")
        if self.sequence_parallel > 1:
            parts.append(f"sequence parallel x{self.sequence_parallel}")
        if self.cfg_parallel:
            parts.append("CFG branches on 2 device groups")
        parts.append(f"memory {self.memory}" + (" + fp8 weights" if self.fp8_storage else ""))
        return ", ".join(parts)


# ------------------------------------------------------------------------------------------- fixed facts

VAE_STRIDE = (4, 8, 8)               # Wan VAE: latent frames = (F-1)/4+1, 8x8 pixels per latent cell
# umT5-xxl encoder as Wan2.1 uses it (d_model 4096, d_ff 10240, 24 layers, vocab 256384); transformers'
# UMT5EncoderModel counts this on the meta device (tests/engine/test_plan.py checks it).
TEXT_ENCODER_PARAMS = 5_680_910_336
TEXT_ENCODER_CONFIG = {"d_model": 4096, "d_ff": 10240, "num_layers": 24, "num_heads": 64, "d_kv": 64,
                       "vocab_size": 256384, "feed_forward_proj": "gated-gelu"}
# diffusers' AutoencoderKLWan default config (the Wan2.1 VAE); counted on the meta device in tests/engine/test_plan.py.
WAN_VAE_PARAMS = 126_892_531
VAE_BYTES_PER_PARAM = 4              # the VAE runs in float32 (as Wan2.1)
# Wan's decoder runs causally one latent frame (4 video frames) at a time; its widest tensors are the last stage's
# 96 float32 channels at full resolution. The working set is 16 of them: measured by benchmarks/gpu_proof.py on
# one H200 (docs/numbers/gpu-proof.json, item vae_decode: 832x480x49 untiled, peak 9.146 GiB with 0.526 GiB of
# weights, i.e. 15.1 such tensors; the 6 first assumed were 2.3x under it).
VAE_DECODE_CHANNELS, VAE_DECODE_TENSORS, VAE_CHUNK_FRAMES = 96, 16, 4
OVERHEAD_GIB = 1.0                   # CUDA context + allocator slack per process (allowance)
BF16, FP8, FP32 = 2, 1, 4
DEFAULT_TFLOPS = 150.0               # assumed sustained bf16 TFLOP/s per GPU (about half an A100's 312 peak)
DEFAULT_HOST_LINK_GB_S = 25.0        # assumed host->GPU copy rate (PCIe 4 x16) for streamed layers
DEFAULT_LORA_RANK = 16            # vera.train.fit's documented LoRA rank
GIB = 2**30


# ----------------------------------------------------------------------------------------- sizes and FLOPs


def latent_grid(frames: int, width: int, height: int, stride=VAE_STRIDE) -> tuple[int, int, int]:
    """(latent frames, height, width) of a clip; BadInput unless frames is 4k+1 and the size fits the patches."""
    if frames < 1 or (frames - 1) % stride[0]:
        raise BadInput(f"frames must be {stride[0]}k+1 (49, 81, ...), got {frames}")
    cell = stride[1] * 2  # VAE stride x patch size (1, 2, 2)
    if width < cell or height < cell or width % cell or height % cell:
        raise BadInput(f"size {width}x{height} must be positive multiples of {cell} (VAE {stride[1]} x patch 2)")
    return (frames - 1) // stride[0] + 1, height // stride[1], width // stride[2]


def tokens_per_stream(cfg: VeraConfig, frames: int, width: int, height: int, stride=VAE_STRIDE) -> int:
    return math.prod(s // p for s, p in zip(latent_grid(frames, width, height, stride), cfg.patch_size))


def block_parameters(cfg: VeraConfig) -> int:
    """Parameters of one stream's block at one depth (vera.model.dit.WanBlock)."""
    d, f = cfg.dim, cfg.ffn_dim
    attention = 4 * (d * d + d) + (2 * d if cfg.qk_norm else 0)  # q, k, v, o (+ RMSNorm weights of q and k)
    return (2 * attention                                         # self- and cross-attention
            + (2 * d if cfg.cross_attn_norm else 0)               # norm3 (affine LayerNorm)
            + d * f + f + f * d + d                               # FFN
            + 6 * d)                                              # modulation


def stream_root_parameters(cfg: VeraConfig) -> int:
    """Parameters of one stream outside its blocks (vera.model.dit.WanStream): embedders and head."""
    d, patch = cfg.dim, math.prod(cfg.patch_size)
    return (cfg.in_dim * patch * d + d                            # patch embedding (Conv3d)
            + cfg.text_dim * d + d + d * d + d                    # text embedding
            + cfg.freq_dim * d + d + d * d + d                    # time embedding
            + d * 6 * d + 6 * d                                   # time projection
            + d * cfg.out_dim * patch + cfg.out_dim * patch + 2 * d)  # head + its modulation


def joint_block_parameters(cfg: VeraConfig) -> int:
    """One JointBlock: every stream's block at one depth (the unit FSDP gathers and `layers` streams)."""
    return len(STREAMS) * block_parameters(cfg)


def parameter_count(cfg: VeraConfig) -> int:
    """All parameters of VeraMoT(cfg); equals count_parameters(build_on_meta(cfg)) (tested)."""
    return len(STREAMS) * stream_root_parameters(cfg) + cfg.num_layers * joint_block_parameters(cfg)


def forward_flops(cfg: VeraConfig, tokens: int, joint: bool = True, text_len: int | None = None) -> dict:
    """FLOPs (multiply-add = 2) of one forward of all streams for one sample (joint=False: three independent Wan
    DiTs on the same grid, every query attending to its own stream only)."""
    d, f, n, layers, streams = cfg.dim, cfg.ffn_dim, tokens, cfg.num_layers, len(STREAMS)
    text_len = cfg.text_len if text_len is None else text_len
    keys = streams * n if joint else n  # every query attends over all streams' tokens when joint
    per_stream = {
        "self_attn_proj": layers * 4 * 2 * n * d * d,
        "self_attn_scores": layers * 2 * 2 * n * keys * d,  # QK^T and PV
        "cross_attn": layers * (2 * 2 * n * d * d + 2 * 2 * text_len * d * d + 2 * 2 * n * text_len * d),
        "ffn": layers * 2 * 2 * n * d * f,
        "embed_head": 2 * n * d * cfg.in_dim * math.prod(cfg.patch_size)
        + 2 * text_len * d * (cfg.text_dim + d) + 2 * n * d * cfg.out_dim * math.prod(cfg.patch_size),
    }
    result = {k: streams * v for k, v in per_stream.items()}
    result["total"] = sum(result.values())
    return result


# ------------------------------------------------------------------------------------------ activation model


def block_activation_bytes(cfg: VeraConfig, tokens: int, batch: int = 1, compute_bytes: int = BF16) -> dict:
    """Peak bytes live while one JointBlock runs forward without autograd, for `tokens` per stream on this GPU.

    Follows vera.model.dit.JointBlock.forward: held through the block are the float32 residual of the three
    streams (the caller's copy), every stream's q, k, v (locals until the block returns) and the joint attention
    output; on top of that the largest of three moments: the concatenated q/k/v during the attention, the last
    stream's FFN (two finished streams, its residual, the modulated norm and its cast, the hidden and GELU
    output), or the final stack (three finished streams and their stacked copy). SDPA is a flash /
    memory-efficient kernel: its working set is the log-sum-exp, not the (3L)^2 score matrix.
    """
    nd, nf, a, s = batch * tokens * cfg.dim, batch * tokens * cfg.ffn_dim, compute_bytes, len(STREAMS)
    held = s * nd * FP32 + 3 * s * nd * a + s * nd * a
    moments = {
        "attention": 3 * s * nd * a + batch * cfg.num_heads * s * tokens * FP32,
        "ffn": (s - 1) * nd * FP32 + nd * FP32 + nd * (FP32 + a) + 2 * nf * a,
        "stack": 2 * s * nd * FP32,
    }
    return {"held": held, **moments, "peak": held + max(moments.values())}


def training_activation_bytes(cfg: VeraConfig, tokens: int, compute_bytes: int = BF16) -> dict:
    """Bytes of activations for one training sample with activation checkpointing per joint block.

    Saved: each block's float32 residual input (the checkpoint's input). During the backward of one block its
    forward is recomputed with autograd; per stream that keeps (vera.model.dit.WanBlock, counting what autograd
    saves for backward) ten float32 tensors of tokens x dim (the modulated norm x2, q and k for their RMSNorm,
    the gated attention product, norm3's input, the cross-attention's q, the FFN's modulated norm x2, the gated
    FFN product), ten in the compute dtype (the q/k/v projections' input, the joint attention's q/k/v and output,
    the output projection's input, the cross-attention's q input, output and o input, the FFN's input) and the
    FFN hidden and GELU output. On top come the gradients: the float32 residual's flowing between blocks (the
    block's input and output) and, inside the block's backward, the joint q/k/v gradients and the FFN hidden's.
    """
    nd, nf, a, s = tokens * cfg.dim, tokens * cfg.ffn_dim, compute_bytes, len(STREAMS)
    per_stream = nd * (10 * FP32 + 10 * a) + 2 * nf * a
    return {
        "saved_inputs": cfg.num_layers * s * nd * FP32,
        "recomputed_block": s * per_stream,
        "gradients": 2 * s * nd * FP32 + 3 * s * nd * a + 2 * nf * a,
    }


# ---------------------------------------------------------------------------------------------- the plan


@dataclass
class Components:
    """What a render or training run needs besides the transformer: counted from the bundle when given."""

    text_encoder_params: int = TEXT_ENCODER_PARAMS
    vae_params: int = WAN_VAE_PARAMS
    vae_decode: bool = True              # False for a parameter-free patch VAE (no decoder network)
    vae_stride: tuple = VAE_STRIDE       # (frames, height, width) per latent cell


def bundle_components(folder) -> tuple[VeraConfig, Components, dict]:
    """(config, components, defaults) of a model bundle, counted from the headers of its weight files (no
    weights are read, and no torch: `plan` and `submit` stay light): the text encoder's and a Wan VAE's
    parameters, or a patch VAE's stride. A part whose folder holds no weight file keeps the Wan2.1 count."""
    folder = bundle_folder(folder)
    manifest = read_manifest(folder)
    cfg = VeraConfig.from_dict(manifest["config"])
    components = Components()
    text_folder = folder / manifest["text_encoder"]
    if (text_folder / "config.json").is_file():
        components.text_encoder_params = _stored_parameters(text_folder) or components.text_encoder_params
    vae = manifest["vae"]
    if vae.get("type") == "patch":
        patch = int(vae.get("patch", 4))
        components.vae_params, components.vae_decode, components.vae_stride = 0, False, (1, patch, patch)
    elif vae.get("type") == "wan":
        components.vae_params = _stored_parameters(folder / vae.get("path", "vae")) or components.vae_params
    return cfg, components, manifest["defaults"]


def _stored_parameters(folder: Path) -> int:
    """Parameters stored in a folder's safetensors files, from their headers (the shapes; no tensor is read).
    Tied weights are stored once, as a model counts them."""
    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(path, framework="numpy") as f:
            total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    return total


@dataclass
class Plan:
    mode: str                       # inference | lora | full
    config: dict
    frames: int
    width: int
    height: int
    gpus: int
    gpu_memory_gib: float
    tokens_per_stream: int
    strategy: Strategy | None       # the cheapest that fits; None when nothing fits
    fits: bool
    memory: dict                    # GiB per GPU by component, and "peak"
    flops_per_step: float           # inference: one sampling step (both CFG branches); training: one sample
    seconds_per_step: float
    tflops: float
    steps: int
    reason: str = ""                # why it does not fit (empty when it fits)
    gpus_needed: int | None = None  # the fewest GPUs of this size that fit (when it does not fit on `gpus`)
    host_memory_gib: float = 0.0    # CPU memory the offloaded parts need
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["strategy"] = None if self.strategy is None else self.strategy.to_dict()
        data["strategy_text"] = None if self.strategy is None else self.strategy.describe()
        return data


def plan(cfg: VeraConfig, frames: int, width: int, height: int, gpus: int, gpu_memory_gib: float,
         mode: str = "inference", *, guidance: bool = True, steps: int = 50, lora_rank: int = DEFAULT_LORA_RANK,
         tflops: float = DEFAULT_TFLOPS, host_link_gb_s: float = DEFAULT_HOST_LINK_GB_S,
         components: Components | None = None) -> Plan:
    """The cheapest Strategy that fits `gpus` GPUs of `gpu_memory_gib` each, with its per-GPU memory and time.

    mode: "inference" (a render: weights, activations, VAE, text encoder), "full" (training every weight with
    FSDP2 mixed precision) or "lora" (training adapters on frozen bf16 weights). Never raises for a config that
    does not fit: `fits` is False, `reason` says why and `gpus_needed` how many GPUs of this size would do.
    """
    if mode not in ("inference", "lora", "full"):
        raise BadInput(f"mode must be inference, lora or full, got {mode!r}")
    if gpus < 1:
        raise BadInput(f"GPU count must be at least 1, got {gpus}")
    if gpu_memory_gib <= 0:
        raise BadInput(f"GPU memory must be positive, got {gpu_memory_gib} GiB")
    if tflops <= 0:
        raise BadInput(f"throughput must be positive, got {tflops} TFLOP/s")
    components = components or Components()
    tokens = tokens_per_stream(cfg, frames, width, height, components.vae_stride)
    work = _Workload(cfg, tokens, width, height, mode, guidance, lora_rank, components)

    chosen = best = None
    for strategy in candidates(cfg, gpus, mode, guidance):
        memory, host = _evaluate(strategy, work)
        if best is None or memory["peak"] < best[1]["peak"]:
            best = (strategy, memory, host)
        if memory["peak"] <= gpu_memory_gib * GIB:
            chosen = (strategy, memory, host)
            break
    strategy, memory, host = chosen or best
    fits = chosen is not None

    flops = forward_flops(cfg, tokens)["total"]
    if mode == "inference":
        per_step = flops * (2 if guidance else 1)
        split = strategy.sequence_parallel * (2 if strategy.cfg_parallel else 1)
    else:  # forward + recomputed forward (activation checkpointing) + backward (2x forward)
        per_step = 4 * flops
        split = strategy.sequence_parallel
    seconds = per_step / split / (tflops * 1e12)
    notes = [f"time at an assumed {tflops:g} TFLOP/s sustained per GPU"]
    if strategy.memory == "layers":
        streamed = cfg.num_layers * joint_block_parameters(cfg) * (FP8 if strategy.fp8_storage else BF16)
        copy_seconds = streamed / (host_link_gb_s * 1e9)
        notes.append(f"layers streamed from CPU memory: {streamed / GIB:.1f} GiB per step at an assumed "
                     f"{host_link_gb_s:g} GB/s ({copy_seconds:.2f} s; overlapped with compute by prefetch)")
        seconds = max(seconds, copy_seconds)
    if strategy.fp8_storage:
        notes.append("fp8 weight storage changes the numerics slightly (bf16 compute)")

    result = Plan(mode=mode, config=cfg.to_dict(), frames=frames, width=width, height=height, gpus=gpus,
                  gpu_memory_gib=gpu_memory_gib, tokens_per_stream=tokens, strategy=strategy if fits else None,
                  fits=fits, memory={k: round(v / GIB, 3) for k, v in memory.items()},
                  flops_per_step=per_step, seconds_per_step=seconds, tflops=tflops, steps=steps,
                  host_memory_gib=round(host / GIB, 3), notes=notes)
    if not fits:
        result.gpus_needed = _gpus_needed(work, gpus, gpu_memory_gib)
        what = {"inference": "a render", "lora": "LoRA training", "full": "full training"}[mode]
        result.reason = (f"{what} of {_name(cfg)} at {frames} frames {width}x{height} needs {memory['peak'] / GIB:.1f}"
                         f" GiB per GPU with its leanest strategy on {gpus} GPU{'s' if gpus > 1 else ''} "
                         f"({strategy.describe()}), more than the {gpu_memory_gib:g} GiB per GPU given")
        if result.gpus_needed:
            result.reason += f"; {result.gpus_needed} GPUs of {gpu_memory_gib:g} GiB would fit"
        else:
            result.reason += f"; no count of {gpu_memory_gib:g} GiB GPUs fits (fewer frames or a smaller size)"
    return result


def estimate(cfg: VeraConfig, strategy: Strategy, frames: int, width: int, height: int, *, guidance: bool = True,
             components: Components | None = None) -> dict:
    """GiB per GPU by component (and "peak", and "host" for CPU memory) of a render laid out as `strategy`: what
    `plan` weighs for each candidate, for any one of them (benchmarks/gpu_proof.py sets it beside the measured
    peak of each memory tier)."""
    components = components or Components()
    tokens = tokens_per_stream(cfg, frames, width, height, components.vae_stride)
    work = _Workload(cfg, tokens, width, height, "inference", guidance, DEFAULT_LORA_RANK, components)
    memory, host = _evaluate(strategy, work)
    return {**{k: round(v / GIB, 3) for k, v in memory.items()}, "host": round(host / GIB, 3)}


def require_fit(result: Plan) -> Plan:
    """The plan, or BadInput (exit 2) with its reason."""
    if not result.fits:
        raise BadInput(result.reason)
    return result


def candidates(cfg: VeraConfig, gpus: int, mode: str, guidance: bool = True):
    """Strategies on `gpus` GPUs, cheapest first.

    Inference uses every GPU for speed: the largest Ulysses degree dividing both the head count and the GPU
    count, and the two guidance branches on two device groups when that leaves 2+ GPUs per degree; then memory
    from cheapest to leanest: replicated weights resident, text encoder/VAE only while used, FSDP-sharded
    weights, blocks streamed from CPU memory, and last (it changes the numerics) fp8 weight storage.
    Training shards with FSDP whenever there is more than one GPU and raises the sequence-parallel degree only
    as far as the activations need (every degree is taken from data parallelism).
    """
    degrees = [d for d in range(1, gpus + 1) if gpus % d == 0 and cfg.num_heads % d == 0]
    if mode == "inference":
        sp = max(degrees)
        cfg_parallel = guidance and (gpus // sp) % 2 == 0
        tiers = [(False, "resident", False), (False, "parts", False)]
        if gpus > 1:
            tiers += [(True, "resident", False), (True, "parts", False)]
        tiers += [(False, "layers", False), (False, "layers", True)]
        for shard, memory, fp8 in tiers:
            yield Strategy(devices=gpus, shard_weights=shard, sequence_parallel=sp, cfg_parallel=cfg_parallel,
                           memory=memory, fp8_storage=fp8)
    else:
        for sp in degrees:
            yield Strategy(devices=gpus, shard_weights=gpus > 1, sequence_parallel=sp)


def _name(cfg: VeraConfig) -> str:
    return next((name for name, known in CONFIGS.items() if known == cfg), f"a dim-{cfg.dim} model")


def _vae_bytes(components: Components, width: int, height: int) -> tuple[int, int]:
    """(weights, decode working set) of the VAE."""
    weights = components.vae_params * VAE_BYTES_PER_PARAM
    if not components.vae_decode:
        return weights, 0
    working = VAE_DECODE_TENSORS * VAE_DECODE_CHANNELS * VAE_CHUNK_FRAMES * width * height * FP32
    return weights, working


def _transformer_weights(cfg: VeraConfig, strategy: Strategy, weight_bytes: int) -> int:
    """Transformer bytes on one GPU: all, or a shard plus two gathered blocks, or the roots plus two streamed."""
    total, block = parameter_count(cfg), joint_block_parameters(cfg)
    if strategy.memory == "layers":
        block_bytes = FP8 if strategy.fp8_storage else weight_bytes
        # fp8 blocks are cast up to bf16 one Linear at a time (layerwise casting): the largest Linear's copy.
        cast = cfg.dim * max(cfg.ffn_dim, cfg.dim) * BF16 if strategy.fp8_storage else 0
        return (total - cfg.num_layers * block) * weight_bytes + 2 * block * block_bytes + cast
    if strategy.shard_weights:
        return math.ceil(total / strategy.devices) * weight_bytes + 2 * block * weight_bytes
    return total * weight_bytes


@dataclass(frozen=True)
class _Workload:
    cfg: VeraConfig
    tokens: int               # per stream
    width: int
    height: int
    mode: str
    guidance: bool
    lora_rank: int
    components: Components


def _evaluate(strategy: Strategy, work: _Workload) -> tuple[dict, int]:
    """(bytes per GPU by component with "peak", bytes of CPU memory) of `work` laid out as `strategy`."""
    return (_inference if work.mode == "inference" else _training)(strategy, work)


def _inference(strategy: Strategy, work: _Workload) -> tuple[dict, int]:
    cfg, tokens, components = work.cfg, work.tokens, work.components
    weights = _transformer_weights(cfg, strategy, BF16)
    batch = 2 if work.guidance and not strategy.cfg_parallel else 1
    local_tokens = math.ceil(tokens / strategy.sequence_parallel)
    activations = block_activation_bytes(cfg, local_tokens, batch)["peak"]
    vae_weights, vae_working = _vae_bytes(components, work.width, work.height)
    text = components.text_encoder_params * BF16
    overhead = OVERHEAD_GIB * GIB
    # The text encoder is on the GPU only while prompts encode (vera.pipeline unloads it once they are cached),
    # in every mode; the VAE stays resident, or (parts, layers) visits the GPU only while it runs.
    if strategy.memory == "resident":
        peak = weights + vae_weights + max(text, activations, vae_working) + overhead
        host = 0
    else:
        peak = weights + max(text, activations, vae_weights + vae_working) + overhead
        host = vae_weights
        if strategy.memory == "layers":
            host += parameter_count(cfg) * (FP8 if strategy.fp8_storage else BF16)
    memory = {"weights": weights, "activations": activations, "vae": vae_weights + vae_working,
              "text_encoder": text, "overhead": overhead, "peak": peak}
    return memory, host


def _training(strategy: Strategy, work: _Workload) -> tuple[dict, int]:
    cfg, tokens, components = work.cfg, work.tokens, work.components
    total, block, n = parameter_count(cfg), joint_block_parameters(cfg), strategy.devices
    shard = n if strategy.shard_weights else 1
    gathered = 2 * block * BF16 if strategy.shard_weights else 0  # the running and the prefetched joint block
    if work.mode == "full":
        # FSDP2 mixed precision: float32 sharded parameters (the master copy), float32 gradients, AdamW's two
        # float32 moments; bf16 copies gathered per block for compute, gradients reduce-scattered in float32.
        weights = math.ceil(total / shard) * FP32 + gathered
        grads = math.ceil(total / shard) * FP32 + (block * FP32 if strategy.shard_weights else 0)
        optimizer = 2 * math.ceil(total / shard) * FP32
    else:
        adapters = lora_parameters(cfg, work.lora_rank)
        weights = math.ceil(total / shard) * BF16 + gathered + adapters * FP32
        grads = adapters * FP32
        optimizer = 2 * adapters * FP32
    local_tokens = math.ceil(tokens / strategy.sequence_parallel)
    activations = sum(training_activation_bytes(cfg, local_tokens).values())
    vae_weights, vae_working = _vae_bytes(components, work.width, work.height)
    overhead = OVERHEAD_GIB * GIB
    # The frozen VAE encodes the batch before the forward; the prompt cache replaces the text encoder.
    peak = weights + grads + optimizer + vae_weights + max(activations, vae_working) + overhead
    memory = {"weights": weights, "gradients": grads, "optimizer": optimizer, "activations": activations,
              "vae": vae_weights + vae_working, "overhead": overhead, "peak": peak}
    return memory, 0


def lora_parameters(cfg: VeraConfig, rank: int) -> int:
    """Adapter parameters: rank x (in + out) on every stream's attention projections (self and cross: q, k, v,
    o) and both FFN Linears, at every layer: vera.model.lora's default targets (tested against peft's count)."""
    d, f = cfg.dim, cfg.ffn_dim
    per_block = 8 * rank * (d + d) + 2 * rank * (d + f)
    return len(STREAMS) * cfg.num_layers * per_block


def _gpus_needed(work: _Workload, gpus: int, gpu_memory_gib: float) -> int | None:
    """The fewest GPUs (more than `gpus`: powers of two up to 8, then whole 8-GPU nodes up to 1024) that fit."""
    counts = [c for c in (2, 4, 8) if c > gpus] + list(range(max(16, (gpus // 8 + 1) * 8), 1025, 8))
    for count in counts:
        if any(_evaluate(strategy, work)[0]["peak"] <= gpu_memory_gib * GIB
               for strategy in candidates(work.cfg, count, work.mode, work.guidance)):
            return count
    return None
