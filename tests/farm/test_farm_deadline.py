"""Deadline 10: CommandLine job/plugin info files key by key, and the two-step submission with the dependency."""

import json
import shlex
import stat

import pytest

from vera.cli import main
from vera.farm.submission import submit
from vera.farm.deadline import read_info

from bundles import base_spec, write_plates, write_spec

EXE = "/opt/vera/bin/vera-render"


@pytest.fixture
def shot(tmp_path, tiny_bundle):
    folder = tmp_path / "shot folder"
    folder.mkdir()
    write_plates(folder)
    return write_spec(folder, base_spec(tiny_bundle))


def test_info_files_key_by_key(tmp_path, shot):
    info = submit(shot, "deadline", tmp_path / "job", executable=EXE, priority=65, pool="gpu", group="vera")
    job = tmp_path / "job"
    assert info.files == [str(job / n) for n in ("render.job.info", "render.plugin.info", "assemble.job.info",
                                                  "assemble.plugin.info")]
    out_dir = str(shot.parent / "out")
    common = {"Plugin": "CommandLine", "BatchName": "vera_sh010", "Priority": "65", "Pool": "gpu",
              "Group": "vera", "OverrideTaskFailureDetection": "True", "FailureDetectionTaskErrors": "3",
              "OutputDirectory0": out_dir, "ChunkSize": "1"}
    assert read_info(job / "render.job.info") == {
        **common, "Name": "vera_sh010 render", "Frames": "0-1", "Comment": "2 window(s) of frames 1001-1013"}
    assert read_info(job / "assemble.job.info") == {
        **common, "Name": "vera_sh010 assemble", "Frames": "0",
        "Comment": "cross-fade the windows into the final frames"}

    render = read_info(job / "render.plugin.info")
    assert render == {"Executable": EXE, "Arguments": render["Arguments"], "StartupDirectory": str(shot.parent),
                      "Shell": "default", "ShellExecute": "False"}
    assert shlex.split(render["Arguments"]) == ["run", str(shot), "--window", "<STARTFRAME>", "--progress",
                                                "deadline"]
    assemble = read_info(job / "assemble.plugin.info")
    assert assemble["Executable"] == EXE
    assert shlex.split(assemble["Arguments"]) == ["assemble", str(shot), "--progress", "deadline"]


def test_no_pool_or_group_unless_given(tmp_path, shot):
    submit(shot, "deadline", tmp_path / "job", executable=EXE)
    entries = read_info(tmp_path / "job" / "render.job.info")
    assert "Pool" not in entries and "Group" not in entries and entries["Priority"] == "50"
    assert "JobDependencies" not in read_info(tmp_path / "job" / "assemble.job.info")  # known only at submission


def test_launch_needs_deadlinecommand(tmp_path, shot, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["submit", str(shot), "--farm", "deadline", "--out", str(tmp_path / "job"), "--launch",
                 "--executable", EXE]) == 2
    assert "deadlinecommand" in capsys.readouterr().err


def test_launch_submits_render_then_assemble_depending_on_it(tmp_path, shot, monkeypatch, capsys):
    # A stand-in deadlinecommand: logs each call with the job info it was given, answers like Deadline does.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    fake = bin_dir / "deadlinecommand"
    fake.write_text(f"""#!/bin/sh
n=$(wc -l < "{log}" 2>/dev/null || echo 0)
echo "$1|$2|$(grep JobDependencies "$1")" >> "{log}"
echo "Submitting to Repository: /mnt/DeadlineRepository10"
echo "Result=Success"
echo "JobID=64f0c0ffee00000000000$n"
echo "The job was submitted successfully."
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert main(["submit", str(shot), "--farm", "deadline", "--out", str(tmp_path / "job"), "--launch", "--json",
                 "--executable", EXE]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["launched"] and info["job_ids"] == {"render": "64f0c0ffee000000000000",
                                                    "assemble": "64f0c0ffee000000000001"}
    job = tmp_path / "job"
    calls = log.read_text().splitlines()
    assert calls == [f"{job / 'render.job.info'}|{job / 'render.plugin.info'}|",
                     f"{job / 'assemble.job.info'}|{job / 'assemble.plugin.info'}|"
                     "JobDependencies=64f0c0ffee000000000000"]


def test_failed_submission_is_transient(tmp_path, shot, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "deadlinecommand"
    fake.write_text("#!/bin/sh\necho 'Error: could not connect to the repository'\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert main(["submit", str(shot), "--farm", "deadline", "--out", str(tmp_path / "job"), "--launch",
                 "--executable", EXE]) == 3
    assert "could not connect" in capsys.readouterr().err
