"""A model bundle checked the way `load_bundle` will read it, by file headers only: no tensor is read, no torch.

`bundle_problems(folder, manifest)` opens every file bundle.json names: the transformer, the LoRA adapters, the
Wan VAE folder, the text encoder with its tokenizer, and speed.json. Each goes through the regular-file check
plates get (`vera.files.regular_file`: a FIFO is refused without being opened). Of each safetensors file it
reads the 8-byte header length and the JSON header, and checks what safetensors' own loader checks before it
maps tensors (dtypes it knows, each tensor's byte range matching its shape, ranges back to back, the last one
ending at the end of the file), so a truncated, zero-byte or garbage file is caught here and not half way
through a load. Then it compares names, shapes and dtypes with the configs:

- transformer: every tensor of `transformer_shapes(config)` (a pure function of the bundle's VeraConfig, checked
  against the network built on the meta device in tests), no others; its `vera_config` metadata equal to
  bundle.json's `config`;
- LoRA: the adapter pairs its `vera_lora` metadata (rank, targets) implies, sized from the transformer's layers;
- Wan VAE: config.json with `z_dim` and latent statistics of that length; weights whose latent convolutions
  have `z_dim` channels; z_dim and strides agreeing with the transformer config;
- text encoder: config.json with the UMT5 sizes, `d_model` equal to the config's `text_dim`, every tensor of
  `umt5_encoder_shapes(config)`, and tokenizer files;
- every tensor a float dtype (F32, BF16, F16; F8_E4M3 / F8_E5M2 in a transformer only where bundle.json says
  `"fp8_storage": true`): integer weights would load and render garbage without an error.

Each problem is one line naming the file and the field. Header reads cost microseconds, so a 14B bundle is
checked as fast as the demo's (benchmarks/bundle_check_bench.py). `validate` lists the problems; `load_bundle`
raises the first as BadInput (exit 2) before it loads anything.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from vera.errors import BadInput
from vera.jsonio import read_json_object
from vera.files import regular_file
from vera.model.configs import STREAMS, VeraConfig

# Bytes per element of every dtype safetensors writes (its Dtype enum); integers are known, to be named.
DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "U64": 8,
               "I32": 4, "U32": 4, "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1}
FLOAT_DTYPES = ("F32", "BF16", "F16")
FP8_DTYPES = ("F8_E4M3", "F8_E5M2")
MAX_HEADER_BYTES = 100_000_000  # safetensors refuses a larger header (MAX_HEADER_SIZE in its Rust loader)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model")
TEXT_ENCODER_INDEX = "model.safetensors.index.json"          # transformers' name for sharded weights
VAE_WEIGHTS, VAE_INDEX = "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json"
SPEED_FILE = "speed.json"                                     # vera.presets.CALIBRATION_FILE
PARSED_JSON_BYTES = 1 << 20  # tokenizer JSON files up to this size are parsed whole


@dataclass(frozen=True)
class Header:
    """A safetensors file's header: name -> (dtype, shape), and its string metadata."""

    path: Path
    tensors: dict
    metadata: dict


