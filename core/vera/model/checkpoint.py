"""Vera checkpoints (safetensors + config JSON) and the Wan2.1 -> Vera conversion.

A Vera checkpoint is `NAME.safetensors` holding every stream's tensors under our key names
(`edit.blocks.0.self_attn.q.weight`, ... = the stream name + Wan2.1's original key), with the configuration
stored twice: as JSON in the safetensors header metadata (`vera_config`, so the one file is self-contained) and
beside it as `NAME.json` (for people and tools). Loading reads the metadata; it never unpickles anything.

`convert_wan` reads a Wan2.1 T2V transformer checkpoint in Wan's original key names or diffusers' names, one
file or shards with an index JSON (`.pth` only here, read with `torch.load(weights_only=True)`), and copies it
into all three streams, with the conditioning input channels zero (docs/model.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vera.atomic import atomic_path, atomic_write_text
from vera.errors import BadInput
from vera.model.configs import CONFIGS, STREAMS, VeraConfig
from vera.model.dit import VeraMoT, build_on_meta, file_state_dict

FORMAT = "vera-mot-1"

# --------------------------------------------------------------------------------------------- key names

# Wan2.1's original names (ours, inside a stream) <-> diffusers' WanTransformer3DModel names. `{n}` is a block
# index. A name ending in "." is a module prefix (the rest of the key, `weight`/`bias`, is kept); any other
# name is a whole key.
_ATTENTION = [("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"), ("norm_q", "norm_q"),
              ("norm_k", "norm_k")]
KEY_PAIRS = [
    ("patch_embedding.", "patch_embedding."),
    ("time_embedding.0.", "condition_embedder.time_embedder.linear_1."),
    ("time_embedding.2.", "condition_embedder.time_embedder.linear_2."),
    ("text_embedding.0.", "condition_embedder.text_embedder.linear_1."),
    ("text_embedding.2.", "condition_embedder.text_embedder.linear_2."),
    ("time_projection.1.", "condition_embedder.time_proj."),
    *[(f"blocks.{{n}}.{wan_attn}.{wan}.", f"blocks.{{n}}.{diff_attn}.{diff}.")
      for wan_attn, diff_attn in (("self_attn", "attn1"), ("cross_attn", "attn2")) for wan, diff in _ATTENTION],
    ("blocks.{n}.norm3.", "blocks.{n}.norm2."),  # the cross-attention's affine norm: norm3 in Wan, norm2 there
    ("blocks.{n}.ffn.0.", "blocks.{n}.ffn.net.0.proj."),
    ("blocks.{n}.ffn.2.", "blocks.{n}.ffn.net.2."),
    ("blocks.{n}.modulation", "blocks.{n}.scale_shift_table"),
    ("head.head.", "proj_out."),
    ("head.modulation", "scale_shift_table"),
]


def _pattern(template: str) -> re.Pattern:
    body = re.escape(template).replace(re.escape("{n}"), r"(?P<n>\d+)")
    return re.compile(body if template.endswith(".") else body + "$")


_TO_DIFFUSERS = [(_pattern(wan), diffusers) for wan, diffusers in KEY_PAIRS]
_TO_WAN = [(_pattern(diffusers), wan) for wan, diffusers in KEY_PAIRS]


def _rename(key: str, table) -> str | None:
    for pattern, template in table:
        match = pattern.match(key)
        if match:
            return template.replace("{n}", match.groupdict().get("n") or "") + key[match.end():]
    return None


def wan_key_to_diffusers(key: str) -> str | None:
    """One stream key in Wan2.1's original naming (= ours without the stream prefix) -> diffusers' name.

    None when the key is not part of a Wan2.1 T2V transformer (e.g. I2V's image embedder).
    """
    return _rename(key, _TO_DIFFUSERS)


def diffusers_key_to_wan(key: str) -> str | None:
    """diffusers' WanTransformer3DModel key -> Wan2.1's original name (None when it is not a T2V key)."""
    return _rename(key, _TO_WAN)


def stream_state_from_diffusers(state: dict) -> dict:
    """A diffusers WanTransformer3DModel state dict -> one stream's state dict in our names (unknown keys kept
    under their own names so the loader reports them)."""
    return {diffusers_key_to_wan(k) or k: v for k, v in state.items()}


# ------------------------------------------------------------------------------------------- safetensors


def _config_from_metadata(path: Path, metadata: dict | None) -> VeraConfig:
    if not metadata or "vera_config" not in metadata:
        raise BadInput(f"{path}: not a Vera checkpoint (no vera_config in the safetensors metadata)")
    try:
        data = json.loads(metadata["vera_config"])
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: vera_config metadata is not JSON ({exc})") from None
    try:
        return VeraConfig.from_dict(data)
    except BadInput as exc:
        raise BadInput(f"{path}: {exc}") from None


def read_config(path: str | Path) -> VeraConfig:
    """The configuration of a Vera checkpoint, from its safetensors header (no tensor is read)."""
    path = Path(path)
    with _open_safetensors(path) as f:
        return _config_from_metadata(path, f.metadata())


def _open_safetensors(path: Path):
    if not path.is_file():
        raise BadInput(f"{path}: no such checkpoint file")
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise BadInput(f"{path}: not a readable safetensors file ({exc})") from None


def save_vera(model: VeraMoT, path: str | Path, extra_metadata: dict | None = None) -> Path:
    """Write `path` (.safetensors, config in its metadata) and the config beside it as `.json`; both atomic."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise BadInput(f"{path}: a Vera checkpoint must end in .safetensors")
    config_json = json.dumps(model.cfg.to_dict(), sort_keys=True)
    metadata = {"format": FORMAT, "vera_config": config_json, **(extra_metadata or {})}
    state = {k: v.detach().contiguous() for k, v in file_state_dict(model).items()}
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata=metadata)
    atomic_write_text(path.with_suffix(".json"), json.dumps(model.cfg.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def load_vera(path: str | Path, device="cpu", dtype: torch.dtype | str = torch.float32) -> VeraMoT:
    """A VeraMoT in eval mode from a Vera checkpoint (safetensors only; the config comes from its metadata).

    On a GPU use dtype=torch.bfloat16: norms, modulation and the time embedding still compute in float32.
    """
    path = Path(path)
    device = torch.device(device)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    with _open_safetensors(path) as f:
        cfg = _config_from_metadata(path, f.metadata())
        model = build_on_meta(cfg)
        _check_state(path, _shapes(model), {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()})
        # One tensor at a time straight to its device and dtype: peak host memory is one tensor, not the model.
        state = {key: f.get_tensor(key).to(device=device, dtype=dtype) for key in f.keys()}
    model.load_state_dict(state, assign=True)
    return model.eval()


def _shapes(model: VeraMoT) -> dict:
    """Key -> shape in the file's (stream-first) key names."""
    return {k: tuple(v.shape) for k, v in file_state_dict(model).items()}


def _stream_shapes(cfg: VeraConfig) -> dict:
    """One stream's keys (Wan2.1's original names) -> shapes."""
    prefix = f"{STREAMS[0]}."
    return {k[len(prefix):]: v for k, v in _shapes(build_on_meta(cfg)).items() if k.startswith(prefix)}


def _check_state(source, expected: dict, found: dict, renamed: dict | None = None) -> None:
    """Missing, unexpected and wrongly shaped keys (expected, found: name -> shape), all named in one BadInput."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(found) & set(expected) if tuple(found[k]) != tuple(expected[k]))
    if not (missing or unexpected or wrong):
        return
    name = (lambda k: (renamed or {}).get(k, k))
    problems = []
    if missing:
        problems.append("missing " + ", ".join(name(k) for k in missing))
    if unexpected:
        problems.append("unexpected " + ", ".join(name(k) for k in unexpected))
    if wrong:
        problems.append("wrong shape " + ", ".join(
            f"{name(k)} {list(found[k])} (expected {list(expected[k])})" for k in wrong))
    raise BadInput(f"{source}: " + "; ".join(problems))


# ------------------------------------------------------------------------------------------ Wan2.1 source

_PREFIXES = ("model.diffusion_model.", "module.", "model.")  # wrappers some tools put around the keys


def _wan_files(source: Path) -> list[Path]:
    """The weight files of a Wan2.1 checkpoint: one file, a sharded set via its index JSON, or a folder of them."""
    if source.is_file():
        if source.name.endswith(".index.json"):
            return _shards_from_index(source)
        return [source]
    if not source.is_dir():
        raise BadInput(f"{source}: no such file or folder")
    indexes = sorted(source.glob("*.safetensors.index.json")) or sorted(source.glob("*.index.json"))
    if len(indexes) > 1:
        raise BadInput(f"{source}: several index files ({', '.join(p.name for p in indexes)}); pass one of them")
    if indexes:
        return _shards_from_index(indexes[0])
    files = sorted(source.glob("*.safetensors")) or sorted(source.glob("*.pth"))
    if not files:
        raise BadInput(f"{source}: no .safetensors, .pth or index JSON in this folder")
    if len(files) > 1:
        raise BadInput(f"{source}: several weight files and no index JSON; pass the file to convert")
    return files


def _shards_from_index(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{index}: not a checkpoint index (needs a weight_map): {exc}") from None
    shards = [index.parent / name for name in dict.fromkeys(weight_map.values())]
    absent = [str(p) for p in shards if not p.is_file()]
    if absent:
        raise BadInput(f"{index}: shard(s) not found: {', '.join(absent)}")
    return shards


def _read_weights(path: Path) -> dict:
    if path.suffix == ".pth" or path.suffix == ".pt":
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
        except Exception as exc:  # noqa: BLE001 - any failure here is a bad file
            raise BadInput(f"{path}: cannot read as a weights-only torch file ({exc})") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise BadInput(f"{path}: expected a flat dict of tensors")
        return state
    if path.suffix != ".safetensors":
        raise BadInput(f"{path}: unsupported weight file (use .safetensors, or .pth for conversion only)")
    with _open_safetensors(path) as f:
        return {key: f.get_tensor(key) for key in f.keys()}


def read_wan_state(source: str | Path) -> tuple[dict, dict]:
    """Wan2.1 transformer weights in Wan's ORIGINAL key names, whichever layout the source uses.

    Returns (state, source_names): source_names maps each of our names to the name used in the source files
    (and, for a diffusers source, every expected name to its diffusers spelling), for error messages.
    """
    source = Path(source)
    state: dict = {}
    stored_as: dict = {}
    for path in _wan_files(source):
        for stored_key, value in _read_weights(path).items():
            key = stored_key
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    break
            state[key] = value
            stored_as[key] = stored_key
    if any(k.startswith(("condition_embedder.", "proj_out.")) or ".attn1." in k for k in state):
        # diffusers layout; keys that are not T2V (e.g. I2V's image embedder) keep their names and are reported.
        renamed = {diffusers_key_to_wan(k) or k: k for k in state}
        return ({ours: state[theirs] for ours, theirs in renamed.items()},
                _DiffusersNames({ours: stored_as[theirs] for ours, theirs in renamed.items()}))
    return state, stored_as


class _DiffusersNames(dict):
    """Our name -> the diffusers name (for keys the source lacks, the name it should have had)."""

    def get(self, key, default=None):
        return super().get(key) or wan_key_to_diffusers(key) or default


def _source_config_json(source: Path) -> dict:
    """The config.json shipped beside Wan2.1 weights (Wan's own or diffusers'), or {} when there is none."""
    folder = source if source.is_dir() else source.parent
    path = folder / "config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}: unreadable config ({exc})") from None
    return data if isinstance(data, dict) else {}


def infer_wan_config(state: dict, source_config: dict | None = None) -> VeraConfig:
    """The configuration whose stream sizes match a Wan2.1 state dict (in Wan's original names).

    A named configuration when one matches; otherwise one built from the weights' sizes and the head count in
    the source's config.json (`num_heads` in Wan's, `num_attention_heads` in diffusers').
    """
    source_config = source_config or {}
    try:
        patch = state["patch_embedding.weight"]
        sizes = {
            "dim": patch.shape[0],
            "z_dim": patch.shape[1],
            "patch_size": tuple(patch.shape[2:]),
            "ffn_dim": state["blocks.0.ffn.0.weight"].shape[0],
            "text_dim": state["text_embedding.0.weight"].shape[1],
            "freq_dim": state["time_embedding.0.weight"].shape[1],
            "num_layers": 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks.")),
        }
    except (KeyError, IndexError, ValueError):
        raise BadInput("cannot infer the model size from these weights; pass --config") from None
    heads = source_config.get("num_heads") or source_config.get("num_attention_heads")
    for cfg in CONFIGS.values():
        if all(getattr(cfg, key) == value for key, value in sizes.items()) and heads in (None, cfg.num_heads):
            return cfg
    described = ", ".join(f"{k} {v}" for k, v in sizes.items())
    if not heads:
        raise BadInput(f"no named config has {described}, and no config.json gives the head count; pass --config")
    extra = {key: source_config[key] for key in ("eps", "text_len") if key in source_config}
    return VeraConfig(num_heads=int(heads), **sizes, **extra)


def convert_wan(source: str | Path, config: VeraConfig | None = None) -> VeraMoT:
    """A Vera model (on the CPU, in the source's dtype) whose three streams are copies of a Wan2.1 T2V DiT."""
    source = Path(source)
    wan, source_names = read_wan_state(source)
    cfg = config or infer_wan_config(wan, _source_config_json(source))
    expected = _stream_shapes(cfg)
    target = expected["patch_embedding.weight"]
    expected_wan = {**expected, "patch_embedding.weight": (target[0], cfg.z_dim, *target[2:])}
    _check_state(source, expected_wan, {k: tuple(v.shape) for k, v in wan.items()}, source_names)
    # Wan reads z_dim input channels; the conditioning channels are ours and start at zero.
    patch = wan["patch_embedding.weight"]
    wan["patch_embedding.weight"] = torch.cat([patch, patch.new_zeros(target[0], cfg.in_dim - cfg.z_dim,
                                                                      *target[2:])], dim=1)
    model = build_on_meta(cfg)
    state = {f"{name}.{key}": value.clone() if i else value for i, name in enumerate(STREAMS)
             for key, value in wan.items()}
    model.load_state_dict(state, assign=True)
    return model.eval()
