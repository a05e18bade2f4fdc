"""Our own files, damaged (issue 14): a hand-edited or truncated render manifest or model bundle is one line
naming the file and the field, exit 2, no traceback, and no completed frame is lost."""

import hashlib
import json
import math
import shutil
import time

import numpy as np
import pytest

import vera.render as render
from vera.status import status
from vera.cli import main

from bundles import SMALL_HEIGHT, SMALL_WIDTH, base_spec, write_plates, write_spec


def _layers(bundle, spec, frames, seed, progress):
    """Stands in for vera.pipeline.render_frames (tests the runner, not the model): a fixed layer per frame."""
    out = {}
    for frame in frames:
        alpha = np.full((SMALL_HEIGHT, SMALL_WIDTH), (frame % 7) / 7, np.float32)
        out[frame] = (np.dstack([alpha * 0.5, alpha * 0.25, alpha, alpha]), alpha)
        progress.advance(1)
    return out


@pytest.fixture
def finished(tmp_path, tiny_bundle, monkeypatch):
    """A shot rendered to the end (with the stand-in renderer); returns (spec path, output folder)."""
    monkeypatch.setattr(render, "_render_frames", _layers)
    write_plates(tmp_path)
    spec = write_spec(tmp_path, base_spec(tiny_bundle))
    assert main(["run", str(spec), "--progress", "none"]) == 0
    return spec, tmp_path / "out"


def _hashes(out_dir):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out_dir.glob("*.exr"))}


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and "internal error" not in err[0]
    return err[0]


def _set(path, value):
    def change(m):
        *parents, last = path
        for key in parents:
            m = m[key]
        m[last] = value
    return change


def _delete(key):
    def change(m):
        del m[key]
    return change


# (what is damaged, change to the manifest's JSON data, a word the message must hold)
DAMAGED_MANIFESTS = [
    ("no windows", _delete("windows"), "field windows"),
    ("no frames", _delete("frames"), "field frames"),
    ("windows a list", _set(["windows"], []), "field windows"),
    ("frame entry a list", _set(["frames", "1005"], []), "field frames.1005"),
    ("window null", _set(["windows", "0"], None), "field windows.0"),
    ("first a string", _set(["first"], "1001"), "field first"),
    ("last NaN", _set(["last"], math.nan), "field last"),
    ("window first null", _set(["windows", "1", "first"], None), "field windows.1.first"),
    ("padding a string", _set(["output_padding"], "4"), "field output_padding"),
    ("sha256 a number", _set(["frames", "1003", "sha256"], 12), "field frames.1003.sha256"),
    ("unknown status", _set(["windows", "0", "status"], "finished"), "field windows.0.status"),
    ("frame key not a number", _set(["frames", "x"], {"status": "failed"}), "field frames.x"),
    ("last 10^12", _set(["last"], 10**12), "do not cover"),
    ("no version", _delete("vera_manifest"), "vera_manifest"),
    ("not an object", None, "expected a JSON object"),
]


@pytest.mark.parametrize("case, change, field", DAMAGED_MANIFESTS, ids=[c[0] for c in DAMAGED_MANIFESTS])
def test_a_damaged_manifest_is_one_line_naming_file_and_field(finished, capsys, case, change, field):
    spec, out = finished
    before = _hashes(out)
    path = out / "manifest.json"
    data = json.loads(path.read_text())
    if change is None:
        data = None  # the whole file is JSON null
    else:
        change(data)
    path.write_text(json.dumps(data))
    capsys.readouterr()
    for argv in (["status", str(out)], ["run", str(spec), "--progress", "none"],
                 ["run", str(spec), "--window", "0", "--progress", "none"], ["assemble", str(spec)]):
        started = time.monotonic()
        assert main(argv) == 2, argv
        line = _one_error_line(capsys)
        assert time.monotonic() - started < 5
        assert "manifest.json" in line and field in line, line
        assert "--force" in line, line  # how to recover
    assert _hashes(out) == before  # nothing completed was touched


def test_force_sets_a_damaged_manifest_aside_and_renders_afresh(finished, capsys):
    spec, out = finished
    before = _hashes(out)
    (out / "manifest.json").write_text('{"vera_manifest": 1, "windows": []}')
    assert main(["run", str(spec), "--force", "--progress", "none"]) == 0
    assert (out / "manifest.json.damaged").read_text() == '{"vera_manifest": 1, "windows": []}'
    assert _hashes(out) == before  # the same settings render the same frames
    assert main(["status", str(out)]) == 0 and "complete" in capsys.readouterr().out


