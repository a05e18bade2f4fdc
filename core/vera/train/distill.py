"""`vera-train distill`: a few-step student of a bundle, its classifier-free guidance folded in.

Method: trajectory distillation against the teacher's guided ODE solution (the idea of Luhman & Luhman's
knowledge distillation and of progressive distillation, done in one stage). The student samples K Euler steps
on Wan's grid (vera.sampling; sigmas s_0 > ... > s_K = 0) with one forward per step and no negative branch. For
each training step, one segment i < K:

- x_i: start from seeded noise and take the student's own first i steps (no gradient), so the student learns
  from the states it will meet when it samples;
- the teacher solves the guided ODE from x_i at s_i to s_{i+1} with `teacher_steps / K` Euler sub-steps, each
  one forward of the [prompt, negative prompt] batch mixed with `guidance`, giving y;
- the target is the one velocity that lands the student there, (y - x_i) / (s_{i+1} - s_i); the loss is its
  per-stream mean squared error against the student's prediction at (x_i, s_i), weighted like `fit`.

Why this one: it is a deterministic regression onto the teacher's own sampler, so it needs no extra network
(DMD2 trains a fake-score critic beside the student, rCM a consistency model with JVPs), no adversarial or
distribution-matching loss to balance, and its loss says directly how far the student's step lands from the
teacher's. The student inherits the teacher's conditioning (the source, the mask, the prompt) unchanged, so
the matte and untouched-pixel behaviour the teacher learned carries over. The cost is the teacher's
trajectory per step, which at 4 segments is a quarter of a sampling run.

With `lora` set (the default) the student is the bundle plus low-rank adapters (vera.model.lora) and the
teacher is the same network with its adapters switched off, so distillation holds one model in memory and the
student ships as a small file; `lora: null` trains a full student beside a frozen teacher copy. Like `fit`:
DDP or FSDP2 (`parallel`), deterministic per (seed, step, sample position) so a resumed run or N processes
continue like one process, checkpoints through `fit`'s writers (sharded ones via DCP), and an export into a
bundle (vera.model.student) at the end of the run or from any checkpoint (`vera-train distill-export`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import yaml
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel

from vera.atomic import atomic_write_text
from vera.errors import BadInput
from vera.model.bundle import BUNDLE_FILE, bundle_folder, load_bundle, read_manifest
from vera.model.checkpoint import save_vera
from vera.model.configs import STREAMS
from vera.model.dit import pack_mask
from vera.model.lora import add_lora, lora_settings, save_lora
from vera.model.student import STUDENT_FILE, STUDENT_SAMPLER
from vera.progress import Progress
from vera.sampling import make_scheduler, model_input
from vera.train import sharded as sharded_checkpoints
from vera.train.data import open_dataset
from vera.train.checkpoints import block_first, load_checkpoint, save_run_checkpoint
from vera.train.config import PARALLEL_MODES, batch_per_process
from vera.train.distributed import barrier, clock_says_stop, mean_across
from vera.train.fit import PromptEmbeddings, collate, lr_at
from vera.train.masks import conditioning_mask
from vera.train.streams import rank_positions, sample_seed
from vera.train.loader import BatchPlan, cache_prompts, dataset_prompts, plan_buckets, training_batches
from vera.train.run import finish_run, start_run

RECIPE_KEYS = ("steps", "shift")


@dataclass
class DistillConfig:
    """A distillation run (JSON or YAML; every key optional). docs/training.md."""

    bundle: str = "demo"            # the teacher: a bundle folder or "demo"
    student_steps: int = 4          # K: the student's sampling steps
    shift: float | None = None      # the student's grid shift (null: the teacher bundle's)
    teacher_steps: int = 48         # the teacher's Euler steps over a whole trajectory (a multiple of K)
    guidance: float | None = None   # the teacher's classifier-free guidance (null: the bundle's)
    negative_prompt: str | None = None  # the teacher's negative prompt (null: the bundle's)
    width: int | None = None        # model resolution (null: the bundle's)
    height: int | None = None
    frames: int = 5
    steps: int = 300
    batch: int = 4                  # per process; or global_batch, split over the processes
    global_batch: int | None = None
    parallel: str = "ddp"           # ddp | fsdp | hsdp, as fit
    activation_checkpointing: bool = False
    # the student's form: LoRA adapters on the teacher (the teacher = adapters off), or null for a full copy
    lora: dict | None = field(default_factory=lambda: {"rank": 16, "alpha": 16})
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.99)
    warmup: int = 20
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema: float | None = None
    loss_weights: dict = field(default_factory=lambda: {"edit": 1.0, "alpha": 1.0, "composite": 1.0})
    mask: str = "dataset"           # the conditioning mask, as fit (the demo trained with "placement")
    placement_margin: int = 2
    placement_drop: float = 0.2
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    cache_data: bool = True
    num_workers: int = 0
    prompt_cache: str | None = None
    export_dtype: str = "float32"   # a full student's weights

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "DistillConfig":
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise BadInput(f"{source}: unknown key(s) {', '.join(unknown)}")
        cfg = cls(**data)
        cfg.betas = tuple(cfg.betas)
        problems = []
        if not 1 <= cfg.student_steps <= 8:
            problems.append("student_steps must be 1..8")
        if cfg.teacher_steps < cfg.student_steps or cfg.teacher_steps % cfg.student_steps:
            problems.append("teacher_steps must be a multiple of student_steps")
        if cfg.parallel not in PARALLEL_MODES:
            problems.append(f"parallel must be one of {', '.join(PARALLEL_MODES)}")
        if cfg.frames < 1 or (cfg.frames - 1) % 4:
            problems.append("frames must be 4k+1")
        if cfg.lora is not None:
            try:
                lora_settings(**cfg.lora)
            except TypeError as exc:
                problems.append(f"lora: {exc}")
        if set(cfg.loss_weights) - set(STREAMS):
            problems.append(f"loss_weights keys must be among {', '.join(STREAMS)}")
        if problems:
            raise BadInput(f"{source}: " + "; ".join(problems))
        return cfg

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    def batch_per_process(self, world: int) -> int:
        return batch_per_process(self.batch, self.global_batch, world)


def load_config(path: str | Path) -> DistillConfig:
    path = Path(path)
    try:
        text = path.read_text()
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any failure to read the user's file
        raise BadInput(f"{path}: cannot read the distill config ({exc})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: a distill config is a mapping of keys to values")
    return DistillConfig.from_dict(data, str(path))


# ------------------------------------------------------------------------------------------------ one step


@dataclass
class Recipe:
    """The student's grid and the teacher's guided solver, from the config and the teacher bundle."""
    sigmas: list            # s_0 .. s_K, s_K = 0
    substeps: int           # teacher Euler steps per student segment
    guidance: float
    negative_prompt: str
    shift: float

    @classmethod
    def of(cls, cfg: DistillConfig, defaults: dict) -> "Recipe":
        shift = float(defaults["shift"] if cfg.shift is None else cfg.shift)
        scheduler = make_scheduler(STUDENT_SAMPLER, shift, cfg.student_steps)
        return cls(sigmas=[float(s) for s in scheduler.sigmas], substeps=cfg.teacher_steps // cfg.student_steps,
                   guidance=float(defaults["guidance"] if cfg.guidance is None else cfg.guidance),
                   negative_prompt=defaults.get("negative_prompt", "") if cfg.negative_prompt is None
                   else cfg.negative_prompt, shift=shift)

    def entry(self, cfg: DistillConfig) -> dict:
        """What bundle.json's student entry records besides its file (vera.model.student)."""
        return {"steps": cfg.student_steps, "shift": self.shift,
                "teacher": {"steps": cfg.teacher_steps, "guidance": self.guidance, "sampler": "euler"}}


