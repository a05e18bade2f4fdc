"""Jobs for the monitor: real plates and edit layers on disk, a manifest per job, a job registry.

Used by tests/nuke/test_monitor.py, and run as a script to make the screenshot in docs/nuke.md:

    QT_QPA_PLATFORM=offscreen python tests/monitor_demo.py docs/images/monitor.png
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bundles import plate_pixels  # noqa: E402
from vera.exr import write_exr, write_layers  # noqa: E402  (the engine's writers: files as it writes them)

W, H = 192, 108
SCRIPT = "/shows/demo/shot010/comp/shot010_comp_v003.nk"


def edit_layer(frame: int, hue=(0.9, 0.15, 0.1)):
    """A premultiplied ball moving left to right, and its matte."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    cx, cy, r = 30 + 6 * (frame % 20), H * 0.45, H * 0.22
    matte = np.clip(r - np.hypot(x - cx, y - cy), 0.0, 1.0)
    rgba = np.zeros((H, W, 4), np.float32)
    shade = 0.6 + 0.4 * np.clip((cy - y) / r, -1, 1)
    for c in range(3):
        rgba[..., c] = hue[c] * shade * matte
    rgba[..., 3] = matte
    return rgba, matte


def write_job_files(out_dir: Path, plate_dir: Path, first: int, last: int, done: list, hue, instruction: str,
                    name: str, windows: dict, task="object_addition"):
    out_dir.mkdir(parents=True, exist_ok=True)
    plate_dir.mkdir(parents=True, exist_ok=True)
    for frame in done:
        plate = plate_pixels(frame, W, H)
        write_exr(plate_dir / f"plate.{frame:04d}.exr", {c: plate[..., i] for i, c in enumerate("RGBA")},
                  (0, 0, W - 1, H - 1))
        rgba, _matte = edit_layer(frame, hue)
        write_layers(out_dir / f"edit.{frame:04d}.exr", rgba, (0, 0, W - 1, H - 1), {"shot": name})
    spec = {"vera_shot": 1, "name": name,
            "plate": {"path": str(plate_dir / "plate.####.exr"), "first": first, "last": last,
                      "colorspace": "ACEScg", "layer": "rgba"},
            "task": task, "instruction": instruction, "negative_prompt": "", "mask": None,
            "model": {"bundle": "demo", "device": "auto"},
            "sampler": {"name": "unipc", "steps": None, "guidance": None, "shift": None}, "seed": 0,
            "window": {"frames": None, "overlap": 8},
            "output": {"dir": str(out_dir), "name": "edit", "compression": "zip", "padding": 4},
            "matte": {"threshold": 1 / 255}}
    (out_dir / "shot.json").write_text(json.dumps(spec, indent=2))
    # every field vera.schemas.RenderManifest requires (vera-render status checks them), with the real checksums
    sha256 = {f: hashlib.sha256((out_dir / f"edit.{f:04d}.exr").read_bytes()).hexdigest() for f in done}
    manifest = {"vera_manifest": 1, "shot": name, "spec_path": str(out_dir / "shot.json"), "first": first,
                "last": last, "output_name": "edit", "output_padding": 4, "settings_fingerprint": "demo",
                "settings": {}, "inputs_fingerprint": "demo", "inputs": {},
                "windows": windows, "frames": {str(f): {"status": "done", "sha256": sha256[f]} for f in done}}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return str(out_dir / "shot.json")


