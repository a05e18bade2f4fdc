"""A model bundle: one folder holding everything a render needs, described by `bundle.json`.

    bundle.json         {"config": <VeraConfig dict>, "transformer": "transformer.safetensors",
                         "vae": {"type": "wan", "path": "vae"} | {"type": "patch", "patch": 4},
                         "text_encoder": "text_encoder",
                         "defaults": {"resolution": [w, h], "window": 49, "steps": 50, "guidance": 5.0,
                                      "shift": 5.0, "sampler": "unipc", "negative_prompt": ""}}
    transformer.safetensors   the three-stream VeraMoT weights
    vae/                      diffusers AutoencoderKLWan folder (only for "wan")
    text_encoder/             UMT5 encoder + tokenizer (transformers folder)
    lora.safetensors          optional: LoRA adapters (vera.model.lora), named by "lora": {"path": ..., "scale": 1.0}
                              or a list [{"path", "streams", "scale"}] of those and Wan2.1 LoRAs (vera.model.wan_lora)
    student.safetensors       optional: the distilled few-step student of speed turbo (vera.model.student)
                              in bundle.json and merged into the transformer at load

`load_bundle("demo")` loads the model embedded in the package (core/vera/assets/demo). Paths inside bundle.json
are relative to the bundle folder (absolute ones are allowed, e.g. a shared VAE). bundle.json is written last,
so a folder with a bundle.json is a complete bundle.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vera.atomic import atomic_write_text
from vera.errors import BadInput
from vera.model.bundle_check import check_bundle, inside
from vera.model.bundle_manifest import BUNDLE_FILE, DEFAULTS, TRANSFORMER_FILE, bundle_folder, read_manifest
from vera.model.checkpoint import load_vera, save_vera
from vera.model.configs import VeraConfig, get_config
from vera.model.dit import VeraMoT
from vera.model.student import apply_student, no_student
from vera.model.wan_lora import merge_lora_file
from vera.model.text import TextEncoder, build_tiny_text_encoder
from vera.model.vae import PatchVAE, VideoVAE, WanVAE, build_vae

CPU = torch.device("cpu")

# Words the tiny test text encoder knows (each is one token).
TEST_WORDS = ("add", "a", "an", "the", "red", "blue", "green", "ball", "box", "replace", "background", "with",
              "sky", "sunset", "forest", "snow", "blurry", "low", "quality")


@dataclass
class Bundle:
    name: str
    path: Path
    config: VeraConfig
    transformer: torch.nn.Module
    vae: VideoVAE
    text: TextEncoder
    defaults: dict = field(default_factory=dict)
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    memory: str = "resident"  # vera.plan.MEMORY_MODES: where the parts live between uses (vera.offload)
    attention: str = "native"  # the joint attention's kernel (vera.model.attention)
    student: dict | None = None   # bundle.json's distilled student entry (vera.model.student), if any
    student_loaded: bool = False  # the transformer is that student (speed turbo), not the teacher

    @property
    def resolution(self) -> tuple[int, int]:
        w, h = self.defaults["resolution"]
        return int(w), int(h)


def resolve_device(device: str | torch.device = "auto") -> tuple[torch.device, torch.dtype]:
    """auto -> CUDA in bfloat16 when present, else the CPU in float32; `cpu`, `cuda`, `cuda:N` as asked."""
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise BadInput(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"device {name!r} asked for, but this machine has no CUDA GPU (use --device cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise BadInput(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    return dev, (torch.bfloat16 if dev.type == "cuda" else torch.float32)


def _check_compatible(path: Path, cfg: VeraConfig, vae: VideoVAE, defaults: dict) -> None:
    problems = []
    if cfg.z_dim != vae.z_dim:
        problems.append(f"config z_dim {cfg.z_dim} != VAE z_dim {vae.z_dim}")
    if cfg.mask_channels != vae.temporal_stride:
        problems.append(f"config mask_channels {cfg.mask_channels} != VAE temporal stride {vae.temporal_stride} "
                        "(the mask packs one channel per frame of a latent frame)")
    w, h = defaults["resolution"]
    step = vae.spatial_stride * cfg.patch_size[1]
    if w % step or h % step:
        problems.append(f"resolution {w}x{h} is not a multiple of {step} (VAE stride x patch)")
    if (int(defaults["window"]) - 1) % 4:
        problems.append(f"window {defaults['window']} is not 4k+1")
    if problems:
        raise BadInput(f"{path}: inconsistent bundle: " + "; ".join(problems))


def _load_transformer(path: Path, cfg: VeraConfig, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    if not path.is_file():
        raise BadInput(f"{path}: transformer weights are missing")
    model = load_vera(path, device=device, dtype=dtype)
    if model.cfg != cfg:
        raise BadInput(f"{path}: the checkpoint's config differs from the bundle's ({model.cfg} vs {cfg})")
    return model.requires_grad_(False)


def load_parts(name_or_path: str | Path = "demo", device: str | torch.device = "auto",
               cache_dir: str | Path | None = None, memory: str = "resident",
               student: bool = False) -> tuple[Bundle, Path, str | None]:
    """A bundle's parts without the transformer's weights: (bundle with transformer None, the weight file, its
    LoRA entry or None). The VAE lives on the CPU between uses unless `memory` is resident (vera.offload);
    the text encoder loads lazily, on a prompt-cache miss. How the weights are loaded, placed and parallelized
    is the caller's (vera.loading). `student`: the weights are to be the bundle's distilled student
    (vera.model.student, speed turbo); a bundle without one is refused here."""
    folder = bundle_folder(name_or_path)
    manifest = read_manifest(folder)
    check_bundle(folder, manifest)  # every file it names, by header: BadInput before anything loads
    dev, dtype = resolve_device(device)
    cfg = VeraConfig.from_dict(manifest["config"])
    # float32 on every device, as Wan; on the CPU between uses unless everything stays resident
    vae = build_vae(manifest["vae"], folder, device=CPU if memory != "resident" else dev)
    _check_compatible(folder / BUNDLE_FILE, cfg, vae, manifest["defaults"])
    text = TextEncoder(inside(folder, manifest["text_encoder"]), device=dev, dtype=dtype, cache_dir=cache_dir,
                       max_length=cfg.text_len)
    if text.d_model != cfg.text_dim:
        raise BadInput(f"{folder}: text encoder width {text.d_model} != config text_dim {cfg.text_dim}")
    name = "demo" if str(name_or_path) == "demo" else manifest.get("name", folder.name)
    if student and not manifest.get("student"):
        raise no_student(folder)
    bundle = Bundle(name=name, path=folder, config=cfg, transformer=None, vae=vae, text=text,
                    defaults=manifest["defaults"], device=dev, dtype=dtype, memory=memory,
                    student=manifest.get("student"), student_loaded=student)
    return bundle, inside(folder, manifest["transformer"]), manifest.get("lora")


def load_weights(bundle: Bundle, path: Path, lora: dict | None, device: torch.device) -> torch.nn.Module:
    """The transformer of `bundle` from its weight file onto `device`, its LoRA adapters (if any) merged into
    the weights before any offload hook or parallel wrapper sees them."""
    transformer = _load_transformer(path, bundle.config, device, bundle.dtype)
    for entry in [lora] if isinstance(lora, dict) else lora or []:
        merge_lora_file(transformer, inside(bundle.path, entry["path"]), entry.get("streams"),
                        entry.get("scale", 1.0))
    if bundle.student_loaded:
        apply_student(transformer, bundle.path, bundle.student)
    return transformer


def load_bundle(name_or_path: str | Path = "demo", device: str | torch.device = "auto",
                cache_dir: str | Path | None = None, student: bool = False) -> Bundle:
    """Load a bundle ("demo" or a folder) onto `device`, every part resident; the text encoder loads lazily, on
    a prompt-cache miss. vera.loading loads one for a Strategy (memory tiers, fp8, a device mesh). `student`:
    the bundle's distilled student in place of its transformer (speed turbo)."""
    bundle, path, lora = load_parts(name_or_path, device, cache_dir, student=student)
    bundle.transformer = load_weights(bundle, path, lora, bundle.device)
    return bundle