@contextlib.contextmanager
def adapters_off(model):
    """The LoRA student's teacher: the same network with every adapter switched off (peft's own switch)."""
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield model
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def velocity(model, x, cond, sigma: float, context, autocast) -> torch.Tensor:
    t = torch.full((x.shape[0],), 1000.0 * sigma, device=x.device)
    with autocast():
        return model(model_input(x, cond), t, context).float()


@torch.no_grad()
def teacher_solve(teacher, x, cond, context, negative, s_from: float, s_to: float, recipe: Recipe, autocast):
    """The teacher's guided Euler solution from x at s_from to s_to (one [prompt, negative] batch per sub-step)."""
    guided = recipe.guidance > 1.0
    both_context = torch.cat([context, negative]) if guided else context
    both_cond = torch.cat([cond, cond]) if guided else cond
    grid = np.linspace(s_from, s_to, recipe.substeps + 1)
    for a, b in zip(grid[:-1], grid[1:]):
        v = velocity(teacher, torch.cat([x, x]) if guided else x, both_cond, float(a), both_context, autocast)
        if guided:
            v_pos, v_neg = v.chunk(2)
            v = v_neg + recipe.guidance * (v_pos - v_neg)
        x = x + float(b - a) * v
    return x


def segment_of(cfg: DistillConfig, step: int) -> int:
    """The student segment a step trains (one for the whole global batch, from (seed, step))."""
    return sample_seed(cfg.seed, step, 0, 5) % cfg.student_steps