def read_header(path) -> Header:
    """The header of a safetensors file, checked as safetensors checks it, without reading tensor data.
    BadInput naming the file for anything the loader would refuse or misread."""
    path = Path(path)
    size = regular_file(path).st_size
    if size < 8:
        raise BadInput(f"{path}: not a safetensors file ({size} bytes; it starts with an 8-byte header length)")
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > MAX_HEADER_BYTES:
            raise BadInput(f"{path}: not a safetensors file: its header length {length} bytes is over "
                           f"safetensors' limit of {MAX_HEADER_BYTES}")
        if length > size - 8:
            raise BadInput(f"{path}: not a safetensors file, or truncated: its header length {length} bytes is "
                           f"more than the {size - 8} bytes after it")
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadInput(f"{path}: not a safetensors file: its header is not JSON ({str(exc)[:120]})") from None
    if not isinstance(header, dict):
        raise BadInput(f"{path}: not a safetensors file: its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise BadInput(f"{path}: safetensors __metadata__ must map names to strings")
    tensors, ranges = {}, []
    for name, entry in header.items():
        tensors[name] = _tensor_entry(path, name, entry, ranges)
    end = 0
    for begin, stop, name in sorted(ranges):
        if begin != end:
            raise BadInput(f"{path}: tensor {name}: its data starts at byte {begin} of the data, not {end} "
                           "(safetensors stores tensors back to back)")
        end = stop
    data = size - 8 - length
    if data != end:
        what = "truncated" if data < end else "has trailing bytes"
        raise BadInput(f"{path}: {what}: the header describes {end} bytes of tensor data, the file holds {data}")
    return Header(path, tensors, metadata)


def _tensor_entry(path: Path, name: str, entry, ranges: list) -> tuple[str, tuple[int, ...]]:
    where = f"{path}: tensor {name}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise BadInput(f"{where}: a header entry needs exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_SIZES:
        raise BadInput(f"{where}: unknown dtype {str(dtype)[:20]!r}")
    if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)):
        raise BadInput(f"{where}: shape must be a list of sizes, got {str(shape)[:60]}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(n) is int for n in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise BadInput(f"{where}: data_offsets must be [begin, end], got {str(offsets)[:60]}")
    if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_SIZES[dtype]:
        raise BadInput(f"{where}: {offsets[1] - offsets[0]} bytes of data for a {dtype} tensor of shape {shape}")
    ranges.append((offsets[0], offsets[1], name))
    return dtype, tuple(shape)


def compare_tensors(header: Header, expected: dict, allowed=FLOAT_DTYPES, optional=()) -> list[str]:
    """Missing, unexpected (unless `optional` is None: then ignored) and misshapen tensors, and dtypes outside
    `allowed`, one line per kind naming the file and the first few tensors."""
    found = header.tensors
    problems = []
    missing = [k for k in expected if k not in found and k not in (optional or ())]
    if missing:
        problems.append(f"missing tensor(s) {_few(missing)}")
    if optional is not None:
        unexpected = [k for k in found if k not in expected]
        if unexpected:
            problems.append(f"unexpected tensor(s) {_few(unexpected)}")
    wrong = [f"{k} {list(found[k][1])} (expected {list(expected[k])})" for k in expected
             if k in found and found[k][1] != tuple(expected[k])]
    if wrong:
        problems.append(f"wrong shape: {_few(wrong)}")
    bad = [f"{k} {found[k][0]}" for k in found if found[k][0] not in allowed]
    if bad:
        problems.append(f"dtype not allowed (weights must be {' / '.join(allowed)}): {_few(bad)}")
    return [f"{header.path}: {p}" for p in problems]


def _few(items: list[str], shown: int = 3) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


# ------------------------------------------------------------------------------------- expected tensors

def transformer_shapes(cfg: VeraConfig) -> dict:
    """Every tensor of a Vera checkpoint file (stream-first names, vera.model.dit.file_state_dict) -> shape."""
    d, f = cfg.dim, cfg.ffn_dim
    shapes = {}
    for s in STREAMS:
        shapes.update({
            f"{s}.patch_embedding.weight": (d, cfg.in_dim, *cfg.patch_size), f"{s}.patch_embedding.bias": (d,),
            f"{s}.text_embedding.0.weight": (d, cfg.text_dim), f"{s}.text_embedding.0.bias": (d,),
            f"{s}.text_embedding.2.weight": (d, d), f"{s}.text_embedding.2.bias": (d,),
            f"{s}.time_embedding.0.weight": (d, cfg.freq_dim), f"{s}.time_embedding.0.bias": (d,),
            f"{s}.time_embedding.2.weight": (d, d), f"{s}.time_embedding.2.bias": (d,),
            f"{s}.time_projection.1.weight": (6 * d, d), f"{s}.time_projection.1.bias": (6 * d,),
            f"{s}.head.head.weight": (cfg.out_dim * math.prod(cfg.patch_size), d),
            f"{s}.head.head.bias": (cfg.out_dim * math.prod(cfg.patch_size),), f"{s}.head.modulation": (1, 2, d),
        })
        for i in range(cfg.num_layers):
            block = f"{s}.blocks.{i}."
            for attn in ("self_attn", "cross_attn"):
                for proj in "qkvo":
                    shapes.update({f"{block}{attn}.{proj}.weight": (d, d), f"{block}{attn}.{proj}.bias": (d,)})
                if cfg.qk_norm:
                    shapes.update({f"{block}{attn}.norm_q.weight": (d,), f"{block}{attn}.norm_k.weight": (d,)})
            if cfg.cross_attn_norm:
                shapes.update({f"{block}norm3.weight": (d,), f"{block}norm3.bias": (d,)})
            shapes.update({f"{block}ffn.0.weight": (f, d), f"{block}ffn.0.bias": (f,),
                           f"{block}ffn.2.weight": (d, f), f"{block}ffn.2.bias": (d,),
                           f"{block}modulation": (1, 6, d)})
    return shapes


def lora_shapes(cfg: VeraConfig, rank: int, targets) -> dict:
    """The adapter tensors vera.model.lora.save_lora writes for these settings -> shape (A: rank x in,
    B: out x rank, for each target layer of each stream's block at each depth)."""
    base = transformer_shapes(cfg)
    shapes = {}
    for s in STREAMS:
        for i in range(cfg.num_layers):
            for target in targets:
                out_features, in_features = base[f"{s}.blocks.{i}.{target}.weight"]
                name = f"{s}.blocks.{i}.{target}"
                shapes[f"{name}.lora_A.weight"] = (rank, in_features)
                shapes[f"{name}.lora_B.weight"] = (out_features, rank)
    return shapes


UMT5_FIELDS = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "relative_attention_num_buckets")


