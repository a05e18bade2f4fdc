"""Shot-spec validation: every kind of bad input is reported, all at once, with exit code 2."""

import copy
import json

import numpy as np
import pytest

from vera.cli import main
from vera.errors import BadInput
from vera.shot import ShotSpec, load_valid, validate

from bundles import FIRST, LAST, base_spec, write_plates, write_spec


@pytest.fixture
def shot_dir(tmp_path):
    write_plates(tmp_path)
    return tmp_path


# ----------------------------------------------------------------------------------------------- tests

def test_a_good_spec_has_no_problems_and_loads(shot_dir):
    path = write_spec(shot_dir, base_spec())
    assert validate(path) == []
    spec = load_valid(path)
    assert isinstance(spec, ShotSpec)
    assert spec.window.frames == 9 and spec.plate.first == FIRST
    assert spec.resolve(spec.output.dir) == str(shot_dir / "out")


def _mutate(spec, dotted, value):
    *parents, key = dotted.split(".")
    node = spec
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DELETE:
        del node[key]
    else:
        node[key] = value


_DELETE = object()

# (what is wrong, key path, new value, words the problem must contain)
BAD_INPUTS = [
    ("unknown top-level key", "instructon", "x", ["instructon", "unknown key", "did you mean 'instruction'"]),
    ("unknown nested key", "plate.colourspace", "ACEScg", ["plate.colourspace", "did you mean 'colorspace'"]),
    ("unknown key far from any", "zzz", 1, ["zzz", "unknown key", "known keys"]),
    ("missing required key", "instruction", _DELETE, ["instruction", "missing"]),
    ("missing required nested key", "plate.colorspace", _DELETE, ["plate.colorspace", "missing"]),
    ("string instead of int", "plate.first", "1001", ["plate.first", "expected an integer", "string"]),
    ("bool instead of int", "seed", True, ["seed", "expected an integer", "boolean"]),
    ("number instead of string", "instruction", 5, ["instruction", "expected a string"]),
    ("list instead of object", "window", [9, 2], ["window", "expected an object"]),
    ("empty range", "plate.last", 1000, ["plate.first/last", "1001-1000"]),
    ("negative frame", "plate.first", -5, ["plate.first", "negative"]),
    ("window not 4k+1", "window.frames", 10, ["window.frames", "4k+1", "9", "13"]),
    ("overlap too large", "window.overlap", 5, ["window.overlap", "too large", "at most 4"]),
    ("negative overlap", "window.overlap", -1, ["window.overlap", "negative"]),
    ("unknown task", "task", "object_adition", ["task", "did you mean 'object_addition'"]),
    ("unknown sampler", "sampler.name", "eular", ["sampler.name", "did you mean 'euler'"]),
    ("zero steps", "sampler.steps", 0, ["sampler.steps", "at least 1"]),
    ("bad device", "model.device", "gpu", ["model.device", "gpu"]),
    ("missing bundle folder", "model.bundle", "no/such/bundle", ["model.bundle", "not found"]),
    ("unsafe shot name", "name", "sh 010/x", ["name", "letters, digits"]),
    ("unsafe output name", "output.name", "../edit", ["output.name"]),
    ("lossy compression", "output.compression", "dwaa", ["output.compression", "dwaa"]),
    ("padding out of range", "output.padding", 0, ["output.padding", "between 1 and 10"]),
    ("empty output dir", "output.dir", " ", ["output.dir", "empty"]),
    ("threshold out of range", "matte.threshold", 1.5, ["matte.threshold", "[0, 1)"]),
    ("future schema", "vera_shot", 2, ["vera_shot", "version 2"]),
    ("empty instruction", "instruction", "  ", ["instruction", "empty"]),
    ("missing plate files", "plate.path", "nothere.####.exr", ["plate.path", "missing frames", "1001-1013"]),
    ("a valid mask (control)", "mask", {"path": "plate.####.exr", "channel": "R"}, None),  # RGB: no A
]


