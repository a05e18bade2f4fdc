"""No command writes over its own inputs (issue 14, data loss).

`comp`, `run`, `assemble`, `validate` and `demo` pointed at their own inputs (directly, through a symlinked
folder, through a differently spelled frame pattern) exit 2 before anything is written, and every input byte
is unchanged (sha256 before and after).
"""

import hashlib
import os
from pathlib import Path

import pytest

from vera.cli import main

from bundles import base_spec, write_plates, write_spec
from images import write_exr_sequence


def hashes(folder: Path) -> dict:
    """sha256 of every regular file under `folder` (symlinks not followed: each byte counted once)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


# ----------------------------------------------------------------------------------------------- comp

@pytest.fixture
def comp_inputs(tmp_path):
    plate = write_exr_sequence(tmp_path / "plate", "plate", range(1, 4), 8, 12)
    edit = write_exr_sequence(tmp_path / "edit", "edit", range(1, 4), 8, 12, seed=5)
    (tmp_path / "link").symlink_to(tmp_path / "plate")
    return tmp_path, plate, edit


@pytest.mark.parametrize("out", [
    "plate/plate.####.exr",      # the plate itself
    "edit/edit.####.exr",        # the edit itself
    "plate/plate.%04d.exr",      # the plate, spelled printf-style
    "plate/plate.@@@@.exr",      # the plate, spelled with @
    "link/plate.####.exr",       # the plate through a symlinked folder
    "edit/edit.0002.exr",        # one frame (a single name for three frames is refused anyway, but not by luck)
])
def test_comp_refuses_to_write_over_its_inputs(comp_inputs, capsys, out):
    root, plate, edit = comp_inputs
    before = hashes(root)
    assert main(["comp", "--plate", plate, "--edit", edit, "--out", str(root / out), "--progress", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "input" in err[0], err
    assert hashes(root) == before


@pytest.mark.parametrize("link", ["symlink", "hard link"])
def test_comp_refuses_a_linked_output_frame(comp_inputs, capsys, link):
    root, plate, edit = comp_inputs
    (root / "comp").mkdir()
    if link == "symlink":
        (root / "comp" / "comp.0002.exr").symlink_to(root / "plate" / "plate.0002.exr")
    else:
        os.link(root / "plate" / "plate.0002.exr", root / "comp" / "comp.0002.exr")
    before = hashes(root)
    assert main(["comp", "--plate", plate, "--edit", edit, "--out", str(root / "comp" / "comp.####.exr"),
                 "--progress", "none"]) == 2
    assert "plate.0002.exr" in capsys.readouterr().err
    assert hashes(root) == before  # (a hard link's bytes are counted under both names)
    assert not (root / "comp" / "comp.0001.exr").exists()  # refused before anything was written


@pytest.mark.parametrize("target", ["plate/plate.0001.exr", "comp/comp.0003.exr"])
def test_qc_json_report_may_not_replace_an_input(comp_inputs, capsys, target):
    root, plate, edit = comp_inputs
    comp = str(root / "comp" / "comp.####.exr")
    assert main(["comp", "--plate", plate, "--edit", edit, "--out", comp, "--progress", "none"]) == 0
    before = hashes(root)
    assert main(["qc", "--plate", plate, "--edit", edit, "--comp", comp, "--json", str(root / target),
                 "--progress", "none"]) == 2
    assert hashes(root) == before


# ----------------------------------------------------------------------------------------------- run / assemble

def _spec(tmp_path, tiny_bundle, **output):
    write_plates(tmp_path)
    write_plates(tmp_path, name="mask", seed=3)
    spec = base_spec(tiny_bundle)
    spec["mask"] = {"path": "mask.####.exr", "channel": "R"}
    spec["output"] = output
    return spec


@pytest.mark.parametrize("output, plate_path", [
    ({"dir": ".", "name": "plate"}, "plate.####.exr"),            # final frames over the plate
    ({"dir": ".", "name": "mask"}, "plate.####.exr"),             # final frames over the mask
    ({"dir": "link", "name": "plate"}, "plate.####.exr"),         # through a symlink to the plate's folder
    ({"dir": ".", "name": "plate"}, "plate.%04d.exr"),            # plate spelled %04d, output as ####
    ({"dir": ".", "name": "plate"}, "plate.@@@@.exr"),
    ({"dir": "out"}, "out/.vera/cache/w000/edit.####.exr"),       # the window cache over the plate
])
@pytest.mark.parametrize("command", [["run"], ["run", "--window", "0"], ["assemble"], ["validate"]])
def test_run_and_assemble_refuse_outputs_over_plate_or_mask(tmp_path, tiny_bundle, fake, capsys, command,
                                                            output, plate_path):
    (tmp_path / "link").symlink_to(tmp_path)
    spec = _spec(tmp_path, tiny_bundle, **output)
    if "/" in plate_path:  # the plate's frames where the window cache goes
        folder, name = plate_path.rsplit("/", 1)
        write_plates(tmp_path / folder, name=name.split(".")[0])
    spec["plate"]["path"] = plate_path
    path = write_spec(tmp_path, spec)
    before = hashes(tmp_path)
    args = [command[0], str(path), *command[1:]] + ([] if command[0] == "validate" else ["--progress", "none"])
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "input" in err and "output" in err
    assert hashes(tmp_path) == before
    assert fake.calls == []
    assert not (tmp_path / "manifest.json").exists() and not (tmp_path / "out" / "manifest.json").exists()


def test_an_output_folder_beside_the_plate_is_fine(tmp_path, tiny_bundle, fake):
    """Writing edit.####.exr into the plate's own folder is allowed: only same files are refused."""
    spec = _spec(tmp_path, tiny_bundle, dir=".", name="edit")
    before = hashes(tmp_path)
    assert main(["run", str(write_spec(tmp_path, spec)), "--progress", "none"]) == 0
    after = hashes(tmp_path)
    assert {k: v for k, v in after.items() if k in before and k != "shot.json"} == \
        {k: v for k, v in before.items() if k != "shot.json"}
    assert (tmp_path / "edit.1001.exr").is_file()


# ----------------------------------------------------------------------------------------------- demo

@pytest.mark.parametrize("plate", ["plate/plate.####.exr", "plate/plate.%04d.exr", "link/plate/plate.####.exr"])
def test_demo_refuses_a_plate_inside_its_own_output_folder(tmp_path, capsys, plate):
    out = tmp_path / "demo"
    write_plates(out / "plate", 1, 5)
    (tmp_path / "link").symlink_to(out)
    before = hashes(tmp_path)
    target = tmp_path / "link" if plate.startswith("link") else out
    assert main(["demo", "--out", str(target), "--plate", str(out / plate.removeprefix("link/")),
                 "--progress", "none"]) == 2
    assert "input" in capsys.readouterr().err
    assert hashes(tmp_path) == before
    assert sorted(os.listdir(out)) == ["plate"]


# ----------------------------------------------------------------------------------------------- convert

@pytest.mark.parametrize("where", ["file", "folder"])
def test_convert_refuses_to_write_over_its_source_checkpoint(tmp_path, capsys, where):
    from test_dit import diffusers_wan

    from vera.model.configs import get_config

    wan = diffusers_wan(get_config("vera-tiny"), seed=3)
    wan.save_pretrained(tmp_path / "wan")
    source = next((tmp_path / "wan").glob("*.safetensors"))
    before = hashes(tmp_path)
    argv = ["convert", "--from-wan", str(source if where == "file" else tmp_path / "wan"), "--out", str(source)]
    assert main(argv) == 2
    assert "input" in capsys.readouterr().err
    assert hashes(tmp_path) == before