def umt5_encoder_shapes(config: dict) -> dict:
    """Every tensor transformers' UMT5EncoderModel loads for a config.json (as its save_pretrained writes it:
    `encoder.embed_tokens.weight` is tied to `shared.weight` and left out) -> shape."""
    v, d, kv, ff, layers, heads, buckets = (config[k] for k in UMT5_FIELDS)
    inner = heads * kv
    gated = str(config.get("feed_forward_proj", "gated-gelu")).startswith("gated-")
    shapes = {"shared.weight": (v, d), "encoder.final_layer_norm.weight": (d,)}
    for i in range(layers):
        attn, ffn = f"encoder.block.{i}.layer.0.", f"encoder.block.{i}.layer.1."
        shapes.update({f"{attn}SelfAttention.{p}.weight": (inner, d) for p in "qkv"})
        shapes.update({f"{attn}SelfAttention.o.weight": (d, inner),
                       f"{attn}SelfAttention.relative_attention_bias.weight": (buckets, heads),  # every layer: UMT5
                       f"{attn}layer_norm.weight": (d,), f"{ffn}layer_norm.weight": (d,),
                       f"{ffn}DenseReluDense.wo.weight": (d, ff)})
        shapes.update({f"{ffn}DenseReluDense.{w}.weight": (ff, d) for w in (("wi_0", "wi_1") if gated else ("wi",))})
    return shapes


# ------------------------------------------------------------------------------------------- the check

def inside(folder: Path, relative: str) -> Path:
    """A path bundle.json names: relative to the bundle folder, or absolute (a shared VAE or encoder)."""
    path = Path(relative)
    return path if path.is_absolute() else Path(folder) / path


def bundle_problems(folder, manifest: dict) -> list[str]:
    """Every problem of the files a bundle names (manifest: vera.model.bundle.read_manifest's, already checked
    against its schema), one line each; [] when `load_bundle` will find what it expects."""
    folder = Path(folder)
    cfg = VeraConfig.from_dict(manifest["config"])
    problems = []
    for check in (_transformer_problems, _lora_problems, _vae_problems, _text_encoder_problems, _speed_problems):
        try:
            problems += check(folder, manifest, cfg)
        except BadInput as exc:
            problems.append(str(exc))
    return problems


