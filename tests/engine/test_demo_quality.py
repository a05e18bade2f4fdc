"""The shipped demo model's matte, judged as an artist would (issue 21): it falls to 0 inside its box, shapes
follow the words, held-out IoU meets the bars, and the bundle stays small. Runs the shipped bundle on CPU."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from vera.cli import main
from vera.model.bundle_manifest import DEMO_PATH
from vera.train.evaluate import BARS, CEILINGS, box_edge_alpha

HELDOUT_SEED = 97531  # never trained on (the demo's training data is seed 0, its held-out set seed 1000)
HELDOUT_SHOTS = 12    # 6 object additions, 6 background changes
BUNDLE_MAX_BYTES = 30 * 1024 * 1024


@pytest.fixture(scope="module")
def heldout_report(tmp_path_factory):
    from vera.train.evaluate import evaluate
    from vera.train.synth import generate

    root = tmp_path_factory.mktemp("heldout")
    generate(root, HELDOUT_SHOTS, seed=HELDOUT_SEED, size=(128, 96), frames=5)
    return evaluate("demo", root, progress="none")


def test_box_edge_alpha_measures_the_border_of_the_touched_box():
    soft = np.zeros((20, 20), np.float32)
    ys, xs = np.mgrid[0:20, 0:20]
    soft[:] = np.clip(1 - np.hypot(ys - 10, xs - 10) / 6, 0, 1)  # a cone: falls to 0 before its box ends
    assert box_edge_alpha(soft) < 1 / 255 + 0.2
    cut = soft.copy()
    cut[:, :9] = 0  # the same blob cut by a box: its border now crosses the cone at 0.8
    assert box_edge_alpha(cut) > 0.7
    assert box_edge_alpha(np.zeros((2, 4, 4))) == 0.0


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 21: the shipped demo bundle's object mattes still end on their box "
                   "on some held-out shots (box-edge alpha 0.18 mean; bar 0.05); drop this mark when they do not")
def test_heldout_object_mattes_fall_to_zero_inside_their_box(heldout_report):
    summary = heldout_report["summary"]
    assert summary["object_addition_shots"] == HELDOUT_SHOTS // 2
    edges = {s["instruction"]: s["box_edge_alpha"] for s in heldout_report["shots"] if "box_edge_alpha" in s}
    assert summary["object_box_edge_alpha"] <= CEILINGS["object_box_edge_alpha"], edges


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 21: the shipped demo bundle misses the bars (held-out object IoU "
                   "0.52, background 0.86; docs/demo-model.md); passing means a better bundle landed: drop this mark")
def test_heldout_iou_meets_the_bars(heldout_report):
    summary = heldout_report["summary"]
    shots = [(s["instruction"], round(s["iou"], 3)) for s in heldout_report["shots"]]
    assert summary["object_addition_iou"] >= BARS["object_addition_iou"], shots
    assert summary["background_change_iou"] >= BARS["background_change_iou"], shots
    assert summary["colour_match"] >= BARS["colour_match"], shots
    assert summary["untouched_exact_all"]


@pytest.mark.slow
@pytest.mark.parametrize("prompt", [
    pytest.param("add a blue ring moving right", marks=pytest.mark.xfail(
        strict=True, reason="issue 21: the shipped demo bundle's ring has no hole (IoU 0.38); drop when it does")),
    pytest.param("add a white star moving down", marks=pytest.mark.xfail(
        strict=True, reason="issue 21: the shipped demo bundle's star is a blob (IoU 0.51); drop when it is a star"))])
def test_demo_comp_shows_no_box_and_the_shape_asked_for(tmp_path, capsys, prompt):
    """The demo end to end: no matte edge at the box, and the matte is the grammar's shape where the synthetic
    world would put it (a ring keeps its hole)."""
    from vera.exr import read_layer
    from vera.train.evaluate import matte_iou
    from vera.train.synth import make_sample, parse_instruction

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--prompt", prompt, "--progress", "none"]) == 0, capsys.readouterr().err
    frames = range(1001, 1006)
    matte = np.stack([read_layer(str(out / "layers" / f"edit.{f}.exr"), "rgba").pixels[..., 3] for f in frames])
    assert box_edge_alpha(matte) <= CEILINGS["object_box_edge_alpha"]
    slots = parse_instruction(prompt)
    truth = make_sample(0, 0, (128, 96), 5, task="object_addition", colour=slots["colour"], shape=slots["shape"],
                        direction=slots["direction"])  # the shot vera.demo.placement_for places
    assert matte_iou(matte, truth.element[..., 3]) >= 0.7
    if slots["shape"] == "ring":  # the hole: the ring's centre stays clear in every frame
        start, travel = np.array(truth.params["object_start"]), np.array(truth.params["object_travel"])
        for i, frame in enumerate(matte):
            cx, cy = (start + travel * i / (len(matte) - 1)) * 96 - 0.5
            assert frame[int(round(cy)) - 1:int(round(cy)) + 2, int(round(cx)) - 1:int(round(cx)) + 2].mean() < 0.3


def test_shipped_bundle_fits_the_size_limit():
    files = [p for p in DEMO_PATH.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= BUNDLE_MAX_BYTES
    tokenizer = (DEMO_PATH / "text_encoder" / "tokenizer.json").read_text()
    assert '"star"' in tokenizer and '"square"' in tokenizer  # the bundle knows today's grammar


def test_retraining_script_config_and_warm_start_are_valid(tmp_path):
    """scripts/retrain_demo.sh parses, its config loads as vera-train fit would load it, and the warm start keeps
    every known word's embedding row (found by word) while the vocabulary grows (square starts as box)."""
    import importlib.util
    import json

    from safetensors.torch import load_file

    from vera.train.config import load_config

    root = DEMO_PATH.parents[3]
    assert subprocess.run(["bash", "-n", str(root / "scripts" / "retrain_demo.sh")]).returncode == 0
    config = tmp_path / "retrain.json"
    config.write_text((root / "scripts" / "demo_retrain.json").read_text().replace("__WARM_BUNDLE__", str(tmp_path)))
    assert load_config(config).bundle["from"] == str(tmp_path)

    spec = importlib.util.spec_from_file_location("demo_warm_start", root / "scripts" / "demo_warm_start.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    source = tmp_path / "old"
    source.mkdir()
    (source / "bundle.json").write_text("{}")
    module.build_tiny_text_encoder(source / "text_encoder", ["add", "a", "box", "red"], d_model=8, num_layers=1,
                                   num_heads=2)
    added = module.warm_start(source, tmp_path / "warm")
    assert "square" in added and "star" in added and "box" not in added
    old_ids, new_ids = module.token_ids(source / "text_encoder"), module.token_ids(tmp_path / "warm" / "text_encoder")
    old = load_file(source / "text_encoder" / "model.safetensors")["shared.weight"]
    new = load_file(tmp_path / "warm" / "text_encoder" / "model.safetensors")["shared.weight"]
    for word in ("add", "box", "red"):
        assert np.array_equal(new[new_ids[word]].numpy(), old[old_ids[word]].numpy())
    assert np.array_equal(new[new_ids["square"]].numpy(), old[old_ids["box"]].numpy())
    assert json.loads((tmp_path / "warm" / "bundle.json").read_text()) == {}