def step_noise(cfg: DistillConfig, step: int, positions: list[int], shape: tuple, device) -> torch.Tensor:
    """Each sample's starting noise from (seed, step, stream position): the same on any process count."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(sample_seed(cfg.seed, step, p, 1)))
                        for p in positions]).to(device)


def distill_loss(student, teacher, cond, context, negative, noise, segment: int, recipe: Recipe, weights: dict,
                 autocast, trained=None) -> tuple:
    """The loss of one step (module docstring); `trained` is the student as wrapped for the backward (DDP)."""
    s = recipe.sigmas
    x = noise
    with torch.no_grad():
        for j in range(segment):  # the student's own first steps
            x = x + (s[j + 1] - s[j]) * velocity(student, x, cond, s[j], context, autocast)
    with teacher() as t:
        y = teacher_solve(t, x, cond, context, negative, s[segment], s[segment + 1], recipe, autocast)
    target = (y - x) / (s[segment + 1] - s[segment])
    predicted = velocity(trained or student, x, cond, s[segment], context, autocast)
    err = (predicted - target).pow(2).mean(dim=(0, 2, 3, 4, 5))
    total = sum(weights.get(name, 1.0) * err[i] for i, name in enumerate(STREAMS))
    return total, {name: float(err[i].detach()) for i, name in enumerate(STREAMS)}


def condition(vae, batch: dict) -> torch.Tensor:
    """The conditioning the student and teacher share: source latents ++ packed user mask (as fit and render)."""
    with torch.no_grad():
        source = vae.encode(batch["source"])
        return torch.cat([source, pack_mask(batch["mask"], vae.temporal_stride, vae.spatial_stride)], 1).float()


# -------------------------------------------------------------------------------------------------- the run


def distill(cfg: DistillConfig, data_dir: str | Path, out_dir: str | Path, *, device: str = "auto",
            max_minutes: float | None = None, max_steps: int | None = None, resume: bool = True,
            bundle_out: str | Path | None = None, progress: str = "auto") -> dict:
    """Train the student; returns {steps, final_loss, wall_s, bundle}. Safe under torchrun."""
    started = time.monotonic()  # the --max-minutes budget and wall_s count from here (this module's clock)
    run = start_run(cfg.seed, out_dir, device, resume)
    out_dir, dist, dev, existing = run.out_dir, run.dist, run.device, run.existing

    defaults = read_manifest(cfg.bundle)["defaults"]
    recipe = Recipe.of(cfg, defaults)
    width, height = (int(v) for v in defaults["resolution"])
    width, height = cfg.width or width, cfg.height or height
    bundle = load_bundle(cfg.bundle, device=str(dev), cache_dir=cfg.prompt_cache or out_dir / "prompt_cache")
    model = bundle.transformer.float().requires_grad_(True).train()
    if cfg.lora is not None:
        add_lora(model, **cfg.lora)
        teacher = lambda: adapters_off(model)  # noqa: E731
    else:
        frozen = load_bundle(cfg.bundle, device=str(dev)).transformer.float().requires_grad_(False).eval()
        teacher = lambda: contextlib.nullcontext(frozen)  # noqa: E731
    model.gradient_checkpointing = cfg.activation_checkpointing
    sharded = cfg.parallel in sharded_checkpoints.SHARDED_MODES
    if sharded and dist.world > 1:
        sharded_checkpoints.shard_model(model, cfg.parallel, dist.world, dev)
        if cfg.lora is None:
            sharded_checkpoints.shard_model(frozen, cfg.parallel, dist.world, dev)
    batch_size = cfg.batch_per_process(dist.world)

    dataset = open_dataset(data_dir, width=width, height=height, frames=cfg.frames)
    if len(dataset) == 0:
        raise BadInput(f"{data_dir}: no samples to distill on")
    if dist.main:
        cache_prompts(bundle.text, sorted(set(dataset_prompts(dataset.samples)) | {recipe.negative_prompt}))
    barrier(dist)
    prompts = PromptEmbeddings(bundle.text, dev)
    buckets, bucket_of = plan_buckets(dataset.samples, None, cfg.frames, width, height)
    plan = BatchPlan(cfg.seed, buckets, bucket_of, batch_size * dist.world)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    ema = ({k: v.detach().float().clone() for k, v in model.named_parameters() if v.requires_grad}
           if cfg.ema else None)
    step = 0
    if existing and existing[-1].is_dir():
        step = sharded_checkpoints.load(existing[-1], model, optimizer, ema, world=dist.world)["step"]
    elif existing:
        step = load_checkpoint(existing[-1], model, optimizer, ema)
    if dist.main:
        atomic_write_text(out_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
    trained = model
    if dist.world > 1 and not sharded:
        trained = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast(
            "cpu", enabled=False)

    last_step = min(cfg.steps, max_steps) if max_steps is not None else cfg.steps
    losses, start_step, stopped_by_clock = [], step, False
    bar = Progress(last_step, "distill", progress if dist.main else "none")
    bar.done = step
    batches = iter(training_batches(dataset, plan, step, last_step, batch_size, dist.rank, dist.world,
                                    cfg.num_workers, keep=cfg.cache_data))
    negative = None
    while step < last_step:
        if max_minutes is not None and clock_says_stop(started, max_minutes, dist):
            stopped_by_clock = True
            break
        positions = rank_positions(step, batch_size, dist.rank, dist.world)
        items = next(batches)
        masks = [conditioning_mask(cfg, item, step, p) for item, p in zip(items, positions)]
        batch = collate(items, masks, dev)
        cond = condition(bundle.vae, batch)
        context = prompts(batch["instruction"])
        negative = prompts([recipe.negative_prompt] * len(items))
        latent_shape = (len(STREAMS), bundle.config.z_dim, *cond.shape[2:])
        noise = step_noise(cfg, step, positions, latent_shape, dev)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, step)
        loss, parts = distill_loss(model, teacher, cond, context, negative, noise, segment_of(cfg, step), recipe,
                                   cfg.loss_weights, autocast, trained)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        optimizer.step()
        if ema is not None:
            with torch.no_grad():
                for k, v in model.named_parameters():
                    if k in ema:
                        ema[k].mul_(cfg.ema).add_(v.detach().float(), alpha=1 - cfg.ema)
        step += 1
        losses.append(float(loss.detach()))
        bar.advance(1, f"loss {losses[-1]:.4f}")
        if step % cfg.log_every == 0 or step == last_step:
            mean_loss = mean_across(losses[-cfg.log_every:], dist)
            if dist.main:
                with open(out_dir / "log.jsonl", "a") as log:
                    log.write(json.dumps({"step": step, "loss": mean_loss, "segment": segment_of(cfg, step - 1),
                                          **{f"loss_{k}": v for k, v in parts.items()}, "grad_norm": grad_norm,
                                          "elapsed_s": round(time.monotonic() - started, 2)}) + "\n")
        if step % cfg.checkpoint_every == 0 and step < last_step:
            save_run_checkpoint(out_dir, step, model, optimizer, ema and _Shadow(ema), cfg, dist)
    bar.close()
    del batches
    save_run_checkpoint(out_dir, step, model, optimizer, ema and _Shadow(ema), cfg, dist)

    summary = {"steps": step, "steps_this_run": step - start_step, "final_loss": losses[-1] if losses else None,
               "wall_s": round(time.monotonic() - started, 1), "stopped_by_clock": stopped_by_clock, "bundle": None}
    return finish_run(run, model.state_dict() if ema is None else ema, sharded, summary, bundle_out,
                      lambda target, state: write_student(
                          target, state, lora=cfg.lora and lora_settings(**cfg.lora), recipe=recipe.entry(cfg),
                          base=cfg.bundle, dtype=getattr(torch, cfg.export_dtype)))


class _Shadow:
    """fit's checkpoint writer takes an EMA object with `.shadow`."""

    def __init__(self, shadow: dict):
        self.shadow = shadow