def check_bundle(folder, manifest: dict) -> None:
    """BadInput (exit 2) with the first problem of `bundle_problems`, before anything is loaded."""
    problems = bundle_problems(folder, manifest)
    if problems:  # one line: the first few problems, all of them with `vera-render validate`
        more = f" (and {len(problems) - 3} more: `vera-render validate` lists them)" if len(problems) > 3 else ""
        raise BadInput("; ".join(problems[:3]) + more)


def _transformer_problems(folder: Path, manifest: dict, cfg: VeraConfig) -> list[str]:
    header = read_header(inside(folder, manifest["transformer"]))
    path = header.path
    if "vera_config" not in header.metadata:
        return [f"{path}: not a Vera checkpoint (no vera_config in the safetensors metadata)"]
    try:
        stored = VeraConfig.from_dict(json.loads(header.metadata["vera_config"]))
    except (ValueError, RecursionError) as exc:
        return [f"{path}: metadata vera_config is not a Vera config ({str(exc)[:160]})"]
    problems = []
    if stored != cfg:
        fields = [f"{k} {v} (weights) vs {getattr(cfg, k)}" for k, v in stored.to_dict().items()
                  if v != cfg.to_dict()[k]]
        problems.append(f"{path}: the weights' config differs from bundle.json's config: {_few(fields)}")
    allowed = FLOAT_DTYPES + FP8_DTYPES if manifest.get("fp8_storage") is True else FLOAT_DTYPES
    return problems + compare_tensors(header, transformer_shapes(stored), allowed)


def _lora_problems(folder: Path, manifest: dict, cfg: VeraConfig) -> list[str]:
    """Each LoRA entry (one, or a list: vera.model.wan_lora): a Vera LoRA (metadata vera_lora) is compared tensor
    by tensor with the config; a Wan2.1 ecosystem LoRA (diffusers, kohya/ComfyUI, musubi keys) by header and
    dtypes here, and its keys when it is merged (keys matching nothing are refused there)."""
    entries = manifest.get("lora") or []
    problems = []
    for entry in [entries] if isinstance(entries, dict) else entries:
        header = read_header(inside(folder, entry["path"]))
        if "vera_lora" in header.metadata:
            problems += _vera_lora_problems(header, cfg)
        else:
            problems += compare_tensors(header, {}, optional=None)
    student = manifest.get("student")
    if student:  # the distilled student of speed turbo (vera.model.student): a Vera LoRA or a whole transformer
        header = read_header(inside(folder, student["path"]))
        if student.get("kind") == "full":
            problems += compare_tensors(header, transformer_shapes(cfg))
        else:
            problems += _vera_lora_problems(header, cfg)
    return problems


def _vera_lora_problems(header: Header, cfg: VeraConfig) -> list[str]:
    try:
        settings = json.loads(header.metadata["vera_lora"])
        rank, alpha, targets = settings["rank"], settings["alpha"], settings["targets"]
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        return [f"{header.path}: not a Vera LoRA file (metadata vera_lora with rank, alpha and targets: "
                f"{type(exc).__name__} {str(exc)[:80]})"]
    if type(rank) is not int or rank < 1 or type(alpha) not in (int, float) or not isinstance(targets, list):
        return [f"{header.path}: metadata vera_lora: rank must be a positive integer, alpha a number and "
                "targets a list"]
    base = transformer_shapes(cfg)  # a target is a Linear layer of a block: a 2-D weight
    unknown = [str(t) for t in targets if len(base.get(f"{STREAMS[0]}.blocks.0.{t}.weight", ())) != 2]
    if unknown:
        return [f"{header.path}: metadata vera_lora: unknown target layer(s) {_few(unknown)}"]
    return compare_tensors(header, lora_shapes(cfg, rank, targets))


