"""The training loop behind `vera-train fit`: flow matching on the three streams of a Vera bundle.

One step, for a batch of layered samples (vera.train.data):
- the frozen VAE encodes the source, the edit RGB, the matte (as 3 equal channels) and the composite;
- the conditioning is the source latents plus the user mask packed to the latent grid (docs/architecture.md),
  the same for all three streams;
- the frozen text encoder gives the prompt embedding (cached per distinct prompt); a configured fraction of
  samples gets the empty prompt, so classifier-free guidance works at inference;
- one noise level per sample, shared by the streams: x_t = (1 - s) x0 + s e, target velocity e - x0 (the
  convention of vera.sampling), timestep t = 1000 s;
- loss = weighted sum over streams of the mean squared velocity error (composite supervision included).

Exact resume: the data order, the noise and the prompt drops are pure functions of (seed, step, global sample
index), so a run resumed from a checkpoint (model, optimiser, EMA, RNG states, step) continues bit-for-bit like
the straight run, and a torchrun DDP run with per-rank batch b on N ranks sees the same samples as one process
with batch N*b. Checkpoints are safetensors (tensors) plus JSON metadata: never pickle.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from vera.atomic import atomic_path, atomic_write_text
from vera.errors import BadInput
from vera.model.lora import add_lora, lora_settings, save_lora
from vera.train import sharded as sharded_checkpoints
from vera.model.configs import STREAMS
from vera.model.dit import block_first_key, stream_first_key

MASK_MODES = ("dataset", "none", "placement")
PARALLEL_MODES = ("ddp", "fsdp", "hsdp")
PLACEMENT_TASK = "object_addition"
PLACEMENT_THRESHOLD = 1 / 255  # all of the element, shadow tail included: its matte falls to 0 inside the box
CHECKPOINT_PREFIX = "step_"


# --------------------------------------------------------------------------------------------------- config


@dataclass
class FitConfig:
    """A training run. Written as JSON or YAML; every key is optional except `bundle` (docs/training.md)."""

    # Where the model comes from. {"from": "random", "model": <config name or dict>, "vae": {...}, "text": {...}}
    # builds a fresh bundle with vera.model.bundle.create_random_bundle; {"from": "PATH"} starts from a bundle
    # folder (e.g. one made from a Wan2.1 conversion with `vera-render convert`).
    bundle: dict = field(default_factory=lambda: {"from": "random", "model": "vera-demo"})
    width: int = 64                 # model resolution the samples are resized to
    height: int = 48
    frames: int = 5                 # frames per training clip: 4k+1
    steps: int = 1000
    batch: int = 8                  # per process; the global batch is batch * world size
    global_batch: int | None = None # instead of `batch`: split over the processes, so a run can resume on
                                    # another process count and train on the same samples
    # How processes share the model: "ddp" (each holds all of it), "fsdp" (FSDP2: every joint block sharded
    # across all processes), "hsdp" (sharded inside a node, replicated across nodes). docs/training.md
    parallel: str = "ddp"
    activation_checkpointing: bool = False  # recompute each joint block in the backward pass (less memory)
    # Ulysses degree for long clips (parallel: fsdp): each group of this many processes trains on the same
    # samples, every process holding 1/degree of each stream's tokens (vera.parallel); divides the head count
    sequence_parallel: int = 1
    # LoRA fine-tuning (vera.model.lora): {"rank": 16, "alpha": 16, "targets": [...]} trains only adapters on
    # the streams' attention and FFN; the exported bundle is the base plus a small adapter file. null: full.
    lora: dict | None = None
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.99)
    warmup: int = 100               # linear warm-up steps, then cosine decay to lr * min_lr_ratio
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema: float | None = 0.999       # EMA decay, or None for no EMA; the exported bundle uses the EMA weights
    loss_weights: dict = field(default_factory=lambda: {"edit": 1.0, "alpha": 1.0, "composite": 1.0})
    prompt_drop: float = 0.1        # fraction of samples trained with the empty prompt (classifier-free guidance)
    timestep_shift: float = 1.0     # s' = shift s / (1 + (shift - 1) s): >1 spends more steps at high noise
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    cache_data: bool = True         # keep decoded samples in memory after the first read (num_workers 0)
    random_clip: bool = False       # train on a random `frames`-long run of each longer sample
    # Data at scale (vera.train.loader, docs/training.md): DataLoader worker processes (0: read in-process),
    # shape buckets (null: every sample at frames x width x height; "auto": one per distinct frame count
    # (floored to 4k+1) and size of the data; or a list of {"frames", "width", "height"}), and the folder of
    # precomputed prompt embeddings (`vera-train cache-prompts --cache`; null: OUT/prompt_cache).
    num_workers: int = 0
    buckets: list | str | None = None
    prompt_cache: str | None = None
    # The user-mask conditioning: "dataset" (the sample's mask), "none" (zeros, as a shot without a mask), or
    # "placement": object-addition samples get a box around the element per frame (where to put the object,
    # given as the shot's mask at render time), others zeros; `placement_drop` of them get zeros too.
    mask: str = "dataset"
    placement_margin: int = 2       # model pixels around the element's bounding box
    placement_drop: float = 0.2
    # Extra loss weight on the element's neighbourhood (its bounding box per frame, placement_margin grown):
    # an added object covers a few percent of the frame, so without it the loss is mostly easy background.
    element_weight: float = 0.0
    defaults: dict = field(default_factory=dict)  # sampler defaults written into the exported bundle
    export_dtype: str = "float32"   # weights of the exported bundle: float32 | float16 | bfloat16 (half the size)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "FitConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInput(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        cfg = cls(**data)
        cfg.betas = tuple(cfg.betas)
        cfg.validate(source)
        return cfg

    def batch_per_process(self, world: int) -> int:
        if self.global_batch is None:
            return self.batch
        if self.global_batch % world:
            raise BadInput(f"global_batch {self.global_batch} does not split over {world} processes")
        return self.global_batch // world

    def validate(self, source: str = "config") -> None:
        problems = []
        if self.frames < 1 or (self.frames - 1) % 4:
            problems.append(f"frames must be 4k+1, got {self.frames}")
        for name in ("width", "height", "steps", "batch"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be positive")
        if not 0.0 <= self.prompt_drop <= 1.0:
            problems.append("prompt_drop must be in [0, 1]")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            problems.append("ema must be in (0, 1) or null")
        if set(self.loss_weights) - set(STREAMS):
            problems.append(f"loss_weights keys must be among {', '.join(STREAMS)}")
        if self.export_dtype not in ("float32", "float16", "bfloat16"):
            problems.append("export_dtype must be float32, float16 or bfloat16")
        if self.parallel not in PARALLEL_MODES:
            problems.append(f"parallel must be one of {', '.join(PARALLEL_MODES)}")
        if int(self.sequence_parallel) < 1 or (self.sequence_parallel > 1 and self.parallel != "fsdp"):
            problems.append("sequence_parallel must be 1, or at least 2 with parallel: fsdp")
        if self.global_batch is not None and int(self.global_batch) < 1:
            problems.append("global_batch must be positive")
        if self.lora is not None and (not isinstance(self.lora, dict) or set(self.lora) - {"rank", "alpha", "targets"}
                                      or not isinstance(self.lora.get("rank"), int) or self.lora["rank"] < 1):
            problems.append('lora must be null or {"rank": N >= 1, "alpha": A, "targets": [...]}')
        if self.mask not in MASK_MODES:
            problems.append(f"mask must be one of {', '.join(MASK_MODES)}")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            problems.append("num_workers must be an integer >= 0")
        try:
            from vera.train.loader import configured_buckets

            configured_buckets(self.buckets, self.frames, self.width, self.height)
        except BadInput as exc:
            problems.append(str(exc))
        if "from" not in self.bundle:
            problems.append('bundle needs "from": "random" or a bundle folder')
        if problems:
            raise BadInput(f"{source}: " + "; ".join(problems))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


def load_config(path: str | Path) -> FitConfig:
    """Read a JSON (.json) or YAML (.yaml/.yml) run config."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: config file not found")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
        raise BadInput(f"{path}: cannot parse config: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: config must be a mapping of keys to values")
    return FitConfig.from_dict(data, source=str(path))


