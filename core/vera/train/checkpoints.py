"""Training checkpoints: safetensors (model, optimiser, EMA, RNG states) plus JSON metadata, never pickle; one
file per step from one process, or a sharded step folder (vera.train.sharded) from FSDP2 ranks.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from vera.atomic import atomic_path
from vera.errors import BadInput
from vera.model.configs import STREAMS
from vera.model.dit import block_first_key, stream_first_key
import torch.distributed as tdist
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vera.train import sharded as sharded_checkpoints
from vera.train.config import FitConfig
from vera.train.distributed import Dist


CHECKPOINT_PREFIX = "step_"


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


def block_first(key: str) -> str:
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
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["vera_fit"])
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise BadInput(f"{path}: not a readable training checkpoint ({exc})") from None
    # checkpoints written before the joint-block restructure hold stream-first model/EMA keys, and their
    # optimiser state follows that model's parameter order
    legacy = any(k.startswith(f"model.{STREAMS[0]}.blocks.") for k in tensors)
    tensors = {block_first(k): v for k, v in tensors.items()}
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


def save_run_checkpoint(out_dir: Path, step: int, model, optimizer, ema, cfg: FitConfig, dist: Dist) -> None:
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
        tdist.barrier()