def _vae_problems(folder: Path, manifest: dict, cfg: VeraConfig) -> list[str]:
    vae = manifest["vae"]
    if vae["type"] == "patch":
        z_dim, temporal, spatial = 3 * vae["patch"] ** 2, 1, vae["patch"]
        return _compatible(folder, manifest, cfg, z_dim, temporal, spatial)
    vae_folder = inside(folder, vae["path"])
    config_path, config = _part_config(vae_folder, "diffusers VAE config")
    if config is None:
        return [f"{vae_folder}: the Wan VAE folder bundle.json names (vae.path) is missing"]
    z_dim = config.get("z_dim")
    if type(z_dim) is not int or z_dim < 1:
        return [f"{config_path}: field z_dim: must be a positive integer, got {str(z_dim)[:40]}"]
    problems = []
    for key in ("latents_mean", "latents_std"):
        value = config.get(key)
        if not (isinstance(value, list) and len(value) == z_dim and all(type(x) in (int, float) for x in value)):
            problems.append(f"{config_path}: field {key}: must be {z_dim} numbers (one per latent channel)")
    strides = {}
    for key, default in (("scale_factor_temporal", 4), ("scale_factor_spatial", 8)):  # WanVAE's defaults
        strides[key] = config.get(key) or default
        if type(strides[key]) is not int or strides[key] < 1:
            problems.append(f"{config_path}: field {key}: must be a positive integer")
    # the convolutions around the latent: their channels are z_dim (diffusers' AutoencoderKLWan)
    expected = {"quant_conv.weight": (2 * z_dim, 2 * z_dim, 1, 1, 1), "post_quant_conv.weight": (z_dim, z_dim, 1, 1, 1)}
    problems += compare_tensors(_merged(_weight_headers(vae_folder, VAE_INDEX, VAE_WEIGHTS), vae_folder),
                                expected, optional=None)
    if not problems:
        problems = _compatible(folder, manifest, cfg, z_dim, strides["scale_factor_temporal"],
                               strides["scale_factor_spatial"])
    return problems


def _part_config(part: Path, what: str) -> tuple[Path, dict | None]:
    """The config.json of a part's folder (the VAE's, the text encoder's) and what it holds; None when the folder
    is missing."""
    config_path = part / "config.json"
    if not part.is_dir():
        return config_path, None
    regular_file(config_path)
    return config_path, read_json_object(config_path, what)


def _compatible(folder: Path, manifest: dict, cfg: VeraConfig, z_dim: int, temporal: int, spatial: int):
    """What load_bundle checks of the VAE against the config and defaults (vera.model.bundle._check_compatible)."""
    where = folder / "bundle.json"
    problems = []
    if cfg.z_dim != z_dim:
        problems.append(f"{where}: config z_dim {cfg.z_dim} != VAE z_dim {z_dim}")
    if cfg.mask_channels != temporal:
        problems.append(f"{where}: config mask_channels {cfg.mask_channels} != VAE temporal stride {temporal}")
    width, height = manifest["defaults"]["resolution"]
    step = spatial * cfg.patch_size[1]
    if width % step or height % step:
        problems.append(f"{where}: defaults.resolution {width}x{height} is not a multiple of {step} "
                        "(VAE stride x patch)")
    window = manifest["defaults"].get("window")
    if window is not None and (int(window) - 1) % 4:
        problems.append(f"{where}: defaults.window {window} is not 4k+1")
    return problems


def _weight_headers(folder: Path, index_name: str, default_name: str) -> list[Header]:
    """The headers of a model folder's safetensors weights: the shards its index names, else its files."""
    index = folder / index_name
    if index.exists():
        regular_file(index)
        weight_map = read_json_object(index, "safetensors index").get("weight_map")
        if not (isinstance(weight_map, dict) and weight_map and all(isinstance(v, str) for v in weight_map.values())):
            raise BadInput(f"{index}: field weight_map: must map tensor names to shard files")
        headers = [read_header(folder / name) for name in dict.fromkeys(weight_map.values())]
        held = {name: h for h in headers for name in h.tensors}
        absent = [name for name, shard in weight_map.items() if held.get(name) is None or held[name].path.name != shard]
        if absent:
            raise BadInput(f"{index}: tensor(s) not in the shard it names: {_few(absent)}")
        return headers
    files = sorted(folder.glob("*.safetensors")) or [folder / default_name]  # none: "file not found" names it
    return [read_header(path) for path in files]