# ------------------------------------------------------------------------------------- deterministic streams


def sample_seed(seed: int, step: int, index: int, purpose: int) -> int:
    """A seed for one sample's randomness at one step: independent of rank count, batch split and resume."""
    return int(np.random.SeedSequence([seed, step, index, purpose]).generate_state(1, dtype=np.uint64)[0]
               % (2**63 - 1))


def dataset_index(seed: int, position: int, size: int, stream: int = 0) -> int:
    """The dataset index at `position` of the endless stream of per-epoch shuffles (`stream`: one such
    stream per data bucket, vera.train.loader)."""
    epoch, offset = divmod(position, size)
    order = torch.randperm(size, generator=torch.Generator().manual_seed(sample_seed(seed, epoch, stream, 7)))
    return int(order[offset])


def rank_positions(step: int, batch: int, rank: int, world: int) -> list[int]:
    """The global stream positions this rank trains on at `step` (rank r takes the r-th slice)."""
    start = step * batch * world + rank * batch
    return list(range(start, start + batch))


def shifted(s: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * s / (1 + (shift - 1) * s)


def lr_at(cfg: FitConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def placement_mask(alpha: np.ndarray, margin: int, threshold: float = PLACEMENT_THRESHOLD) -> np.ndarray:
    """(F, H, W) element alpha -> (F, H, W) float32 mask: 1 inside each frame's element bounding box grown by
    `margin` pixels, 0 elsewhere (all 0 on a frame without element). The object-addition "where" hint."""
    alpha = np.asarray(alpha)
    boxes = np.zeros(alpha.shape, np.float32)
    for i, frame in enumerate(alpha):
        rows, cols = np.nonzero(np.any(frame > threshold, axis=1)), np.nonzero(np.any(frame > threshold, axis=0))
        if rows[0].size == 0:
            continue
        top, bottom = max(0, rows[0][0] - margin), min(frame.shape[0], rows[0][-1] + 1 + margin)
        left, right = max(0, cols[0][0] - margin), min(frame.shape[1], cols[0][-1] + 1 + margin)
        boxes[i, top:bottom, left:right] = 1.0
    return boxes


def element_weight_map(cfg: "FitConfig", items: list[dict]) -> torch.Tensor | None:
    """(B, 1, F, H, W) per-pixel loss weights 1 + element_weight * element box, or None when not weighted."""
    if not cfg.element_weight:
        return None
    boxes = [placement_mask(torch.as_tensor(item["alpha"]).float()[0].numpy(), cfg.placement_margin)
             for item in items]
    return 1.0 + cfg.element_weight * torch.from_numpy(np.stack(boxes))[:, None]


def conditioning_mask(cfg: "FitConfig", item: dict, step: int, position: int) -> torch.Tensor:
    """The (1, F, H, W) user mask a sample is trained with, per `cfg.mask` (see FitConfig)."""
    mask = torch.as_tensor(item["mask"]).float()
    if cfg.mask == "dataset":
        return mask
    if cfg.mask == "none" or item.get("task") != PLACEMENT_TASK:
        return torch.zeros_like(mask)
    gen = torch.Generator().manual_seed(sample_seed(cfg.seed, step, position, 2))
    if float(torch.rand((), generator=gen)) < cfg.placement_drop:
        return torch.zeros_like(mask)
    alpha = torch.as_tensor(item["alpha"]).float()[0].numpy()
    return torch.from_numpy(placement_mask(alpha, cfg.placement_margin))[None]


# ------------------------------------------------------------------------------------------ distributed


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """Join the process group torchrun set up (WORLD_SIZE > 1), gloo on the CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), True)


def pick_device(name: str, dist_local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", dist_local_rank)
    return device


# ------------------------------------------------------------------------------------------- checkpoints


def _rng_state() -> tuple[dict, dict]:
    np_state = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state(),
               "rng.numpy": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    py = random.getstate()
    meta = {"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": [py[0], list(py[1]), py[2]]}
    return tensors, meta


def _set_rng_state(tensors: dict, meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))


def save_checkpoint(path: Path, step: int, model, optimizer, ema: dict | None, cfg: FitConfig) -> None:
    """Model, optimiser, EMA and RNG state at `step`, as one safetensors file (metadata holds the rest)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.items()})
    opt = optimizer.state_dict()
    for index, state in opt["state"].items():
        for key, value in state.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
    rng_tensors, rng_meta = _rng_state()
    tensors.update(rng_tensors)
    meta = {"step": step, "param_groups": opt["param_groups"], "rng": rng_meta, "config": cfg.to_dict()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"vera_fit": json.dumps(meta)})