def test_status_of_a_huge_range_counts_without_listing_it(finished):
    """A manifest whose `last` is 10^12 (its windows reaching it) is answered in a moment, not built in memory."""
    spec, out = finished
    path = out / "manifest.json"
    data = json.loads(path.read_text())
    data["last"] = 10**12
    data["windows"]["1"].update(last=10**12, status="failed", error="boom")
    path.write_text(json.dumps(data))
    started = time.monotonic()
    report = status(out)
    assert time.monotonic() - started < 2
    assert report["frames"]["total"] == 10**12 - 1000
    assert report["frames"]["done"] == "1001-1013" and report["frames"]["done_count"] == 13
    assert report["frames"]["failed"] == f"1014-{10**12}" and report["frames"]["missing_count"] == 0


# ------------------------------------------------------------------------------------------------- bundles

def _config(key, value):
    return lambda b: b["config"].__setitem__(key, value)


def _default(key, value):
    return lambda b: b.setdefault("defaults", {}).__setitem__(key, value)


def _truncate(name):
    def damage(folder):
        for path in (folder / name).glob("*.safetensors") if (folder / name).is_dir() else [folder / name]:
            path.write_bytes(path.read_bytes()[:100])
    return damage


def _remove(name):
    return lambda folder: shutil.rmtree(folder / name)


def _garbage_vae_config(folder):
    (folder / "vae").mkdir()
    (folder / "vae" / "config.json").write_text("{not json")


# (what is damaged, change to bundle.json's data or None, change to the folder or None, words the message holds)
DAMAGED_BUNDLES = [
    ("dim a string", _config("dim", "192"), None, ["bundle.json", "field dim", '"192"']),
    ("zero heads", _config("num_heads", 0), None, ["bundle.json", "field num_heads"]),
    ("no dim", lambda b: b["config"].__delitem__("dim"), None, ["bundle.json", "field dim"]),
    ("eps NaN", _config("eps", math.nan), None, ["bundle.json", "field eps"]),
    ("patch size of two", _config("patch_size", [1, 2]), None, ["bundle.json", "field patch_size"]),
    ("config a list", lambda b: b.__setitem__("config", []), None, ["bundle.json", "field config"]),
    ("steps a string", _default("steps", "50"), None, ["bundle.json", "field steps"]),
    ("guidance null", _default("guidance", None), None, ["bundle.json", "field guidance"]),
    ("resolution a number", _default("resolution", 64), None, ["bundle.json", "field resolution"]),
    ("defaults a list", lambda b: b.__setitem__("defaults", [1]), None, ["bundle.json", "field defaults"]),
    ("unknown default", _default("cfg", 5), None, ["bundle.json", "field cfg"]),
    ("unknown VAE type", lambda b: b.__setitem__("vae", {"type": "sdxl"}), None, ["bundle.json", "field vae"]),
    ("VAE a string", lambda b: b.__setitem__("vae", "wan"), None, ["bundle.json", "field vae"]),
    ("no transformer", lambda b: b.__delitem__("transformer"), None, ["bundle.json", "field transformer"]),
    ("unreadable VAE config", lambda b: b.__setitem__("vae", {"type": "wan", "path": "vae"}),
     _garbage_vae_config, ["vae", "config.json"]),
    ("text encoder missing", None, _remove("text_encoder"), ["text_encoder"]),
    ("text encoder truncated", None, _truncate("text_encoder"), ["text_encoder", "deserializing header"]),
    ("transformer truncated", None, _truncate("transformer.safetensors"), ["transformer.safetensors"]),
]


@pytest.mark.parametrize("case, edit, damage, words", DAMAGED_BUNDLES, ids=[c[0] for c in DAMAGED_BUNDLES])
def test_a_damaged_bundle_is_one_line_naming_file_and_field(tmp_path, tiny_bundle, capsys, case, edit, damage,
                                                             words):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    if edit is not None:
        data = json.loads((bundle / "bundle.json").read_text())
        edit(data)
        (bundle / "bundle.json").write_text(json.dumps(data))
    if damage is not None:
        damage(bundle)
    write_plates(tmp_path)
    spec = write_spec(tmp_path, base_spec(bundle))
    capsys.readouterr()
    assert main(["run", str(spec), "--progress", "none"]) == 2
    line = _one_error_line(capsys)
    for word in words:
        assert word in line, line
    assert not list((tmp_path / "out").glob("*.exr")) if (tmp_path / "out").exists() else True


def test_the_bundle_schema_knows_every_sampler():
    import typing

    from vera.sampling import SAMPLERS
    from vera.schemas import BundleDefaults

    assert typing.get_args(BundleDefaults.model_fields["sampler"].annotation) == SAMPLERS