def build(root: Path) -> dict:
    """Four jobs of one script: a local run in progress, a farm job half done, one complete, one failed.

    Returns {"jobs_file", "script", "sleeper" (the running local job's process), "ids"}.
    """
    renders = root / "vera_renders" / "shot010_comp_v003"
    plates = root / "plates"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    jobs = []

    def job(**fields):
        fields.setdefault("submitted", f"2026-11-24T05:{50 - len(jobs):02d}:00+00:00")
        fields.setdefault("id", f"job{len(jobs) + 1}")
        fields.setdefault("script", SCRIPT)
        jobs.append(fields)
        return fields

    out = renders / "VeraEdit1"
    spec = write_job_files(out, plates / "balloon", 1001, 1024, list(range(1001, 1009)), (0.9, 0.15, 0.1),
                           "add a red balloon drifting left to right", "shot010_VeraEdit1",
                           {"0": {"first": 1001, "last": 1012, "status": "done"},
                            "1": {"first": 1009, "last": 1024, "status": "running"}})
    log = out / "vera-run.log"
    log.write_text("shot010_VeraEdit1 window 0: 12/12 (100%) decoded\n"
                   "shot010_VeraEdit1 window 1: 7/12 (58%) step 5/8\n")
    job(kind="local", node="VeraEdit1", node_id="aa01", spec=spec, out_dir=str(out), log=str(log),
        pid=sleeper.pid, state="running", farm="", frames=[1001, 1024], name="shot010_VeraEdit1")

    out = renders / "VeraEdit2"
    spec = write_job_files(out, plates / "bird", 1001, 1048, list(range(1001, 1013)), (0.2, 0.5, 0.95),
                           "add a blue bird landing on the railing", "shot010_VeraEdit2",
                           {"0": {"first": 1001, "last": 1017, "status": "done"},
                            "1": {"first": 1010, "last": 1033, "status": "running"},
                            "2": {"first": 1026, "last": 1048, "status": "missing"}})
    job(kind="farm", farm="openjd", node="VeraEdit2", node_id="aa02", spec=spec, out_dir=str(out),
        job_dir=str(out / "farm" / "openjd"), state="submitted", frames=[1001, 1048], name="shot010_VeraEdit2",
        farm_job={"backend": "openjd", "files": []})

    out = renders / "VeraEdit3"
    spec = write_job_files(out, plates / "sky", 1001, 1010, list(range(1001, 1011)), (0.95, 0.75, 0.2),
                           "replace the sky with a golden sunset", "shot010_VeraEdit3",
                           {"0": {"first": 1001, "last": 1010, "status": "done"}}, task="background_change")
    job(kind="farm", farm="deadline", node="VeraEdit3", node_id="aa03", spec=spec, out_dir=str(out),
        job_dir=str(out / "farm" / "deadline"), state="submitted", frames=[1001, 1010], name="shot010_VeraEdit3")

    out = renders / "VeraEdit4"
    spec = write_job_files(out, plates / "lamp", 1001, 1020, [], (0.5, 0.5, 0.5), "add a street lamp",
                           "shot010_VeraEdit4", {"0": {"first": 1001, "last": 1020, "status": "missing"}})
    job(kind="local", node="VeraEdit4", node_id="aa04", spec=spec, out_dir=str(out), log=str(out / "vera-run.log"),
        pid=None, state="failed", message="plate.1007.exr (frame 1007): truncated file", farm="",
        frames=[1001, 1020], name="shot010_VeraEdit4")

    jobs_file = root / "jobs.json"
    jobs_file.write_text(json.dumps({"jobs": jobs}, indent=2))
    return {"jobs_file": str(jobs_file), "script": SCRIPT, "sleeper": sleeper, "ids": [j["id"] for j in jobs]}


def screenshot(png: str) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("VERA_RENDER", str(Path(sys.executable).parent / "vera-render"))  # oiiotool beside it
    with tempfile.TemporaryDirectory(prefix="vera-demo-") as tmp:
        demo = build(Path(tmp))
        os.environ["VERA_JOBS"] = demo["jobs_file"]
        try:
            from vera_nuke.monitor import MonitorPanel
            from vera_nuke.qt import QtWidgets

            app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
            panel = MonitorPanel(script=demo["script"], status_fn=lambda out_dir: None, background=False,
                                 auto_refresh=False)
            panel.resize(1180, 420)
            panel.select_job(demo["ids"][1])
            panel.show()
            app.processEvents()
            Path(png).parent.mkdir(parents=True, exist_ok=True)
            assert panel.grab().save(png), png
            panel.close()
        finally:
            demo["sleeper"].kill()
            demo["sleeper"].wait()


if __name__ == "__main__":
    screenshot(sys.argv[1] if len(sys.argv) > 1 else str(HERE.parent / "docs" / "images" / "monitor.png"))