# ------------------------------------------------------------------------------------------------- export


def write_student(bundle_out: str | Path, state: dict, *, lora: dict | None, recipe: dict,
                  base: str | Path | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """Put a student into a bundle folder: `state` (whole tensors of the trained model, module names) as
    student.safetensors, then its entry into bundle.json (written last, atomically). With `base`, the folder
    is first made a copy of that bundle (unless it is that bundle). `lora`: the adapter settings (only the
    adapters are saved), or None for a full student."""
    target = Path(bundle_out)
    if base is not None and bundle_folder(base).resolve() != target.resolve():
        shutil.copytree(bundle_folder(base), target, dirs_exist_ok=True)
    manifest = json.loads((bundle_folder(target) / BUNDLE_FILE).read_text())
    if lora is not None:
        save_lora(state, lora, target / STUDENT_FILE)
    else:
        model = load_bundle(target, device="cpu").transformer.float()
        model.load_state_dict({k: v.float() for k, v in state.items()})
        save_vera(model.to(dtype), target / STUDENT_FILE)
    manifest["student"] = {"path": STUDENT_FILE, "kind": "lora" if lora is not None else "full", **recipe}
    atomic_write_text(target / BUNDLE_FILE, json.dumps(manifest, indent=2) + "\n")
    return target


def export_student(checkpoint: str | Path, out: str | Path, *, use_ema: bool = True) -> Path:
    """A bundle with the student of a distill checkpoint (a step_N/ folder or step_N.safetensors of a run)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise BadInput(f"{checkpoint}: no such checkpoint")
    run = checkpoint.parent.parent
    cfg = load_config(run / "config.json")
    group = "ema" if use_ema and cfg.ema else "model"
    recipe = Recipe.of(cfg, read_manifest(cfg.bundle)["defaults"])
    if checkpoint.is_dir():
        model = load_bundle(cfg.bundle, device="cpu").transformer.float().requires_grad_(True)
        if cfg.lora is not None:
            add_lora(model, **cfg.lora)
        held = ({k: v for k, v in model.named_parameters() if v.requires_grad} if group == "ema"
                else model.state_dict())
        tensors = sharded_checkpoints.read_tensors(checkpoint, {f"{group}.{k}": torch.empty_like(v)
                                                                for k, v in held.items()})
    else:
        tensors = {block_first(k): v for k, v in load_file(str(checkpoint)).items()}
    state = {k[len(group) + 1:]: v for k, v in tensors.items() if k.startswith(f"{group}.")}
    return write_student(out, state, lora=cfg.lora and lora_settings(**cfg.lora), recipe=recipe.entry(cfg),
                         base=cfg.bundle, dtype=getattr(torch, cfg.export_dtype))


def report(summary: dict) -> None:
    print(f"distilled {summary['steps']} steps in {summary['wall_s']} s, final loss {summary['final_loss']}; "
          f"bundle: {summary['bundle']}", file=sys.stderr)
