"""The shot spec a Vera Edit node builds (fake nuke, real vera-render validate)."""

import dataclasses
import json

import numpy as np
import pytest

import fake_nuke
from vera.exr import write_exr
from vera.shot import ShotSpec
from vera_nuke import actions, shot



@pytest.fixture
def nuke(tmp_path, monkeypatch):
    nk = fake_nuke.setup(tmp_path, monkeypatch)
    monkeypatch.setenv("VERA_RENDER", "/work/venv/bin/vera-render")
    return nk


def write_bbox_plate(folder, first, last, width=64, height=48, data_window=(8, 6, 39, 29)):
    """EXR frames whose data window (bounding box) is smaller than the display window."""
    folder.mkdir(parents=True, exist_ok=True)
    x0, y0, x1, y1 = data_window
    h, w = y1 - y0 + 1, x1 - x0 + 1
    for frame in range(first, last + 1):
        value = np.full((h, w), 0.1 * (frame - first + 1), np.float32)
        write_exr(folder / f"plate.{frame:04d}.exr", {"R": value, "G": value, "B": value, "A": np.ones((h, w))},
                  (0, 0, width - 1, height - 1), data_window=data_window)
    return str(folder / "plate.####.exr")


def vera_node(nuke, source, instruction="add a red balloon"):
    node = nuke.nodes.VeraEdit(instruction=instruction)
    node.setInput(0, source)
    return node


def test_spec_from_read_with_bounding_box_and_frame_range(nuke, tmp_path):
    pattern = write_bbox_plate(tmp_path / "plates", 1001, 1012)
    read = nuke.nodes.Read(file=pattern, first=1001, last=1012, format="64 48 plate_64x48",
                           colorspace="default (ACEScg)")
    read._metadata = {"exr/dataWindow": [8, 6, 39, 29], "exr/displayWindow": [0, 0, 63, 47]}
    node = vera_node(nuke, read)
    node["limit_range"].setValue(True)
    node["first_frame"].setValue(1003)
    node["last_frame"].setValue(1010)
    node["seed"].setValue(7)
    node["steps"].setValue(12)

    spec = shot.build_spec(node)

    assert spec["plate"] == {"path": pattern, "first": 1003, "last": 1010, "colorspace": "ACEScg",
                             "layer": "rgba"}
    # exactly the ShotSpec's keys (base_dir is not serialised), and it loads as one
    keys = {f.name for f in dataclasses.fields(ShotSpec)} - {"base_dir"}
    assert set(spec) == keys
    loaded = ShotSpec.from_dict(spec)
    assert loaded.sampler.steps == 12 and loaded.sampler.guidance is None and loaded.seed == 7
    assert loaded.window.frames is None and loaded.window.overlap == 8
    assert loaded.speed == "balanced"  # the Speed knob's default
    node["speed"].setValue("preview")
    assert shot.build_spec(node)["speed"] == "preview"
    assert spec["output"]["dir"].endswith(f"vera_renders/shot010_comp_v001/{node.name()}")  # the default
    assert spec["mask"] is None and spec["name"] == f"shot010_comp_v001_{node.name()}"
    assert nuke.executed == []  # a Read is used as it is, never re-rendered

    # the real engine accepts it: the bounding box does not matter to the spec
    node["output_dir"].setValue(str(tmp_path / "out"))
    path, spec = shot.prepare(node)
    assert json.loads(open(path).read())["plate"]["first"] == 1003


def test_spec_uses_the_reads_range_and_raw_and_relative_paths(nuke, tmp_path):
    read = nuke.nodes.Read(file="plates/plate.%04d.exr", first=1, last=24, raw=True)
    nuke.root()["project_directory"].setValue(str(tmp_path / "proj"))
    spec = shot.build_spec(vera_node(nuke, read))
    assert spec["plate"]["path"] == f"{tmp_path}/proj/plates/plate.%04d.exr"
    assert (spec["plate"]["first"], spec["plate"]["last"]) == (1, 24)
    assert spec["plate"]["colorspace"] == "raw"


def test_non_read_source_is_written_through_a_write_node(nuke, tmp_path):
    read = nuke.nodes.Read(file=f"{tmp_path}/p.####.exr", first=1, last=10)
    grade = nuke.nodes.Grade(inputs=[read])
    mask_read = nuke.nodes.Read(file=f"{tmp_path}/roto.####.exr", first=1, last=10)
    roto = nuke.nodes.NoOp(inputs=[mask_read])
    node = vera_node(nuke, grade)
    node.setInput(1, roto)
    node["output_dir"].setValue(str(tmp_path / "out"))
    nuke.root()["workingSpaceLUT"].setValue("ACEScg")

    spec = shot.build_spec(node)

    assert [(e["file"], e["first"], e["last"]) for e in nuke.executed] == [
        (f"{tmp_path}/out/plate/plate.####.exr", 1, 10), (f"{tmp_path}/out/mask/mask.####.exr", 1, 10)]
    assert spec["plate"]["path"] == f"{tmp_path}/out/plate/plate.####.exr"
    assert spec["plate"]["colorspace"] == "ACEScg"  # written raw: the working space
    assert spec["mask"] == {"path": f"{tmp_path}/out/mask/mask.####.exr", "channel": "A"}
    assert nuke.allNodes("Write") == []  # the temporary Write nodes are gone


def test_problems_reach_the_artist_as_a_message_not_a_traceback(nuke, tmp_path):
    pattern = write_bbox_plate(tmp_path / "plates", 1, 5)
    read = nuke.nodes.Read(file=pattern, first=1, last=5)
    node = vera_node(nuke, read)
    node["output_dir"].setValue(str(tmp_path / "out"))

    node["instruction"].setValue("")
    assert actions.render_locally(node) is None
    assert "type an instruction" in nuke.messages[-1]

    node["instruction"].setValue("add a boat")
    node["limit_range"].setValue(True)
    node["first_frame"].setValue(3)
    node["last_frame"].setValue(9)
    assert actions.submit_to_farm(node) is None
    assert "outside" in nuke.messages[-1] and read.name() in nuke.messages[-1]

    # a problem only the engine sees: vera-render validate exits 2, its lines go into the message
    node["limit_range"].setValue(False)
    node["model_bundle"].setValue(str(tmp_path / "no_such_bundle"))
    assert actions.render_locally(node) is None
    assert nuke.messages[-1].startswith("Vera cannot render this shot:")
    assert "no_such_bundle" in nuke.messages[-1] and "Traceback" not in nuke.messages[-1]

    nuke.nodes.VeraEdit(instruction="x")  # nothing connected
    assert actions.render_locally(nuke.allNodes("VeraEdit")[-1]) is None
    assert "connect a plate" in nuke.messages[-1]
