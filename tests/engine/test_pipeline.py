"""Model bundles and the inference pipeline, end to end on a random small bundle (CPU, seconds)."""

import json
import shutil

import numpy as np
import OpenImageIO as oiio
import pytest
import torch
from bundles import make_shot, random_bundle, write_plate

from vera.errors import BadInput
from vera.exr import read_layer, write_exr, write_layers
from vera.model import bundle_manifest
from vera.model.bundle import load_bundle, resolve_device
from vera.model.bundle_manifest import read_manifest
from vera.model.dit import VeraMoT
from vera.model.vae import PatchVAE
from vera.pipeline import layer_attributes, padded_length, render_frames, render_window
from vera.progress import Progress
from vera.shot import MaskSpec

FIRST, LAST, PLATE_W, PLATE_H = 1001, 1009, 128, 72


def write_mask(folder, first, last):
    """Garbage matte: the edit may only appear in the left 3/5 of the frame."""
    for frame in range(first, last + 1):
        a = np.zeros((PLATE_H, PLATE_W), np.float32)
        a[:, : PLATE_W * 3 // 5] = 1.0
        write_exr(folder / f"mask.{frame:04d}.exr", {"R": a, "G": a, "B": a, "A": a},
                  (0, 0, PLATE_W - 1, PLATE_H - 1))


@pytest.fixture(scope="module")
def shot_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("shot")
    random_bundle(root / "bundle", seed=0)
    write_plate(root / "plate", FIRST, LAST, PLATE_W, PLATE_H)
    write_mask(root / "mask", FIRST, LAST)
    return root


@pytest.fixture(scope="module")
def bundle(shot_dir):
    return load_bundle(shot_dir / "bundle", device="cpu", cache_dir=shot_dir / "prompt_cache")


def spec_for(shot_dir, mask=True, **overrides):
    spec = make_shot(shot_dir, shot_dir / "bundle", str(shot_dir / "plate" / "plate.####.exr"), FIRST, LAST,
                     **overrides)
    if mask:
        spec.mask = MaskSpec(path="mask/mask.####.exr", channel="A")
    return spec


# ------------------------------------------------------------------------------------------------ bundles

def test_bundle_loads_what_was_saved(shot_dir, bundle):
    manifest = json.loads((shot_dir / "bundle" / "bundle.json").read_text())
    assert manifest["vae"] == {"type": "patch", "patch": 4}
    assert manifest["transformer"] == "transformer.safetensors" and manifest["text_encoder"] == "text_encoder"
    assert bundle.defaults["resolution"] == [64, 48] and bundle.defaults["window"] == 9
    assert isinstance(bundle.vae, PatchVAE) and bundle.config.z_dim == 48 and bundle.config.mask_channels == 1
    assert bundle.device == torch.device("cpu") and bundle.dtype == torch.float32
    assert bundle.text.d_model == bundle.config.text_dim and bundle.text.max_length == bundle.config.text_len
    torch.manual_seed(0)  # create_random_bundle's seed
    fresh = VeraMoT(bundle.config)
    saved = bundle.transformer.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in fresh.state_dict().items())
    assert not any(p.requires_grad for p in bundle.transformer.parameters())


def test_missing_demo_and_non_bundles_are_bad_input(tmp_path, monkeypatch):
    monkeypatch.setattr(bundle_manifest, "DEMO_PATH", tmp_path / "demo")
    with pytest.raises(BadInput, match="embedded demo model is missing"):
        load_bundle("demo")
    with pytest.raises(BadInput, match="not a Vera model bundle"):
        load_bundle(tmp_path)