def _merged(headers: list[Header], folder: Path) -> Header:
    """One header for a model's weights in several files (named by the folder), or the one file's."""
    if len(headers) == 1:
        return headers[0]
    return Header(folder, {k: v for h in headers for k, v in h.tensors.items()}, {})


def find_tokenizer_folder(folder: Path) -> Path:
    """Where a text encoder's tokenizer lives: beside it, in tokenizer/, or (a diffusers Wan checkout) in the
    encoder's sibling tokenizer/ folder."""
    for candidate in (folder, folder / "tokenizer", folder.parent / "tokenizer"):
        if any((candidate / name).is_file() for name in TOKENIZER_FILES):
            return candidate
    raise BadInput(f"{folder}: no tokenizer files ({', '.join(TOKENIZER_FILES)}) here or in a tokenizer/ folder")


def _text_encoder_problems(folder: Path, manifest: dict, cfg: VeraConfig) -> list[str]:
    encoder = inside(folder, manifest["text_encoder"])
    config_path, config = _part_config(encoder, "text encoder config")
    if config is None:
        return [f"{encoder}: the text encoder folder bundle.json names (text_encoder) is missing"]
    bad = [k for k in UMT5_FIELDS if type(config.get(k)) is not int or config[k] < 1]
    if bad:
        return [f"{config_path}: field {k}: must be a positive integer, got {str(config.get(k))[:40]}" for k in bad]
    problems = []
    if config["d_model"] != cfg.text_dim:
        problems.append(f"{config_path}: field d_model: {config['d_model']} != the transformer config's text_dim "
                        f"{cfg.text_dim}")
    tokenizer = find_tokenizer_folder(encoder)
    for name in TOKENIZER_FILES:
        path = tokenizer / name
        if path.exists() or path.is_symlink():
            if regular_file(path).st_size == 0:
                problems.append(f"{path}: empty tokenizer file")
            elif path.suffix == ".json":
                problems += _json_problems(path, "tokenizer file")
    headers = _weight_headers(encoder, TEXT_ENCODER_INDEX, "model.safetensors")
    return problems + compare_tensors(_merged(headers, encoder), umt5_encoder_shapes(config), optional=None)


def _json_problems(path: Path, what: str) -> list[str]:
    """A small JSON file is parsed; a large one (umT5's tokenizer.json: 16 MB, seconds to parse in Python) must
    start with "{" and end with "}", which a truncated one does not; its tokenizer parses it at load."""
    size = path.stat().st_size
    if size <= PARSED_JSON_BYTES:
        read_json_object(path, what)
        return []
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
        f.seek(size - 64)
        tail = f.read().rstrip()
    if not (head.startswith(b"{") and tail.endswith(b"}")):
        return [f"{path}: not a valid {what} (a JSON object starts with {{ and ends with }}: truncated?)"]
    return []


def _speed_problems(folder: Path, manifest: dict, cfg: VeraConfig) -> list[str]:
    path = folder / SPEED_FILE
    if path.exists() or path.is_symlink():
        read_speed_file(path)
    return []


def read_speed_file(path) -> dict:
    """A bundle's speed.json (vera.presets' calibration: {"curve": [[timestep, log magnitude], ...], ...})."""
    regular_file(path)
    data = read_json_object(path, "speed calibration")
    curve = data.get("curve")
    if not (isinstance(curve, list) and len(curve) >= 2 and all(
            isinstance(p, list) and len(p) == 2 and all(type(x) in (int, float) and math.isfinite(x) for x in p)
            for p in curve)):
        raise BadInput(f"{path}: field curve: must be a list of at least two [timestep, log magnitude] pairs")
    return data
