"""The shot spec a Vera Edit node builds (fake nuke, real vera-render validate)."""

import dataclasses
import json
import sys

import numpy as np
import pytest

import fake_nuke
from bundles import write_plate
from images import write_mp4
from vera.exr import write_exr
from vera.shot import ShotSpec
from vera_nuke import actions, shot


@pytest.fixture
def nuke(tmp_path, monkeypatch, engine_on_path):
    return fake_nuke.setup(tmp_path, monkeypatch)


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

    assert spec["plate"] == {"path": pattern.replace("####", "%04d"), "first": 1003, "last": 1010,
                             "colorspace": "ACEScg", "layer": "rgba", "start_frame": 1}
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


def test_spec_uses_the_reads_range_and_raw_and_relative_paths(nuke, tmp_path, monkeypatch):
    read = nuke.nodes.Read(file="plates/plate.####.exr", first=1, last=24, raw=True)
    spec = shot.build_spec(vera_node(nuke, read))
    # relative to the project directory: Nuke's default expression, the script's folder
    assert spec["plate"]["path"] == f"{tmp_path}/plates/plate.%04d.exr"
    assert (spec["plate"]["first"], spec["plate"]["last"]) == (1, 24)
    assert spec["plate"]["colorspace"] == "raw"
    nuke.root()["project_directory"].setValue("[getenv PROJ]/comp")  # another expression: evaluated too
    monkeypatch.setenv("PROJ", str(tmp_path / "proj"))
    assert shot.build_spec(vera_node(nuke, read))["plate"]["path"] == f"{tmp_path}/proj/comp/plates/plate.%04d.exr"


def test_nodes_of_the_same_name_in_different_groups_do_not_share_a_render(nuke, tmp_path):
    read = nuke.nodes.Read(file=f"{tmp_path}/plate.####.exr", first=1, last=4)
    at_root = vera_node(nuke, read)
    with nuke.nodes.Group():
        inner_read = nuke.nodes.Read(file=f"{tmp_path}/plate.####.exr", first=1, last=4)
        inside = vera_node(nuke, inner_read)
    assert at_root.name() == inside.name() == "VeraEdit1"
    specs = [shot.build_spec(n) for n in (at_root, inside)]
    assert specs[0]["output"]["dir"] != specs[1]["output"]["dir"]
    assert specs[1]["output"]["dir"].endswith("/Group1.VeraEdit1") and specs[1]["name"].endswith("_Group1.VeraEdit1")


def test_spec_paths_are_nukes_expanded_filename(nuke, tmp_path, monkeypatch):
    monkeypatch.setenv("SHOT_ROOT", str(tmp_path / "shots"))
    read = nuke.nodes.Read(file="$env(SHOT_ROOT)/sh010/plate.####.exr", first=1, last=4)
    assert shot.build_spec(vera_node(nuke, read))["plate"]["path"] == f"{tmp_path}/shots/sh010/plate.%04d.exr"


def press(node, button):
    node[button].execute()


def engine_stub(tmp_path, monkeypatch):
    """vera-render that accepts every shot and renders nothing (the Write-through is what is tested)."""
    script = tmp_path / "stub_render.py"
    script.write_text("import sys\nsys.exit(0)\n")
    monkeypatch.setenv("VERA_RENDER", f"{sys.executable} {script}")


