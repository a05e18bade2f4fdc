"""OpenCue: the PyOutline job serialises (offline) to the XML spec we expect, checked element by element."""

import os
import shlex
import xml.etree.ElementTree as Et

import pytest

from vera.cli import main
from vera.farm.submission import submit

from bundles import base_spec, write_plates, write_spec

EXE = "/opt/vera tools/bin/vera-render"  # a space, to check the shell quoting


@pytest.fixture
def shot(tmp_path, tiny_bundle, monkeypatch):
    # PyOutline must not write to the user's home, nor find a Cuebot of this machine.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("CUEBOT_HOSTS", "OPENCUE_CONFIG_FILE", "OPENCUE_CONF", "SHOW"):
        monkeypatch.delenv(var, raising=False)
    folder = tmp_path / "shot folder"
    folder.mkdir()
    write_plates(folder)
    return write_spec(folder, base_spec(tiny_bundle))


def test_job_xml_key_by_key(tmp_path, shot):
    shot_env = os.environ.get("SHOT")
    info = submit(shot, "opencue", tmp_path / "job", executable=EXE, show="myshow", priority=70)
    assert os.environ.get("SHOT") == shot_env  # PyOutline's setup() sets $SHOT; we put it back
    assert info.files == [str(tmp_path / "job" / "job.xml")] and info.windows == 2

    text = (tmp_path / "job" / "job.xml").read_text()
    assert text.startswith('<?xml version="1.0"?><!DOCTYPE spec PUBLIC "SPI Cue  Specification Language"')
    spec = Et.fromstring(text)
    assert spec.tag == "spec"
    assert spec.findtext("show") == "myshow"
    assert spec.findtext("shot") == "sh010"
    assert spec.findtext("facility") == "local"
    assert spec.findtext("user")
    [job] = spec.findall("job")
    assert job.get("name") == "vera_sh010"
    assert job.findtext("paused") == "False"
    assert job.findtext("priority") == "70"
    assert job.findtext("maxretries") == "2"

    render, assemble = job.find("layers").findall("layer")
    assert (render.get("name"), render.get("type")) == ("render", "Render")
    assert render.findtext("range") == "0-1" and render.findtext("chunk") == "1"
    assert shlex.split(render.findtext("cmd")) == [EXE, "run", str(shot), "--window", "#IFRAME#",
                                                    "--progress", "log"]
    assert render.findtext("services/service") == "shell"
    assert (assemble.get("name"), assemble.get("type")) == ("assemble", "Render")
    assert assemble.findtext("range") == "0" and assemble.findtext("chunk") == "1"
    assert shlex.split(assemble.findtext("cmd")) == [EXE, "assemble", str(shot), "--progress", "log"]

    [depend] = spec.find("depends").findall("depend")
    assert depend.get("type") == "LAYER_ON_LAYER" and depend.get("anyframe") == "False"
    assert depend.findtext("depjob") == "vera_sh010" and depend.findtext("deplayer") == "assemble"
    assert depend.findtext("onjob") == "vera_sh010" and depend.findtext("onlayer") == "render"

    # PyOutline's session went into the job folder, not ~/.opencue.
    assert (tmp_path / "job" / "session").is_dir()
    assert not (tmp_path / "home" / ".opencue").exists()


def test_frame_token_reaches_the_shell_bare(tmp_path, shot):
    submit(shot, "opencue", tmp_path / "job", executable=EXE)
    cmd = Et.parse(tmp_path / "job" / "job.xml").getroot().find("job/layers/layer").findtext("cmd")
    # RQD substitutes #IFRAME# textually, then a shell runs the line.
    assert shlex.split(cmd.replace("#IFRAME#", "1"))[4] == "1"
    assert Et.parse(tmp_path / "job" / "job.xml").getroot().findtext("show") == "vera"


def test_launch_without_a_cuebot_is_bad_input(tmp_path, shot, capsys):
    code = main(["submit", str(shot), "--farm", "opencue", "--out", str(tmp_path / "job"), "--launch"])
    assert code == 2
    err = capsys.readouterr().err
    assert "CUEBOT_HOSTS" in err and "job.xml" in err
    assert (tmp_path / "job" / "job.xml").is_file()  # the job is still written