def _block_first(key: str) -> str:
    group, _, name = key.partition(".")
    return f"{group}.{block_first_key(name)}" if group in ("model", "ema") else key


def _legacy_parameter_order(model) -> list[int]:
    """Index j of a pre-restructure model's parameters -> index in ours. It listed each stream whole (embedders,
    then its blocks by depth, then its head); ours lists every stream's embedders and head, then the blocks."""
    def old_position(item):
        index, name = item
        stream, rest = stream_first_key(name).split(".", 1)
        block = re.match(r"blocks\.(\d+)\.", rest)
        section = 1 if block else 2 if rest.startswith("head.") else 0
        return STREAMS.index(stream), section, int(block[1]) if block else 0, index
    return [index for index, _ in sorted(enumerate(name for name, _ in model.named_parameters()), key=old_position)]


def load_checkpoint(path: Path, model, optimizer, ema: dict | None) -> int:
    """Restore everything `save_checkpoint` wrote; returns the step to continue from."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["vera_fit"])
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise BadInput(f"{path}: not a readable training checkpoint ({exc})") from None
    # checkpoints written before the joint-block restructure hold stream-first model/EMA keys, and their
    # optimiser state follows that model's parameter order
    legacy = any(k.startswith(f"model.{STREAMS[0]}.blocks.") for k in tensors)
    tensors = {_block_first(k): v for k, v in tensors.items()}
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None:
        for k in ema:
            ema[k].copy_(tensors.get(f"ema.{k}", tensors[f"model.{k}"]))
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            index = _legacy_parameter_order(model)[int(index)] if legacy else int(index)
            state.setdefault(index, {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    _set_rng_state(tensors, meta["rng"])
    return int(meta["step"])


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first: `step_N.safetensors` files (ddp) and `step_N/` folders (sharded)."""
    found = [p for p in (out_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*")
             if p.suffix == ".safetensors" or (p.is_dir() and not p.name.endswith(".partial"))]
    return sorted(found, key=lambda p: p.stem)


def checkpoint_path(out_dir: Path, step: int, sharded: bool = False) -> Path:
    name = f"{CHECKPOINT_PREFIX}{step:08d}"
    return out_dir / "checkpoints" / (name if sharded else f"{name}.safetensors")


# --------------------------------------------------------------------------------------------- the loop


class PromptEmbeddings:
    """Frozen text-encoder outputs per prompt, read from the prompt cache (filled before the first step by
    `vera.train.loader.cache_prompts`, so the encoder is never run beside the model); the most recently used
    ones stay in memory up to `keep_bytes` (a public-set run has thousands of prompts)."""

    def __init__(self, text_encoder, device: torch.device, keep_bytes: int = 1 << 30):
        from collections import OrderedDict

        self.text = text_encoder
        self.device = device
        self.keep_bytes = keep_bytes
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        missing = sorted({p for p in prompts if p not in self._cache})
        if missing:
            with torch.no_grad():
                embedded = self.text.encode(missing)
            for prompt, emb in zip(missing, embedded):
                self._cache[prompt] = emb.detach().float().to(self.device)
        out = torch.stack([self._cache[p] for p in prompts])
        for prompt in prompts:
            self._cache.move_to_end(prompt)
        while len(self._cache) > 1 and sum(v.nbytes for v in self._cache.values()) > self.keep_bytes:
            self._cache.popitem(last=False)
        return out


def collate(items: list[dict], masks: list[torch.Tensor], device: torch.device) -> dict:
    """Stack dataset samples into model tensors: video (B,3,F,H,W) in [-1,1], matte/mask (B,1,F,H,W) in [0,1]."""
    def stack(key):
        return torch.stack([torch.as_tensor(item[key]).float() for item in items]).to(device)

    return {"source": stack("source"), "edit": stack("edit"), "alpha": stack("alpha"),
            "composite": stack("composite"), "mask": torch.stack(masks).to(device),
            "instruction": [str(item["instruction"]) for item in items]}


def stream_latents(vae, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean latents of the three streams (B,3,z,f,h,w), conditioning (B,z+mask,f,h,w)) for a batch."""
    from vera.model.dit import pack_mask
    from vera.model.vae import encode_matte

    with torch.no_grad():
        source = vae.encode(batch["source"])
        clean = torch.stack([vae.encode(batch["edit"]), encode_matte(vae, batch["alpha"]),
                             vae.encode(batch["composite"])], dim=1)
        cond = torch.cat([source, pack_mask(batch["mask"], vae.temporal_stride, vae.spatial_stride)], dim=1)
    return clean.float(), cond.float()


def flow_matching_loss(model, clean: torch.Tensor, cond: torch.Tensor, context: torch.Tensor,
                       noise: torch.Tensor, sigma: torch.Tensor, weights: dict, autocast,
                       pixel_weight: torch.Tensor | None = None) -> tuple:
    """Weighted per-stream MSE between predicted and true velocity (noise - clean) at noise level sigma.

    pixel_weight: optional (B, 1, f, h, w) weights on the latent grid (normalised to mean 1 per sample)."""
    from vera.sampling import model_input

    s = sigma.view(-1, 1, 1, 1, 1, 1)
    noisy = (1 - s) * clean + s * noise
    with autocast():
        velocity = model(model_input(noisy, cond), sigma * 1000.0, context)
    err = (velocity.float() - (noise - clean)).pow(2)
    if pixel_weight is not None:
        pixel_weight = pixel_weight / pixel_weight.mean(dim=(1, 2, 3, 4), keepdim=True)
        err = err * pixel_weight.unsqueeze(1)
    err = err.mean(dim=(0, 2, 3, 4, 5))  # per stream
    per_stream = {name: err[i] for i, name in enumerate(STREAMS)}
    total = sum(weights.get(name, 1.0) * per_stream[name] for name in STREAMS)
    return total, {name: float(v.detach()) for name, v in per_stream.items()}


def batch_noise(cfg: FitConfig, step: int, positions: list[int], clean: torch.Tensor) -> tuple:
    """Noise, noise levels and prompt-drop flags for each sample, from (seed, step, stream position)."""
    noise, sigma, drop = [], [], []
    for pos in positions:
        gen = torch.Generator().manual_seed(sample_seed(cfg.seed, step, pos, 1))
        noise.append(torch.randn(clean.shape[1:], generator=gen))
        u = torch.rand((2,), generator=gen)
        sigma.append(shifted(u[0], cfg.timestep_shift))
        drop.append(bool(u[1] < cfg.prompt_drop))
    return (torch.stack(noise).to(clean.device), torch.stack(sigma).to(clean.device), drop)


def build_bundle(cfg: FitConfig, work_dir: Path, device: torch.device, fresh: bool = True):
    """The bundle training starts from, loaded for training (float32 weights that take gradients).

    {"from": "random", ...} writes a seeded bundle to work_dir/init_bundle first (vera.model.bundle.
    create_random_bundle: VeraMoT + PatchVAE + tiny text encoder), anew unless resuming (`fresh=False`); a
    folder is loaded as it is (e.g. a bundle built from a Wan2.1 conversion).
    """

    from vera.model.bundle import create_random_bundle, load_bundle

    spec = cfg.bundle
    folder = spec["from"]
    if folder == "random":
        folder = work_dir / "init_bundle"
        if fresh or not (folder / "bundle.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            create_random_bundle(folder, config=model_config(spec.get("model", "vera-demo")),
                                 seed=cfg.seed, resolution=(cfg.width, cfg.height),
                                 window=cfg.frames, patch=int(spec.get("patch", 4)),
                                 vocab_words=vocabulary(spec.get("vocab", "synth")))
    bundle = load_bundle(folder, device=str(device), cache_dir=cfg.prompt_cache or work_dir / "prompt_cache")
    bundle.transformer.float().requires_grad_(True).train()
    return bundle


def model_config(spec):
    """A VeraConfig from a name ("vera-demo") or {"base": name, **fields to change}."""
    from vera.model.configs import VeraConfig, get_config

    if isinstance(spec, str):
        return get_config(spec)
    if not isinstance(spec, dict):
        raise BadInput(f"bundle.model must be a config name or a mapping, got {spec!r}")
    spec = dict(spec)
    base = spec.pop("base", None)
    if base is None:
        return VeraConfig.from_dict(spec)
    return VeraConfig.from_dict({**get_config(base).to_dict(), **spec})


def vocabulary(spec) -> list[str]:
    """The tiny text encoder's words: "synth" (the synthetic grammar's) or an explicit list."""
    if spec == "synth":
        from vera.train.synth import vocabulary as synth_vocabulary

        return synth_vocabulary()
    if isinstance(spec, list) and all(isinstance(w, str) for w in spec):
        return spec
    raise BadInput(f'bundle.vocab must be "synth" or a list of words, got {spec!r}')


class EMA:
    """Exponential moving average of the trainable weights (float32 copies; with LoRA, of the adapters)."""

    def __init__(self, model, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in model.named_parameters() if v.requires_grad}

    @torch.no_grad()
    def update(self, model) -> None:
        for k, v in model.named_parameters():
            if k in self.shadow:
                self.shadow[k].mul_(self.decay).add_(v.detach().float(), alpha=1 - self.decay)


def fit(cfg: FitConfig, data_dir: str | Path, out_dir: str | Path, *, device: str = "auto",
        max_minutes: float | None = None, max_steps: int | None = None, resume: bool = True,
        bundle_out: str | Path | None = None, progress: str = "auto") -> dict:
    """Train; returns a summary {steps, final_loss, wall_s, bundle}. Safe to call under torchrun."""
    from vera.progress import Progress
    from vera.train.data import open_dataset
    from vera.train.loader import BatchPlan, cache_prompts, dataset_prompts, plan_buckets, training_batches

    started = time.monotonic()
    out_dir = Path(out_dir)
    dist = init_distributed(pick_device(device))
    dev = pick_device(device, dist.local_rank)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)

    out_dir.mkdir(parents=True, exist_ok=True)
    existing = list_checkpoints(out_dir) if resume else []
    if dist.world > 1 and not dist.main:
        _barrier(dist)  # rank 0 writes the initial bundle first
        bundle = build_bundle(cfg, out_dir, dev, fresh=False)
    else:
        bundle = build_bundle(cfg, out_dir, dev, fresh=not existing)
    if dist.world > 1 and dist.main:
        _barrier(dist)
    model = bundle.transformer
    if cfg.lora:
        add_lora(model, **cfg.lora)
    model.gradient_checkpointing = cfg.activation_checkpointing
    sharded = cfg.parallel in sharded_checkpoints.SHARDED_MODES
    if cfg.sequence_parallel > 1 and dist.world % cfg.sequence_parallel:
        raise BadInput(f"sequence_parallel {cfg.sequence_parallel} does not divide the {dist.world} processes")
    if sharded and dist.world > 1:
        sharded_checkpoints.shard_model(model, cfg.parallel, dist.world, dev, cfg.sequence_parallel)
    # the processes of one sequence-parallel group train on the same samples: data is split over the groups
    data_rank, data_world = dist.rank // cfg.sequence_parallel, dist.world // cfg.sequence_parallel
    batch_size = cfg.batch_per_process(data_world)
    vae = bundle.vae
    dataset = open_dataset(data_dir, width=cfg.width, height=cfg.height, frames=cfg.frames,
                           random_clip=cfg.random_clip)
    if len(dataset) == 0:
        raise BadInput(f"{data_dir}: no training samples")
    # every prompt embedded before the first step (rank 0 encodes what the cache lacks, then frees the encoder)
    if dist.main:
        done = cache_prompts(bundle.text, dataset_prompts(dataset.samples))
        if done["encoded"]:
            print(f"vera-train fit: encoded {done['encoded']} prompt(s) missing from the prompt cache; run "
                  "`vera-train cache-prompts` first to keep the text encoder out of training", file=sys.stderr)
    _barrier(dist)
    prompts = PromptEmbeddings(bundle.text, dev)
    # rank 0 reads the samples' headers for the buckets; the others take its answer
    layout = [plan_buckets(dataset.samples, cfg.buckets, cfg.frames, cfg.width, cfg.height) if dist.main else None]
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.broadcast_object_list(layout, src=0, device=dev)
    buckets, bucket_of = layout[0]
    plan = BatchPlan(cfg.seed, buckets, bucket_of, batch_size * data_world)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    ema = EMA(model, cfg.ema) if cfg.ema else None
    step = 0
    if existing and existing[-1].is_dir():
        step = sharded_checkpoints.load(existing[-1], model, optimizer, ema.shadow if ema else None,
                                        world=dist.world)["step"]
    elif existing:
        if sharded and dist.world > 1:
            raise BadInput(f"{existing[-1]}: a parallel=ddp checkpoint; resume it with parallel: ddp")
        step = load_checkpoint(existing[-1], model, optimizer, ema.shadow if ema else None)
    if dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")

    trained = model
    if dist.world > 1 and not sharded:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    def autocast():
        # bf16 on CUDA; full float32 on the CPU (CPU bf16 is slower than float32 on most machines)
        return torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast(
            "cpu", enabled=False)

    last_step = min(cfg.steps, max_steps) if max_steps is not None else cfg.steps
    log_path = out_dir / "log.jsonl"
    losses: list[float] = []
    stopped_by_clock = False
    bar = Progress(last_step, "fit", progress if dist.main else "none")
    bar.done = step
    run_started = time.monotonic()
    start_step = step
    batches = iter(training_batches(dataset, plan, step, last_step, batch_size, data_rank, data_world,
                                    cfg.num_workers, keep=cfg.cache_data and not cfg.random_clip))
    while step < last_step:
        if max_minutes is not None and _clock_says_stop(started, max_minutes, dist):
            stopped_by_clock = True
            break
        positions = rank_positions(step, batch_size, data_rank, data_world)
        items = next(batches)
        masks = [conditioning_mask(cfg, item, step, p) for item, p in zip(items, positions)]
        batch = collate(items, masks, dev)
        clean, cond = stream_latents(vae, batch)
        noise, sigma, drop = batch_noise(cfg, step, positions, clean)
        context = prompts(["" if d else text for d, text in zip(drop, batch["instruction"])])
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, step)
        weight_map = element_weight_map(cfg, items)
        if weight_map is not None:  # pixels -> latent cells, with the mask's own packing (mean per cell)
            from vera.model.dit import pack_mask

            weight_map = pack_mask(weight_map.to(dev), vae.temporal_stride, vae.spatial_stride).mean(1, keepdim=True)
        loss, parts = flow_matching_loss(trained, clean, cond, context, noise, sigma, cfg.loss_weights, autocast,
                                         weight_map)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        optimizer.step()
        if ema:
            ema.update(model)
        step += 1
        losses.append(float(loss.detach()))
        bar.advance(1, f"loss {losses[-1]:.4f}")
        if step % cfg.log_every == 0 or step == last_step:
            mean_loss = _mean_across(losses[-cfg.log_every:], dist)  # every rank joins the all-reduce
            if dist.main:
                record = {"step": step, "loss": mean_loss, **{f"loss_{k}": v for k, v in parts.items()},
                          "lr": lr_at(cfg, step - 1), "grad_norm": grad_norm,
                          "elapsed_s": round(time.monotonic() - started, 2),
                          "steps_per_s": round((step - start_step) / max(1e-9, time.monotonic() - run_started), 4)}
                with open(log_path, "a") as log:
                    log.write(json.dumps(record) + "\n")
        if step % cfg.checkpoint_every == 0 and step < last_step:
            _checkpoint(out_dir, step, model, optimizer, ema, cfg, dist)
    bar.close()
    del batches  # stops the workers
    _checkpoint(out_dir, step, model, optimizer, ema, cfg, dist)

    summary = {"steps": step, "final_loss": losses[-1] if losses else None,
               "wall_s": round(time.monotonic() - started, 1), "stopped_by_clock": stopped_by_clock,
               "bundle": None}
    trained_state = model.state_dict() if ema is None else ema.shadow
    if sharded:  # whole tensors for the export: a collective, every rank takes part
        trained_state = sharded_checkpoints.full_state(trained_state)
    if dist.main:
        target = Path(bundle_out) if bundle_out else out_dir / "bundle"
        write_bundle(cfg, base_bundle_folder(cfg, out_dir), trained_state, target)
        summary["bundle"] = str(target)
        atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    if dist.initialised:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()
    return summary


LORA_FILE = "lora.safetensors"


def base_bundle_folder(cfg: FitConfig, run_dir: Path) -> Path:
    """The bundle a run started from (its VAE and text encoder go into every bundle it exports)."""
    return run_dir / "init_bundle" if cfg.bundle["from"] == "random" else Path(cfg.bundle["from"])


def write_bundle(cfg: FitConfig, base: Path, state: dict, target: str | Path, dtype: str | None = None) -> Path:
    """An inference bundle at `target` from trained tensors (whole, module key names): the base bundle with
    these weights, or with LoRA the base bundle unchanged plus the adapter file."""
    from vera.model.bundle import load_bundle, save_bundle

    bundle = load_bundle(base, device="cpu")
    target = Path(target)
    if cfg.lora:
        target.mkdir(parents=True, exist_ok=True)
        save_lora(state, lora_settings(**cfg.lora), target / LORA_FILE)
        return save_bundle(bundle, target, defaults=cfg.defaults or None, lora=LORA_FILE)
    bundle.transformer.load_state_dict({k: v.float() for k, v in state.items()})
    bundle.transformer.to(getattr(torch, dtype or cfg.export_dtype))  # load_bundle casts to the compute dtype
    return save_bundle(bundle, target, defaults=cfg.defaults or None)


def export(checkpoint: str | Path, out: str | Path, *, use_ema: bool = True, dtype: str | None = None) -> Path:
    """An inference bundle from a training checkpoint (a `step_N/` folder or `step_N.safetensors` file inside a
    run's checkpoints/): its EMA weights (or the raw ones), with the VAE and text encoder of the bundle the run
    started from, and the run's sampler defaults. One process; no GPU needed."""
    from safetensors.torch import load_file

    from vera.model.bundle import load_bundle

    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise BadInput(f"{checkpoint}: no such checkpoint")
    run = checkpoint.parent.parent
    cfg = load_config(run / "config.json")
    if use_ema and not cfg.ema:
        raise BadInput(f"{run / 'config.json'}: the run kept no EMA (ema is null); export with --raw")
    base = base_bundle_folder(cfg, run)
    group = "ema" if use_ema else "model"
    if checkpoint.is_dir():
        model = load_bundle(base, device="cpu").transformer.float().requires_grad_(True)  # as fit trains it
        if cfg.lora:
            add_lora(model, **cfg.lora)
        held = ({k: v for k, v in model.named_parameters() if v.requires_grad} if use_ema  # what EMA keeps
                else model.state_dict())
        template = {f"{group}.{k}": torch.empty_like(v) for k, v in held.items()}
        tensors = sharded_checkpoints.read_tensors(checkpoint, template)
    else:
        tensors = {_block_first(k): v for k, v in load_file(str(checkpoint)).items()}
    state = {k[len(group) + 1:]: v for k, v in tensors.items() if k.startswith(f"{group}.")}
    return write_bundle(cfg, base, state, out, dtype)


def _clock_says_stop(started: float, max_minutes: float, dist: Dist) -> bool:
    """All ranks stop at the same step: rank 0's clock decides."""
    stop = torch.tensor([float(time.monotonic() - started > 60.0 * max_minutes)])
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.broadcast(stop, src=0)
    return bool(stop.item())


def _mean_across(values: list[float], dist: Dist) -> float:
    mean = torch.tensor([sum(values) / max(1, len(values))])
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.all_reduce(mean)
        mean /= dist.world
    return float(mean.item())


def _barrier(dist: Dist) -> None:
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()


def _checkpoint(out_dir: Path, step: int, model, optimizer, ema, cfg: FitConfig, dist: Dist) -> None:
    if cfg.parallel in sharded_checkpoints.SHARDED_MODES:
        sharded_checkpoints.save(checkpoint_path(out_dir, step, sharded=True), step, model, optimizer,
                                 ema.shadow if ema else None, {"config": cfg.to_dict()}, rank=dist.rank,
                                 world=dist.world)
        if dist.main:
            for old in list_checkpoints(out_dir)[:-cfg.keep_checkpoints]:
                shutil.rmtree(old) if old.is_dir() else old.unlink()
    elif dist.main:
        save_checkpoint(checkpoint_path(out_dir, step), step, model, optimizer, ema.shadow if ema else None, cfg)
        for old in list_checkpoints(out_dir)[:-cfg.keep_checkpoints]:
            old.unlink()
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()