def test_inconsistent_bundle_is_rejected_before_loading_weights(shot_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(shot_dir / "bundle", broken)
    manifest = json.loads((broken / "bundle.json").read_text())
    manifest["vae"] = {"type": "patch", "patch": 2}
    manifest["defaults"]["window"] = 10
    (broken / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BadInput, match="z_dim 48 != VAE z_dim 12.*window 10 is not 4k\\+1"):
        load_bundle(broken, device="cpu")
    manifest["defaults"]["sampler"] = "ddim"
    (broken / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BadInput, match="field sampler: Input should be .unipc. or .euler."):
        read_manifest(broken)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_device_choice_without_a_gpu():
    assert resolve_device("auto") == (torch.device("cpu"), torch.float32)
    with pytest.raises(BadInput, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(BadInput, match="unknown device"):
        resolve_device("gpu please")


# ------------------------------------------------------------------------------------------------ pipeline

def test_padded_length_is_4k_plus_1():
    assert [padded_length(n) for n in (1, 2, 5, 6, 9, 10, 49)] == [1, 5, 5, 9, 9, 13, 49]


def test_render_writes_layers_whose_untouched_pixels_composite_to_the_plate_exactly(shot_dir, bundle, tmp_path):
    spec = spec_for(shot_dir)
    frames = list(range(FIRST, LAST + 1))
    layers = render_frames(bundle, spec, frames, seed=3)
    assert sorted(layers) == frames
    attributes = layer_attributes(bundle, spec, 3)
    touched = untouched = 0
    for frame in frames:
        rgba, matte = layers[frame]
        assert rgba.shape == (PLATE_H, PLATE_W, 4) and rgba.dtype == np.float32 and matte.shape == (PLATE_H, PLATE_W)
        alpha = rgba[..., 3]
        assert np.array_equal(matte, alpha) and alpha.min() >= 0 and alpha.max() <= 1
        assert np.all(alpha[:, PLATE_W * 3 // 5:] == 0)  # outside the garbage matte: untouched
        assert np.all(rgba[alpha == 0, :3] == 0)
        touched += int((alpha > 0).sum())
        untouched += int((alpha == 0).sum())

        out = tmp_path / f"edit.{frame:04d}.exr"
        write_layers(out, rgba, (0, 0, PLATE_W - 1, PLATE_H - 1), attributes)
        plate_file = shot_dir / "plate" / f"plate.{frame:04d}.exr"
        plate = read_layer(plate_file, "rgba").pixels
        written = read_layer(out, "rgba").pixels
        # a real compositor: OIIO's over of the written layer onto the plate file
        layer_rgba = oiio.ImageBufAlgo.channels(oiio.ImageBuf(str(out)), ("R", "G", "B", "A"))
        comp = oiio.ImageBufAlgo.over(layer_rgba, oiio.ImageBuf(str(plate_file)))
        assert not comp.has_error, comp.geterror()
        comp = comp.get_pixels(oiio.FLOAT)
        still = written[..., 3] == 0
        assert np.array_equal(comp[still], plate[still])
        assert np.array_equal((written[..., :3] + plate[..., :3] * (1 - written[..., 3:]))[still],
                              plate[still][:, :3])
    assert touched > 0 and untouched > 0
    header = oiio.ImageInput.open(str(tmp_path / f"edit.{FIRST:04d}.exr")).spec()
    assert header.getattribute("vera/prompt") == "add a red ball"
    assert header.getattribute("vera/seed") == 3 and header.getattribute("vera/model") == "random-0"


def test_render_is_seeded_and_a_short_window_is_padded(shot_dir, bundle):
    spec = spec_for(shot_dir, mask=False)
    frames = list(range(FIRST, FIRST + 6))  # padded to 9 frames for the model, 6 come back
    a = render_frames(bundle, spec, frames, seed=11)
    runs = bundle.text.encoder_runs
    assert bundle.text._model is None  # the text encoder is freed before sampling
    b = render_frames(bundle, spec, frames, seed=11)
    assert bundle.text.encoder_runs == runs  # prompts come from the on-disk cache
    c = render_frames(bundle, spec, frames, seed=12)
    assert sorted(a) == frames
    assert all(np.array_equal(a[f][0], b[f][0]) for f in frames)
    assert any(not np.array_equal(a[f][0], c[f][0]) for f in frames)


def test_progress_is_spread_over_the_callers_total_and_composite_preview(shot_dir, bundle):
    import io

    spec = spec_for(shot_dir, mask=False)
    frames = list(range(FIRST, FIRST + 5))
    out = io.StringIO()
    with Progress(len(frames), "window", "openjd", stream_out=out) as bar:
        result = render_window(bundle, spec, frames, seed=0, progress=bar, decode_composite=True)
    assert bar.done == len(frames)
    assert out.getvalue().splitlines()[-1] == "openjd_progress: 100"
    assert sorted(result.composite) == frames
    assert result.composite[FIRST].shape == (PLATE_H, PLATE_W, 3)
    assert (result.fit.content_w, result.fit.content_h) == (64, 36)  # 16:9 plate letterboxed into 64x48


def test_bad_windows_and_masks_are_bad_input_naming_the_file(shot_dir, bundle):
    spec = spec_for(shot_dir, mask=False)
    with pytest.raises(BadInput, match=r"plate\.####\.exr: missing frames 1010"):
        render_frames(bundle, spec, [LAST, LAST + 1], seed=0)
    with pytest.raises(BadInput, match="consecutive"):
        render_frames(bundle, spec, [FIRST, FIRST + 2], seed=0)
    spec = spec_for(shot_dir)
    spec.mask.channel = "Z"
    with pytest.raises(BadInput, match="mask.####.exr: mask channel must be one of"):
        render_frames(bundle, spec, [FIRST], seed=0)


def test_vera_render_run_end_to_end_keeps_untouched_pixels_bit_exact(shot_dir, tmp_path, monkeypatch):
    """The whole product: `vera-render run` on a 13-frame shot (two overlapping windows) with the random bundle."""
    from vera.cli import main
    from vera.shot import WindowSpec

    monkeypatch.setenv("VERA_CACHE", str(tmp_path / "cache"))
    first, last = FIRST, FIRST + 12
    write_plate(tmp_path / "plate", first, last, PLATE_W, PLATE_H, seed=5)
    write_mask(tmp_path / "mask", first, last)
    spec = make_shot(tmp_path, shot_dir / "bundle", str(tmp_path / "plate" / "plate.####.exr"), first, last,
                     window=WindowSpec(frames=9, overlap=4), mask=MaskSpec(path="mask/mask.####.exr"))
    assert main(["run", str(tmp_path / "shot.json"), "--progress", "none"]) == 0
    touched = 0
    for frame in range(first, last + 1):
        out = tmp_path / "out" / f"{spec.output.name}.{frame:04d}.exr"
        written = read_layer(out, "rgba").pixels
        plate = read_layer(tmp_path / "plate" / f"plate.{frame:04d}.exr", "rgba").pixels
        still = written[..., 3] == 0
        comp = written[..., :3] + plate[..., :3] * (1 - written[..., 3:])
        assert still[:, PLATE_W * 3 // 5:].all() and np.array_equal(comp[still], plate[still][:, :3])
        touched += int((~still).sum())
    assert touched > 0


def test_bundle_with_a_wan_vae_saves_loads_and_renders(shot_dir, tmp_path):
    """The real VAE path: temporal stride 4 (9 frames -> 3 latent frames, mask packed to 4 channels)."""
    from test_vae import TINY_WAN

    from vera.model.bundle import create_random_bundle, save_bundle
    from vera.model.vae import WanVAE

    folder = create_random_bundle(tmp_path / "wan_bundle", "vera-tiny", seed=2, vae=WanVAE.from_config(TINY_WAN))
    assert json.loads((folder / "bundle.json").read_text())["vae"] == {"type": "wan", "path": "vae"}
    bundle = load_bundle(folder, device="cpu", cache_dir=tmp_path / "cache")
    assert isinstance(bundle.vae, WanVAE) and bundle.config.z_dim == 4 and bundle.config.mask_channels == 4
    # a loaded bundle saves again (what training does with its trained transformer)
    copy = load_bundle(save_bundle(bundle, tmp_path / "copy", defaults={"steps": 7}), device="cpu")
    assert copy.defaults["steps"] == 7 and copy.name == bundle.name
    assert all(torch.equal(v, copy.transformer.state_dict()[k]) for k, v in bundle.transformer.state_dict().items())

    layers = render_frames(bundle, spec_for(shot_dir), list(range(FIRST, FIRST + 9)), seed=0)
    assert sorted(layers) == list(range(FIRST, FIRST + 9))
    rgba, matte = layers[FIRST]
    assert rgba.shape == (PLATE_H, PLATE_W, 4) and np.all(rgba[:, PLATE_W * 3 // 5:] == 0)


def test_bundle_assembled_from_diffusers_wan_parts_as_documented(shot_dir, tmp_path):
    """docs/model.md's recipe on tiny parts: converted transformer, diffusers VAE folder, encoder with its
    tokenizer in a `tokenizer/` folder beside it (the diffusers Wan layout), a hand-written bundle.json."""
    from diffusers import WanTransformer3DModel
    from test_vae import TINY_WAN

    from vera.model.checkpoint import convert_wan, save_vera
    from vera.model.text import build_tiny_text_encoder
    from vera.model.vae import WanVAE

    wan, folder = tmp_path / "Wan2.1-Diffusers", tmp_path / "bundle"
    torch.manual_seed(0)
    WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16,
                          out_channels=16, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2,
                          qk_norm="rms_norm_across_heads").save_pretrained(wan / "transformer")
    WanVAE.from_config(dict(TINY_WAN, z_dim=16, latents_mean=[0.1] * 16, latents_std=[2.0] * 16)).save(folder / "vae")
    build_tiny_text_encoder(folder / "text_encoder", ["add", "a", "red", "ball"], d_model=32)
    (folder / "text_encoder" / "tokenizer").mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / "text_encoder" / name).rename(folder / "text_encoder" / "tokenizer" / name)
    save_vera(convert_wan(wan / "transformer"), folder / "transformer.safetensors")
    (folder / "bundle.json").write_text(json.dumps({
        "config": json.loads((folder / "transformer.json").read_text()), "transformer": "transformer.safetensors",
        "vae": {"type": "wan", "path": "vae"}, "text_encoder": "text_encoder",
        "defaults": {"resolution": [64, 48], "window": 9, "steps": 2}}))

    bundle = load_bundle(folder, device="cpu", cache_dir=tmp_path / "cache")
    assert bundle.defaults["sampler"] == "unipc" and bundle.defaults["guidance"] == 5.0  # Wan2.1's defaults
    layers = render_frames(bundle, spec_for(shot_dir), list(range(FIRST, FIRST + 5)), seed=0)
    assert sorted(layers) == list(range(FIRST, FIRST + 5))
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2  # prompt + negative prompt


def test_a_shot_without_sampler_choices_uses_the_bundles(tmp_path):
    from types import SimpleNamespace

    from vera.pipeline import sampler_settings
    from vera.shot import SamplerSpec

    bundle = SimpleNamespace(defaults={"sampler": "euler", "steps": 12, "guidance": 1.0, "shift": 2.0})
    spec = make_shot(tmp_path, "demo", "plate.####.exr", 1, 5)
    assert spec.sampler.name is None
    assert sampler_settings(bundle, spec).sampler == "euler"
    spec.sampler = SamplerSpec(name="unipc", steps=3)
    chosen = sampler_settings(bundle, spec)
    assert (chosen.sampler, chosen.steps, chosen.guidance) == ("unipc", 3, 1.0)


def test_a_bundle_from_a_wan_conversion_defaults_to_wans_negative_prompt_and_the_demo_keeps_its_own(tmp_path):
    from types import SimpleNamespace

    from vera.model.bundle import create_random_bundle
    from vera.model.bundle_manifest import WAN_NEGATIVE_PROMPT
    from vera.pipeline import sampler_settings

    # Wan2.1's shared config `sample_neg_prompt`: a fixed Chinese list, from "vivid colours, overexposed" to
    # "walking backwards"
    assert WAN_NEGATIVE_PROMPT.startswith("色调艳丽，过曝，静态") and WAN_NEGATIVE_PROMPT.endswith("背景人很多，倒着走")
    folder = create_random_bundle(tmp_path / "b", "vera-tiny", seed=0)
    assert read_manifest(folder)["defaults"]["negative_prompt"] == ""  # random weights are not Wan's
    manifest = json.loads((folder / "bundle.json").read_text())
    del manifest["defaults"]["negative_prompt"]  # bundle.json as docs/model.md writes it for a conversion
    (folder / "bundle.json").write_text(json.dumps(manifest))
    defaults = read_manifest(folder)["defaults"]
    assert defaults["negative_prompt"] == WAN_NEGATIVE_PROMPT
    spec = make_shot(tmp_path, "demo", "plate.####.exr", 1, 5)
    spec.negative_prompt = ""
    assert sampler_settings(SimpleNamespace(defaults=defaults), spec).negative_prompt == WAN_NEGATIVE_PROMPT
    assert read_manifest("demo")["defaults"]["negative_prompt"] == ""  # the demo was trained without one
