"""Never mix takes (issue 18): a shorter `run --force` moves the earlier take's final frames out of the sequence
into OUT/superseded/<take>/ (nothing deleted), so a Nuke Read of OUT/edit.####.exr shows one prompt; `status` and
`qc` still name the superseded take."""

import hashlib
import json

from vera.cli import main
from vera.status import status

from bundles import base_spec, write_plates, write_spec


def _frames(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("edit.*.exr"))}


def _shorter_take(tmp_path, shot, instruction="add a blue box", last=1009):
    spec = json.loads(shot.read_text())
    spec["plate"]["last"], spec["instruction"] = last, instruction
    write_spec(tmp_path, spec)


def test_a_shorter_forced_render_moves_the_old_take_out_of_the_sequence(tmp_path, shot, fake, capsys):
    out = tmp_path / "out"
    assert main(["run", str(shot), "--progress", "none"]) == 0  # 1001-1013, "add a red ball"
    first_take = _frames(out)
    old_fingerprint = json.loads((out / "manifest.json").read_text())["settings_fingerprint"]
    _shorter_take(tmp_path, shot)
    capsys.readouterr()
    assert main(["run", str(shot), "--force", "--progress", "none"]) == 0
    err = capsys.readouterr().err

    # the sequence a Read sees holds the new take alone
    assert sorted(_frames(out)) == [f"edit.{f}.exr" for f in range(1001, 1010)]
    # the old take is kept whole, byte for byte, with its manifest, under its settings fingerprint
    takes = sorted((out / "superseded").iterdir())
    assert [t.name for t in takes] == [old_fingerprint[:16]]
    assert _frames(takes[0]) == first_take
    assert json.loads((takes[0] / "manifest.json").read_text())["settings_fingerprint"] == old_fingerprint
    assert f"superseded/{old_fingerprint[:16]}" in err and "1001-1013" in err

    report = status(out)
    assert report["frames"]["other_settings"] == "" and report["complete"]
    assert report["superseded"] == {old_fingerprint[:16]: "1001-1013"}
    assert main(["status", str(out)]) == 0
    assert f"superseded/{old_fingerprint[:16]}: 1001-1013" in capsys.readouterr().out

    # qc over the folder: one take, passes, and names the take set aside beside it
    args = ["qc", "--plate", str(tmp_path / "plate.####.exr"), "--edit", str(out / "edit.####.exr"),
            "--last", "1009", "--progress", "none"]
    assert main(args) == 0
    assert f"superseded/{old_fingerprint[:16]}: 1001-1013" in capsys.readouterr().out


def test_a_take_superseded_twice_never_overwrites_the_first(tmp_path, shot, fake, capsys):
    """red (13 frames) -> blue (9) -> red again (13) -> blue again: the red take is set aside twice, into two
    folders; every file of every take is still there."""
    out = tmp_path / "out"
    assert main(["run", str(shot), "--progress", "none"]) == 0
    red = json.loads(shot.read_text())
    _shorter_take(tmp_path, shot)
    assert main(["run", str(shot), "--force", "--progress", "none"]) == 0
    write_spec(tmp_path, red)
    assert main(["run", str(shot), "--force", "--progress", "none"]) == 0
    _shorter_take(tmp_path, shot)
    assert main(["run", str(shot), "--force", "--progress", "none"]) == 0
    takes = sorted(t.name for t in (out / "superseded").iterdir())
    assert len(takes) == 3 and len({t[:16] for t in takes}) == 2
    assert sorted(len(list((out / "superseded" / t).glob("edit.*.exr"))) for t in takes) == [9, 13, 13]
    assert sorted(_frames(out)) == [f"edit.{f}.exr" for f in range(1001, 1010)]


def test_a_forced_render_with_the_same_settings_moves_nothing(tmp_path, tiny_bundle, fake):
    write_plates(tmp_path)
    shot = write_spec(tmp_path, base_spec(tiny_bundle))
    assert main(["run", str(shot), "--progress", "none"]) == 0
    assert main(["run", str(shot), "--force", "--progress", "none"]) == 0
    assert not (tmp_path / "out" / "superseded").exists() and len(_frames(tmp_path / "out")) == 13