@pytest.mark.parametrize("in_group", [False, True])
def test_non_read_source_is_written_through_a_write_node(nuke, tmp_path, monkeypatch, in_group):
    """Render Locally with a Grade as Source: a Write beside the Vera node (root, or its group) renders the
    Grade's frames; the plate files exist afterwards and the Write is gone."""
    engine_stub(tmp_path, monkeypatch)
    plate = write_plate(tmp_path / "plates", 1, 4, 32, 24)
    group = nuke.nodes.Group() if in_group else nuke.root()
    with group:
        read = nuke.nodes.Read()
        read["file"].fromUserText(f"{plate} 1-4")
        grade = nuke.nodes.Grade(inputs=[read])
        mask_read = nuke.nodes.Read()
        mask_read["file"].fromUserText(f"{plate} 1-4")
        roto = nuke.nodes.NoOp(inputs=[mask_read])
        node = vera_node(nuke, grade)
        node.setInput(1, roto)
    node["output_dir"].setValue(str(tmp_path / "out"))
    nuke.root()["workingSpaceLUT"].setValue("ACEScg")

    press(node, "render_local")

    assert nuke.messages == []
    where = "Group1." if in_group else ""
    assert [(e["node"][:len(where)], e["file"], e["first"], e["last"]) for e in nuke.executed] == [
        (where, f"{tmp_path}/out/plate/plate.%04d.exr", 1, 4), (where, f"{tmp_path}/out/mask/mask.%04d.exr", 1, 4)]
    assert all("VeraEdit" not in e["node"] for e in nuke.executed)  # not inside the gizmo
    assert sorted(p.name for p in (tmp_path / "out" / "plate").iterdir()) == [f"plate.{f:04d}.exr" for f in range(1, 5)]
    spec = json.loads((tmp_path / "out" / "shot.json").read_text())
    assert spec["plate"]["path"] == f"{tmp_path}/out/plate/plate.%04d.exr"
    assert spec["plate"]["colorspace"] == "ACEScg"  # written raw: the working space
    assert spec["mask"] == {"path": f"{tmp_path}/out/mask/mask.%04d.exr", "channel": "A", "start_frame": 1}
    assert nuke.allNodes("Write", group=nuke.root(), recurseGroups=True) == []  # the temporary Writes are gone


def test_movie_read_frame_offset_is_the_shots_numbering(nuke, tmp_path):
    frames = [np.full((16, 32, 3), v, np.float32) for v in (0.1, 0.3, 0.5, 0.7, 0.9)]
    movie = write_mp4(tmp_path / "clip.mp4", frames)
    read = nuke.nodes.Read()
    read["file"].fromUserText(str(movie))
    assert (read["first"].value(), read["last"].value()) == (1, 5)
    read["frame_mode"].setValue("start at")
    read["frame"].setValue("1001")
    node = vera_node(nuke, read)
    spec = shot.build_spec(node)
    assert spec["plate"]["start_frame"] == 1001 and (spec["plate"]["first"], spec["plate"]["last"]) == (1001, 1005)
    read["frame_mode"].setValue("offset")
    read["frame"].setValue("99")  # frame 1 of the movie shows at 100
    node["limit_range"].setValue(True)
    node["first_frame"].setValue(101)
    node["last_frame"].setValue(103)
    spec = shot.build_spec(node)
    assert spec["plate"]["start_frame"] == 100 and (spec["plate"]["first"], spec["plate"]["last"]) == (101, 103)
    # the engine agrees: those frames exist in the movie numbered that way
    node["output_dir"].setValue(str(tmp_path / "out"))
    path, _spec = shot.prepare(node)
    loaded = ShotSpec.load(path)
    assert loaded.open_plate(101, 103).frames == [101, 102, 103]


def test_problems_reach_the_artist_as_a_message_not_a_traceback(nuke, tmp_path):
    pattern = write_bbox_plate(tmp_path / "plates", 1, 5)
    read = nuke.nodes.Read(file=pattern, first=1, last=5)
    node = vera_node(nuke, read)
    node["output_dir"].setValue(str(tmp_path / "out"))

    node["instruction"].setValue("")
    press(node, "render_local")
    assert actions.last_run(node) is None
    assert "type an instruction" in nuke.messages[-1]

    node["instruction"].setValue("add a boat")
    node["limit_range"].setValue(True)
    node["first_frame"].setValue(3)
    node["last_frame"].setValue(9)
    press(node, "submit_farm")
    assert node["vera_job"].value() == ""
    assert "outside" in nuke.messages[-1] and read.name() in nuke.messages[-1]

    # a problem only the engine sees: vera-render validate exits 2, its lines go into the message
    node["limit_range"].setValue(False)
    node["model_bundle"].setValue(str(tmp_path / "no_such_bundle"))
    press(node, "render_local")
    assert actions.last_run(node) is None
    assert nuke.messages[-1].startswith("Vera cannot render this shot:")
    assert "no_such_bundle" in nuke.messages[-1] and "Traceback" not in nuke.messages[-1]

    nuke.nodes.VeraEdit(instruction="x")  # nothing connected
    press(nuke.allNodes("VeraEdit")[-1], "render_local")
    assert "connect a plate" in nuke.messages[-1]
