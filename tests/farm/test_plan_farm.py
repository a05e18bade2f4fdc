"""GPUs per render task on the farm (`vera-render submit --gpus N --gpu-memory GiB`), in each backend's own terms,
checked against that backend's parser or schema; the render task runs `--devices N` only when N > 1."""

import shlex
import xml.etree.ElementTree as Et

import pytest
import yaml

from vera.cli import main
from vera.farm.submission import submit
from vera.farm.deadline import read_info
from vera.farm.openjd import check_template

from bundles import base_spec, write_plates, write_spec

EXE = "/opt/vera/bin/vera-render"

# OpenCue's job spec DTD (cuebot/src/main/resources/public/dtd/cjsl-1.15.dtd) orders a layer's children so; Cuebot
# parses the spec with a validating parser, so the GPU elements must sit in this order.
CJSL_LAYER_ORDER = ["cmd", "range", "chunk", "cores", "threadable", "memory", "gpus", "gpu", "gpu_memory", "timeout",
                    "timeout_llu", "tags", "limits", "env", "services", "outputs"]


@pytest.fixture
def shot(tmp_path, tiny_bundle, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # PyOutline writes nothing to the user's home
    for var in ("CUEBOT_HOSTS", "OPENCUE_CONFIG_FILE", "OPENCUE_CONF", "SHOW"):
        monkeypatch.delenv(var, raising=False)
    write_plates(tmp_path)
    return write_spec(tmp_path, base_spec(tiny_bundle))


def test_openjd_host_requirements_pass_openjd_model(tmp_path, shot):
    info = submit(shot, "openjd", tmp_path / "job", executable=EXE, gpus=4, gpu_memory=24)
    template = yaml.safe_load((tmp_path / "job" / "template.yaml").read_text())
    check_template(template)  # openjd-model's own parser accepts it
    render, assemble = template["steps"]
    assert render["hostRequirements"] == {"amounts": [{"name": "amount.worker.gpu", "min": 4},
                                                      {"name": "amount.worker.gpu.memory", "min": 24 * 1024}]}
    assert "hostRequirements" not in assemble  # assembling is CPU work
    args = render["script"]["actions"]["onRun"]["args"]
    assert args[args.index("--devices") + 1] == "4"
    assert info.render_command[-2:] == ["--devices", "4"] and info.gpus == 4


def test_openjd_a_bad_gpu_amount_is_refused_by_the_parser(tmp_path, shot):
    template = yaml.safe_load(submit(shot, "openjd", tmp_path / "job", executable=EXE, gpus=2) and
                              (tmp_path / "job" / "template.yaml").read_text())
    check_template(template)
    template["steps"][0]["hostRequirements"]["amounts"][0]["name"] = "amount.worker.gpus"  # not a standard name
    with pytest.raises(Exception, match="not valid"):
        check_template(template)


def test_opencue_layer_gpus_in_the_dtd_order(tmp_path, shot):
    submit(shot, "opencue", tmp_path / "job", executable=EXE, gpus=2, gpu_memory=40)
    spec = Et.parse(tmp_path / "job" / "job.xml").getroot()
    render, assemble = spec.find("job/layers").findall("layer")
    assert render.findtext("gpus") == "2" and render.findtext("gpu_memory") == "40g"
    assert assemble.find("gpus") is None and assemble.find("gpu_memory") is None
    for layer in (render, assemble):
        tags = [child.tag for child in layer]
        positions = [CJSL_LAYER_ORDER.index(tag) for tag in tags]  # every child is a DTD layer element...
        assert positions == sorted(positions), tags                 # ...in the DTD's order
    assert shlex.split(render.findtext("cmd").replace("#IFRAME#", "0"))[-2:] == ["--devices", "2"]


def test_deadline_gpus_per_task(tmp_path, shot):
    submit(shot, "deadline", tmp_path / "job", executable=EXE, gpus=8, gpu_memory=80, group="gpu8")
    job = read_info(tmp_path / "job" / "render.job.info")
    plugin = read_info(tmp_path / "job" / "render.plugin.info")
    assert plugin["GPUsPerTask"] == "8"
    assert job["ExtraInfoKeyValue0"] == "GPUsPerTask=8" and job["ExtraInfoKeyValue1"] == "GPUMemoryGiB=80"
    assert job["Group"] == "gpu8"
    assert plugin["Arguments"].endswith("--devices 8")
    assert "GPUsPerTask" not in read_info(tmp_path / "job" / "assemble.plugin.info")


def test_one_gpu_asks_for_a_gpu_but_runs_no_devices_flag(tmp_path, shot):
    info = submit(shot, "openjd", tmp_path / "job", executable=EXE, gpus=1)
    assert "--devices" not in info.render_command
    template = yaml.safe_load((tmp_path / "job" / "template.yaml").read_text())
    assert template["steps"][0]["hostRequirements"] == {"amounts": [{"name": "amount.worker.gpu", "min": 1}]}
    # Without --gpus nothing is asked (CPU farms, the demo): the job is as before.
    info = submit(shot, "deadline", tmp_path / "job2", executable=EXE)
    assert "--devices" not in info.render_command
    assert "GPUsPerTask" not in read_info(tmp_path / "job2" / "render.plugin.info")


def test_submit_refuses_gpus_the_planner_cannot_fit(tmp_path, shot, capsys):
    # The tiny bundle needs about 1 GiB (mostly the CUDA context allowance): 0.5 GiB cards cannot hold it.
    code = main(["submit", str(shot), "--farm", "openjd", "--out", str(tmp_path / "job"), "--gpus", "1",
                 "--gpu-memory", "0.5"])
    assert code == 2
    err = capsys.readouterr().err
    assert str(shot) in err and "more than the 0.5 GiB per GPU given" in err
    assert not (tmp_path / "job" / "template.yaml").exists()
    assert main(["submit", str(shot), "--farm", "openjd", "--out", str(tmp_path / "job"), "--gpus", "0"]) == 2
