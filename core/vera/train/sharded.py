"""Sharded training: FSDP2 per joint block, and checkpoints any number of processes can resume.

- `shard_model` applies torch's FSDP2 (`vera.parallel.apply_fsdp`: `fully_shard` per JointBlock and the root) on
  a DeviceMesh: 1-D (`parallel: fsdp`, shard across every process) or 2-D (`parallel: hsdp`, shard inside a
  node, replicate across nodes). Master weights, gradients and AdamW state stay float32 shards; on CUDA the
  weights are gathered in bf16 for compute and gradients reduced in float32.
- Checkpoints are written with `torch.distributed.checkpoint` through its safetensors storage
  (`HuggingFaceStorageWriter`, `save_distributed`): every rank writes its own shard files, and the reader
  re-slices them for whatever number of processes resumes (1 process loads them without a process group).
  Tensors only go into safetensors; the optimiser's non-tensor entries (param groups) and the step go into
  `state.json`. Nothing is pickled.

A checkpoint is a folder `checkpoints/step_NNNNNNNN/`, written under a `.partial` name and renamed by rank 0
once every rank has written, so a killed save never looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh

from vera.atomic import atomic_write_text
from vera.errors import BadInput
from vera.model.dit import build_on_meta
from vera.parallel import apply_fsdp, build_mesh, parallelize
from vera.plan import Strategy

SHARDED_MODES = ("fsdp", "hsdp")
STATE_FILE = "state.json"


def _options():
    """Optimiser state under flat `state.<parameter FQN>.<name>` keys: resharding-proof, process-count-proof."""
    return StateDictOptions(flatten_optimizer_state_dict=True)


def shard_model(model, parallel: str, world: int, device: torch.device, sequence_parallel: int = 1):
    """FSDP2-shard `model` in place across the process group (needs world > 1); returns the mesh. With
    `sequence_parallel` > 1 (parallel: fsdp), vera.parallel's Ulysses attention runs over groups of that many
    processes (the inference layout: vera.parallel.build_mesh), and FSDP shards over all of them."""
    param_dtype = torch.bfloat16 if device.type == "cuda" else None
    if sequence_parallel > 1:
        strategy = Strategy(devices=world, shard_weights=True, sequence_parallel=sequence_parallel)
        mesh = build_mesh(strategy, device.type)
        parallelize(model, mesh, strategy, param_dtype=param_dtype)
        return mesh
    if parallel == "hsdp":
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        if world % per_node:
            raise BadInput(f"parallel hsdp: {world} processes do not split into nodes of {per_node}")
        mesh = init_device_mesh(device.type, (world // per_node, per_node), mesh_dim_names=("replicate", "shard"))
    else:
        mesh = init_device_mesh(device.type, (world,), mesh_dim_names=("shard",))
    apply_fsdp(model, mesh, param_dtype=param_dtype, reduce_dtype=torch.float32)
    return mesh


def _tensor_state(model, optimizer, ema: dict | None) -> tuple[dict, dict]:
    """(tensors, other): the model, EMA and optimiser state under flat keys; `other` holds what is not a tensor."""
    model_state, optim_state = get_state_dict(model, optimizer, options=_options())
    tensors = {f"model.{k}": v for k, v in model_state.items()}
    tensors.update({f"optim.{k}": v for k, v in optim_state.items() if torch.is_tensor(v)})
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.items()})
    other = {k: v for k, v in optim_state.items() if not torch.is_tensor(v)}
    return tensors, other


def save(folder: Path, step: int, model, optimizer, ema: dict | None, meta: dict, *, rank: int, world: int) -> None:
    """Every rank calls this; each writes its shards, rank 0 the state file and the final rename."""
    partial = folder.with_name(folder.name + ".partial")
    if rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    _barrier(world)
    tensors, other = _tensor_state(model, optimizer, ema)
    with _single_process_quiet():
        dcp.save(tensors, storage_writer=HuggingFaceStorageWriter(str(partial), save_distributed=world > 1),
                 no_dist=world == 1)
    if rank == 0:
        atomic_write_text(partial / STATE_FILE, json.dumps(
            {"step": step, "world": world, "optimizer": other, **meta}, indent=2) + "\n")
    _barrier(world)
    if rank == 0:
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    _barrier(world)


def read_state(folder: Path) -> dict:
    path = Path(folder) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}: not a readable sharded checkpoint state ({exc})") from None


def load(folder: Path, model, optimizer, ema: dict | None, *, world: int) -> dict:
    """Restore a sharded checkpoint into `model` (sharded or not), `optimizer` and `ema`; returns its state.json."""
    state = read_state(folder)
    tensors, _ = _tensor_state(model, optimizer, ema)
    if ema is None:
        tensors = {k: v for k, v in tensors.items() if not k.startswith("ema.")}
    read_tensors(folder, tensors, world)
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    optim_state = {k[6:]: v for k, v in tensors.items() if k.startswith("optim.")}
    optim_state.update(state["optimizer"])
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state, options=_options())
    if ema is not None:
        with torch.no_grad():
            for k in ema:
                ema[k].copy_(tensors[f"ema.{k}"])
    return state


def read_tensors(folder: Path, template: dict, world: int = 1) -> dict:
    """Fill `template` (key -> tensor or DTensor of the right shape) from a sharded checkpoint; with world > 1
    every rank calls it and reads its own slices."""
    try:
        with _single_process_quiet():
            dcp.load(template, storage_reader=HuggingFaceStorageReader(str(folder)), no_dist=world == 1)
    except Exception as exc:  # noqa: BLE001 - any failure to read our own checkpoint is a damaged file
        raise BadInput(f"{folder}: cannot read sharded checkpoint ({exc})") from None
    return template


def full_state(state: dict) -> dict:
    """Whole tensors from a (possibly sharded) state dict; with DTensors every rank must call it."""
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu() for k, v in state.items()}


def plain_model(cfg, state: dict):
    """A VeraMoT holding `state` (whole tensors), for export."""
    model = build_on_meta(cfg)
    model.load_state_dict(state, assign=True)
    return model


@contextlib.contextmanager
def _single_process_quiet():
    """DCP warns that it runs in one process even when asked to (no_dist=True); one process is intended here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()
