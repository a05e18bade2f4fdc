"""A garbage matte's inner feather (mask.feather, vera.rebuild.feather_inside): a matte cut by the mask falls to
0 inside its edge instead of ending on it as a visible rectangle (issue 21)."""

from __future__ import annotations

import json

import numpy as np

from vera.rebuild import feather_inside
from vera.shot import validate
from vera.train.evaluate import box_edge_alpha


def test_feather_falls_to_zero_inside_the_edge_and_keeps_the_core():
    box = np.zeros((40, 60), np.float32)
    box[8:32, 10:50] = 1.0
    feathered = feather_inside(box, 4)
    assert np.array_equal(feathered[box == 0], np.zeros(np.count_nonzero(box == 0), np.float32))
    assert np.all(feathered[12:28, 14:46] == 1.0)  # 4 pixels in, the mask is untouched
    assert np.all(np.diff(feathered[20, 10:15]) > 0)  # a ramp up from the edge
    flat = np.ones_like(box)  # a model matte that fills its box: cut by the hard box it ends at 1
    assert box_edge_alpha(flat * box) == 1.0
    assert box_edge_alpha(flat * feathered) <= 0.05
    assert feather_inside(box, 0) is box


def test_shot_spec_refuses_a_negative_feather(tmp_path):
    from vera.train.data import write_exr_frame

    for name in ("plate", "mask"):
        write_exr_frame(tmp_path / name / f"{name}.1001.exr", np.zeros((8, 8, 4), np.float32), "RGBA")
    spec = {"name": "s", "task": "object_addition", "instruction": "add a red ball moving left",
            "plate": {"path": "plate/plate.####.exr", "first": 1001, "last": 1001, "colorspace": "sRGB - Texture"},
            "mask": {"path": "mask/mask.####.exr", "feather": -2}, "output": {"dir": "out"}}
    (tmp_path / "shot.json").write_text(json.dumps(spec))
    problems = validate(tmp_path / "shot.json")
    assert any("mask.feather: -2 must be" in p for p in problems), problems
    spec["mask"]["feather"] = 4
    (tmp_path / "shot.json").write_text(json.dumps(spec))
    assert not [p for p in validate(tmp_path / "shot.json") if "mask." in p]
