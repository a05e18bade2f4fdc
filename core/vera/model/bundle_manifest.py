"""A model bundle's folder and its bundle.json, read without loading a weight (no torch): what validating a
shot (vera.shot), planning (vera.plan) and fingerprinting a render (vera.manifest) need of a bundle.
vera.model.bundle loads what it describes.
"""

from __future__ import annotations

from pathlib import Path

from vera.errors import BadInput, read_json_object
from vera.model.configs import VeraConfig
from vera.schemas import BundleDefaults, BundleManifest, check


DEMO_PATH = Path(__file__).resolve().parent.parent / "assets" / "demo"
BUNDLE_FILE = "bundle.json"
TRANSFORMER_FILE = "transformer.safetensors"

# Wan2.1's own negative prompt (`sample_neg_prompt` in Wan2.1's shared config), which Wan's T2V uses when none
# is given; a bundle made from a Wan2.1 conversion samples with it unless its bundle.json says otherwise.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")

# Wan2.1 T2V's sampling defaults (steps, guidance, shift, UniPC, negative prompt) at the 1.3B model's 832x480;
# the 49-frame window is the paper's clip length (Wan samples 81). A bundle overrides what it was trained for.
DEFAULTS = {"resolution": [832, 480], "window": 49, "steps": 50, "guidance": 5.0, "shift": 5.0,
            "sampler": "unipc", "negative_prompt": WAN_NEGATIVE_PROMPT}


def bundle_folder(name_or_path: str | Path) -> Path:
    if str(name_or_path) == "demo":
        if not (DEMO_PATH / BUNDLE_FILE).is_file():
            raise BadInput(f"the embedded demo model is missing ({DEMO_PATH / BUNDLE_FILE} does not exist); "
                           "reinstall Vera or pass a model bundle folder")
        return DEMO_PATH
    folder = Path(name_or_path).expanduser()
    if not (folder / BUNDLE_FILE).is_file():
        raise BadInput(f"{folder}: not a Vera model bundle (no {BUNDLE_FILE})")
    return folder


def read_manifest(name_or_path: str | Path) -> dict:
    """bundle.json with defaults filled in, checked against its schema (vera.schemas.BundleManifest, and the
    config as a VeraConfig) in this one place; no weights are loaded. Every problem is BadInput naming the file
    and the field."""
    folder = bundle_folder(name_or_path)
    path = folder / BUNDLE_FILE
    manifest = read_json_object(path, "bundle manifest")
    checked = check(BundleManifest, manifest, str(path))
    manifest["defaults"] = dict(DEFAULTS, **(checked.defaults or {}))
    try:
        check(BundleDefaults, manifest["defaults"], f"{path}: defaults")
        VeraConfig.from_dict(manifest["config"])
    except BadInput as exc:
        raise BadInput(f"{path}: {exc}" if not str(exc).startswith(str(path)) else str(exc)) from None
    manifest["vae"] = checked.vae.model_dump()
    return manifest
