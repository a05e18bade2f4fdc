"""Deeply nested JSON in any file vera reads (issue 18) is bad input: exit 2 and one line naming the file, never
"internal error: RecursionError" (exit 1). Each file kind is handed to the command that reads it."""

import shutil

import pytest

from vera.cli import main
from vera.jsonio import MAX_DEPTH, nesting_depth

from bundles import base_spec, write_plates, write_spec

DEEP = "[" * 100_000 + "]" * 100_000  # deeper than the interpreter's recursion limit


def _one_line_bad_input(capsys, code, name):
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and name in lines[0] and "nested" in lines[0], err


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_deep_shot_spec_is_bad_input(tmp_path, capsys, command):
    spec = tmp_path / "shot.json"
    spec.write_text('{"name": ' + DEEP + "}")
    _one_line_bad_input(capsys, main([command, str(spec)]), "shot.json")


def test_a_deep_render_manifest_is_bad_input(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_text('{"frames": ' + DEEP + "}")
    _one_line_bad_input(capsys, main(["status", str(tmp_path / "out")]), "manifest.json")


def _bundle_copy(tiny_bundle, tmp_path):
    return shutil.copytree(tiny_bundle, tmp_path / "bundle")


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_deep_bundle_json_is_bad_input(tmp_path, tiny_bundle, capsys, fake, command):
    bundle = _bundle_copy(tiny_bundle, tmp_path)
    (bundle / "bundle.json").write_text('{"config": ' + DEEP + "}")
    write_plates(tmp_path)
    spec = write_spec(tmp_path, base_spec(bundle))
    _one_line_bad_input(capsys, main([command, str(spec), *(["--progress", "none"] if command == "run" else [])]),
                        "bundle.json")


def test_a_deep_speed_json_is_bad_input(tmp_path, tiny_bundle, capsys):
    bundle = _bundle_copy(tiny_bundle, tmp_path)
    (bundle / "speed.json").write_text('{"curve": ' + DEEP + "}")
    write_plates(tmp_path)
    spec = write_spec(tmp_path, base_spec(bundle))
    code = main(["run", str(spec), "--speed", "balanced", "--progress", "none"])
    _one_line_bad_input(capsys, code, "speed.json")


def test_a_deep_input_hash_cache_is_only_a_cache(tmp_path, tiny_bundle, capsys, fake):
    """input_hashes.json is vera's own cache: a damaged one costs a re-hash, never the render."""
    write_plates(tmp_path)
    spec = write_spec(tmp_path, base_spec(tiny_bundle))
    (tmp_path / "out" / ".vera").mkdir(parents=True)
    (tmp_path / "out" / ".vera" / "input_hashes.json").write_text(DEEP)
    code = main(["run", str(spec), "--progress", "none"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "edit.1013.exr").is_file()


def test_nesting_is_measured_without_counting_brackets_in_strings():
    assert nesting_depth('{"a": [1, {"b": "[[[[{{{{"}]}') == 3
    assert nesting_depth('"\\"[[["') == 0
    assert nesting_depth("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)) == MAX_DEPTH + 1
