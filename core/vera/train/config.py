"""A training run's settings (`vera-train fit CONFIG`): the FitConfig dataclass, checked as a whole, read from JSON
or YAML (docs/training.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from vera.errors import BadInput
from vera.model.configs import STREAMS
from vera.train.loader import configured_buckets


MASK_MODES = ("dataset", "none", "placement")


PARALLEL_MODES = ("ddp", "fsdp", "hsdp")


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
        return batch_per_process(self.batch, self.global_batch, world)

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
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
        raise BadInput(f"{path}: cannot parse config: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: config must be a mapping of keys to values")
    return FitConfig.from_dict(data, source=str(path))


def batch_per_process(batch: int, global_batch: int | None, world: int) -> int:
    """One process's batch: `batch`, or its share of `global_batch` over `world` processes (fit and distill)."""
    if global_batch is None:
        return batch
    if global_batch % world:
        raise BadInput(f"global_batch {global_batch} does not split over {world} processes")
    return global_batch // world
