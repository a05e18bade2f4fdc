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
import shutil
import sys
import time
from collections import OrderedDict
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from vera.atomic import atomic_write_text
from vera.errors import BadInput
from vera.model.bundle import create_random_bundle, load_bundle
from vera.model.configs import STREAMS, VeraConfig, get_config
from vera.model.lora import add_lora
from vera.model.dit import pack_mask
from vera.model.vae import encode_matte
from vera.progress import Progress
from vera.sampling import model_input
from vera.train import sharded as sharded_checkpoints
from vera.train.data import open_dataset
from vera.train.loader import (BatchPlan, cache_prompts, dataset_prompts, plan_buckets, share_buckets,
                               training_batches)
from vera.train.checkpoints import load_checkpoint, save_run_checkpoint
from vera.train.config import FitConfig
from vera.train.distributed import barrier, clock_says_stop, mean_across
from vera.train.export import base_bundle_folder, previous_final_loss, write_bundle
from vera.train.run import finish_run, start_run
from vera.train.masks import conditioning_mask, element_weight_map
from vera.train.streams import batch_noise, rank_positions
from vera.train.synth import vocabulary as synth_vocabulary


# --------------------------------------------------------------------------------------------------- config


# ------------------------------------------------------------------------------------- deterministic streams


def lr_at(cfg: FitConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ------------------------------------------------------------------------------------------ distributed


# ------------------------------------------------------------------------------------------- checkpoints


# --------------------------------------------------------------------------------------------- the loop


class PromptEmbeddings:
    """Frozen text-encoder outputs per prompt, read from the prompt cache (filled before the first step by
    `vera.train.loader.cache_prompts`, so the encoder is never run beside the model); the most recently used
    ones stay in memory up to `keep_bytes` (a public-set run has thousands of prompts)."""

    def __init__(self, text_encoder, device: torch.device, keep_bytes: int = 1 << 30):
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


def build_bundle(cfg: FitConfig, work_dir: Path, device: torch.device, fresh: bool = True):
    """The bundle training starts from, loaded for training (float32 weights that take gradients).

    {"from": "random", ...} writes a seeded bundle to work_dir/init_bundle first (vera.model.bundle.
    create_random_bundle: VeraMoT + PatchVAE + tiny text encoder), anew unless resuming (`fresh=False`); a
    folder is loaded as it is (e.g. a bundle built from a Wan2.1 conversion).
    """

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
    started = time.monotonic()  # the --max-minutes budget and wall_s count from here (this module's clock)
    run = start_run(cfg.seed, out_dir, device, resume)
    out_dir, dist, dev, existing = run.out_dir, run.dist, run.device, run.existing
    if dist.world > 1 and not dist.main:
        barrier(dist)  # rank 0 writes the initial bundle first
        bundle = build_bundle(cfg, out_dir, dev, fresh=False)
    else:
        bundle = build_bundle(cfg, out_dir, dev, fresh=not existing)
    if dist.world > 1 and dist.main:
        barrier(dist)
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
    barrier(dist)
    prompts = PromptEmbeddings(bundle.text, dev)
    # rank 0 reads the samples' headers for the buckets; the others take its answer
    layout = plan_buckets(dataset.samples, cfg.buckets, cfg.frames, cfg.width, cfg.height) if dist.main else None
    if dist.world > 1:
        layout = share_buckets(layout, dist.main, dev)
    buckets, bucket_of = layout
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
        if max_minutes is not None and clock_says_stop(started, max_minutes, dist):
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
            mean_loss = mean_across(losses[-cfg.log_every:], dist)  # every rank joins the all-reduce
            if dist.main:
                record = {"step": step, "loss": mean_loss, **{f"loss_{k}": v for k, v in parts.items()},
                          "lr": lr_at(cfg, step - 1), "grad_norm": grad_norm,
                          "elapsed_s": round(time.monotonic() - started, 2),
                          "steps_per_s": round((step - start_step) / max(1e-9, time.monotonic() - run_started), 4)}
                with open(log_path, "a") as log:
                    log.write(json.dumps(record) + "\n")
        if step % cfg.checkpoint_every == 0 and step < last_step:
            save_run_checkpoint(out_dir, step, model, optimizer, ema, cfg, dist)
    bar.close()
    del batches  # stops the workers
    save_run_checkpoint(out_dir, step, model, optimizer, ema, cfg, dist)

    summary = {"steps": step, "trained_steps": step - start_step,
               "final_loss": losses[-1] if losses else previous_final_loss(out_dir),
               "wall_s": round(time.monotonic() - started, 1), "stopped_by_clock": stopped_by_clock,
               "bundle": None}
    return finish_run(run, model.state_dict() if ema is None else ema.shadow, sharded, summary, bundle_out,
                      lambda target, state: write_bundle(cfg, base_bundle_folder(cfg, out_dir), state, target))


