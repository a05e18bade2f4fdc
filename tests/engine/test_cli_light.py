"""The light commands start without torch (issue 19): `vera-render --help`, `status`, `validate` of a shot with
a local bundle, `plan` and `submit` (without --launch) never import torch, diffusers or transformers, since the
Nuke node and the farm wrappers call them all the time. Each runs in a fresh interpreter; what it imported is
read from sys.modules afterwards. The start-up times are measured by benchmarks/cli_startup_bench.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from bundles import base_spec, write_plates, write_spec

from vera.layout import load_shot
from vera.manifest import prepare_manifest

HEAVY = ("torch", "diffusers", "transformers")
PROBE = """
import json, sys
from vera.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help
    code = exc.code
print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


@pytest.fixture(scope="module")
def shot(tmp_path_factory, tiny_bundle):
    folder = tmp_path_factory.mktemp("light")
    write_plates(folder)
    path = write_spec(folder, base_spec(tiny_bundle))
    prepare_manifest(load_shot(path))  # an output folder with a manifest, as the first farm task leaves it
    return path


def _run(*argv) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *map(str, argv)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("command", ["--help", "status", "validate", "plan", "submit"])
def test_light_commands_never_import_torch(command, shot, tiny_bundle, tmp_path):
    argv = {"--help": ["--help"],
            "status": ["status", shot.parent / "out"],
            "validate": ["validate", shot],
            "plan": ["plan", "--bundle", tiny_bundle, "--gpu-memory", "24"],
            "submit": ["submit", shot, "--farm", "openjd", "--out", tmp_path / "job"]}[command]
    result = _run(*argv)
    assert result == {"code": 0, "heavy": []}


def test_a_heavy_command_does_import_torch(shot):
    """The probe sees an import when there is one: `run --devices 2` starts from torch's launcher (vera.launch),
    here only to refuse a spec that is not there."""
    result = _run("run", shot.parent / "missing.json", "--devices", "2")
    assert result["code"] == 2 and "torch" in result["heavy"]