@pytest.mark.parametrize("what, key, value, words", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_each_kind_of_bad_input_is_reported(shot_dir, what, key, value, words):
    spec = base_spec()
    _mutate(spec, key, value)
    problems = validate(write_spec(shot_dir, spec))
    if words is None:
        assert problems == []
        return
    assert len(problems) == 1, problems
    for word in words:
        assert word in problems[0], (word, problems[0])
    assert problems[0].startswith(str(shot_dir / "shot.json") + ": ")


def test_missing_frames_are_listed_compactly(shot_dir):
    for frame in (1003, 1004, 1010):
        (shot_dir / f"plate.{frame}.exr").unlink()
    spec = base_spec()
    spec["mask"] = {"path": "matte.####.exr"}
    write_plates(shot_dir, FIRST, 1005, name="matte")
    problems = validate(write_spec(shot_dir, spec))
    assert len(problems) == 2, problems
    plate, mask = problems
    assert "plate.path" in plate and "1003-1004,1010" in plate
    assert "mask.path" in mask and "1006-1013" in mask


def test_unreadable_files(tmp_path):
    assert validate(tmp_path / "nope.json") == [f"{tmp_path / 'nope.json'}: file not found"]
    (tmp_path / "broken.json").write_text('{"name": "a",}')
    [problem] = validate(tmp_path / "broken.json")
    assert "not valid JSON" in problem and "line 1" in problem
    (tmp_path / "list.json").write_text("[1, 2]")
    [problem] = validate(tmp_path / "list.json")
    assert "expected a JSON object" in problem


def test_every_problem_at_once(shot_dir):
    spec = base_spec()
    injected = [("instructon", "x"), ("plate.first", "1001"), ("task", "paint"), ("window.frames", 10),
                ("sampler.steps", 0), ("output.padding", 99), ("model.device", "tpu")]
    for key, value in injected:
        _mutate(spec, key, value)
    problems = validate(write_spec(shot_dir, spec))
    keys = sorted(p.split(": ")[1] for p in problems)
    assert keys == sorted(k for k, _ in injected), problems

    with pytest.raises(BadInput) as raised:
        load_valid(shot_dir / "shot.json")
    message = str(raised.value)
    assert f"({len(injected)} problems)" in message
    assert all(p in message for p in problems)


def test_validate_command_exit_codes(shot_dir, capsys):
    good = write_spec(shot_dir, base_spec(), "good.json")
    assert main(["validate", str(good)]) == 0
    assert "valid" in capsys.readouterr().out

    bad = base_spec()
    _mutate(bad, "window.overlap", 7)
    _mutate(bad, "sampler.nme", "euler")
    path = write_spec(shot_dir, bad, "bad.json")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "window.overlap" in err and "sampler.nme" in err and "2 problems" in err

    assert main(["validate", str(path), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False and len(report["problems"]) == 2


@pytest.mark.parametrize("command", [["run"], ["run", "--window", "0"], ["assemble"],
                                     ["submit", "--farm", "openjd", "--out", "JOB"]])
def test_every_command_validates_first(shot_dir, capsys, command):
    spec = base_spec()
    _mutate(spec, "window.frames", 8)
    _mutate(spec, "task", "nope")
    path = write_spec(shot_dir, spec)
    args = [a.replace("JOB", str(shot_dir / "job")) for a in command]
    assert main([args[0], str(path), *args[1:]]) == 2
    err = capsys.readouterr().err
    assert "window.frames" in err and "task" in err
    assert not (shot_dir / "out").exists() and not (shot_dir / "job").exists()


def test_validate_accepts_a_dict(shot_dir):
    spec = copy.deepcopy(base_spec())
    assert validate(spec, base_dir=shot_dir) == []
    spec["seed"] = -1
    assert validate(spec, base_dir=shot_dir) == ["seed: -1 is outside 0 .. 2**63-1"]
