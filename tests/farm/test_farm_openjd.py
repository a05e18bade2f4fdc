"""Open Job Description: the template passes `openjd check`, and `openjd run` renders a whole shot locally."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vera.cli import main
from vera.farm import BACKENDS
from vera.farm.submission import submit
from vera.status import status

from bundles import FIRST, LAST, base_spec, write_plates, write_spec

OPENJD = str(Path(sys.executable).parent / "openjd")


def test_template_is_valid_and_has_one_task_per_window(tmp_path, shot, capsys):
    assert "openjd" in BACKENDS
    assert main(["submit", str(shot), "--farm", "openjd", "--out", str(tmp_path / "job"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    path = tmp_path / "job" / "template.yaml"
    assert info["files"] == [str(path)] and info["windows"] == 2 and not info["launched"]

    check = subprocess.run([OPENJD, "check", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "passes validation" in check.stdout

    template = yaml.safe_load(path.read_text())
    assert template["specificationVersion"] == "jobtemplate-2023-09"
    assert template["name"] == "vera_sh010"
    params = {p["name"]: p for p in template["parameterDefinitions"]}
    assert params["ShotSpec"]["default"] == str(shot)
    vera = params["VeraRender"]["default"]
    assert Path(vera).is_absolute() and Path(vera).name == "vera-render" and Path(vera).is_file()

    render, assemble = template["steps"]
    assert render["name"] == "Render" and assemble["name"] == "Assemble"
    [window] = render["parameterSpace"]["taskParameterDefinitions"]
    assert window == {"name": "Window", "type": "INT", "range": "0-1"}
    assert render["script"]["actions"]["onRun"] == {
        "command": "{{Param.VeraRender}}",
        "args": ["run", "{{Param.ShotSpec}}", "--window", "{{Task.Param.Window}}", "--progress", "openjd"]}
    assert assemble["dependencies"] == [{"dependsOn": "Render"}]
    assert "parameterSpace" not in assemble
    assert assemble["script"]["actions"]["onRun"]["args"] == ["assemble", "{{Param.ShotSpec}}", "--progress",
                                                             "openjd"]


@pytest.mark.parametrize("last, frames, overlap, windows", [(1005, 9, 2, 1), (1040, 9, 2, 6), (1013, 13, 2, 1)])
def test_task_range_follows_the_window_plan(tmp_path, tiny_bundle, last, frames, overlap, windows):
    write_plates(tmp_path, FIRST, last)
    spec = base_spec(tiny_bundle, frames=frames, overlap=overlap)
    spec["plate"]["last"] = last
    info = submit(write_spec(tmp_path, spec), "openjd", tmp_path / "job", executable="/opt/vera/bin/vera-render")
    assert info.windows == windows
    template = yaml.safe_load((tmp_path / "job" / "template.yaml").read_text())
    expected = "0" if windows == 1 else f"0-{windows - 1}"
    assert template["steps"][0]["parameterSpace"]["taskParameterDefinitions"][0]["range"] == expected
    assert template["parameterDefinitions"][1]["default"] == "/opt/vera/bin/vera-render"
    assert info.render_command[0] == "/opt/vera/bin/vera-render"


@pytest.mark.slow
def test_openjd_run_renders_the_whole_shot(tmp_path, shot):
    """`openjd run --step Assemble --run-dependencies`: 2 window tasks then assemble, with a random model."""
    info = submit(shot, "openjd", tmp_path / "job")
    assert info.launch_command[1:] == ["run", str(tmp_path / "job" / "template.yaml"), "--step", "Assemble",
                                       "--run-dependencies"]
    result = subprocess.run([OPENJD, *info.launch_command[1:]], capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "openjd_progress: 100" in log
    assert "sh010: window 0 rendered" in log and "sh010: window 1 rendered" in log
    frames = sorted(p.name for p in (tmp_path / "out").glob("edit.*.exr"))
    assert frames == [f"edit.{f}.exr" for f in range(FIRST, LAST + 1)]
    report = status(tmp_path / "out", verify=True)
    assert report["complete"] and report["windows"]["done"] == [0, 1]


def test_submit_refuses_an_output_folder_rendered_differently(tmp_path, tiny_bundle, shot, capsys):
    from vera.layout import load_shot
    from vera.manifest import prepare_manifest
    from vera.outputs import read_manifest

    prepare_manifest(load_shot(shot))  # as a first task would
    spec = base_spec(tiny_bundle)
    spec["instruction"] = "add a blue box"
    write_spec(tmp_path, spec)
    args = ["submit", str(shot), "--farm", "openjd", "--out", str(tmp_path / "job")]
    assert main(args) == 2
    assert "instruction" in capsys.readouterr().err and not (tmp_path / "job").exists()
    assert main([*args, "--force"]) == 0
    assert read_manifest(tmp_path / "out")["settings"]["spec"]["instruction"] == "add a blue box"