def save_bundle(bundle: Bundle, folder: str | Path, defaults: dict | None = None, name: str | None = None,
                lora: str | None = None) -> Path:
    """Write `bundle` to `folder`: the VeraMoT (vera.model.checkpoint format), the VAE (a diffusers folder for
    Wan, one line for PatchVAE), a copy of the text encoder (unless it already lives in `folder/text_encoder`),
    then bundle.json last. `defaults` override the bundle's own (e.g. what training found works); `lora` names
    an adapter file already written inside `folder` (vera.model.lora.save_lora) that loading merges."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if bundle.transformer.cfg != bundle.config:
        raise ValueError(f"save_bundle: the transformer's config {bundle.transformer.cfg} is not {bundle.config}")
    save_vera(bundle.transformer, folder / TRANSFORMER_FILE)
    if isinstance(bundle.vae, PatchVAE):
        vae_entry = {"type": "patch", "patch": bundle.vae.patch}
    elif isinstance(bundle.vae, WanVAE):
        bundle.vae.save(folder / "vae")
        vae_entry = {"type": "wan", "path": "vae"}
        if bundle.vae.tiling != "auto":
            vae_entry["tiling"] = bundle.vae.tiling
    else:
        raise TypeError(f"save_bundle: cannot save a {type(bundle.vae).__name__}")
    text_target = folder / "text_encoder"
    if bundle.text.folder.resolve() != text_target.resolve():
        shutil.copytree(bundle.text.folder, text_target, dirs_exist_ok=True)
        if bundle.text.tokenizer_folder.resolve() != bundle.text.folder.resolve():
            shutil.copytree(bundle.text.tokenizer_folder, text_target / "tokenizer", dirs_exist_ok=True)
    manifest = {"name": name or bundle.name, "config": bundle.config.to_dict(), "transformer": TRANSFORMER_FILE,
                "vae": vae_entry, "text_encoder": "text_encoder",
                "defaults": {**DEFAULTS, **bundle.defaults, **(defaults or {})}}
    if lora is not None:
        if not (folder / lora).is_file():
            raise ValueError(f"save_bundle: the adapter file {folder / lora} is not written")
        manifest["lora"] = {"path": lora, "scale": 1.0}
    atomic_write_text(folder / BUNDLE_FILE, json.dumps(manifest, indent=2) + "\n")
    return folder


def create_random_bundle(folder: str | Path, config: str | VeraConfig = "vera-tiny", seed: int = 0,
                         resolution: tuple[int, int] = (64, 48), window: int = 9, patch: int = 4,
                         vocab_words=TEST_WORDS, defaults: dict | None = None, vae: VideoVAE | None = None) -> Path:
    """Write a randomly initialised (seeded) bundle to `folder`: VeraMoT + PatchVAE(patch) (or the given `vae`)
    + a tiny text encoder. Returns the folder; `load_bundle(folder)` loads it.

    The config's z_dim, mask_channels and text width are set to what the VAE and the tiny encoder need
    (PatchVAE: z_dim = 3*patch^2 and mask_channels = 1, since it keeps every frame). For tests, end-to-end runs
    without trained weights, and the start of training.
    """
    cfg = get_config(config) if isinstance(config, str) else config
    vae = vae or PatchVAE(patch)
    cfg = dataclasses.replace(cfg, z_dim=vae.z_dim, mask_channels=vae.temporal_stride)
    folder = Path(folder)
    text_folder = build_tiny_text_encoder(folder / "text_encoder", vocab_words, d_model=cfg.text_dim, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VeraMoT(cfg)
    settings = {**DEFAULTS, "resolution": list(resolution), "window": window, "steps": 2, "guidance": 3.0,
                "shift": 3.0, "negative_prompt": "", **(defaults or {})}  # not Wan: no Wan negative prompt
    bundle = Bundle(name=f"random-{seed}", path=folder, config=cfg, transformer=model, vae=vae,
                    text=TextEncoder(text_folder, max_length=cfg.text_len), defaults=settings)
    return save_bundle(bundle, folder)
