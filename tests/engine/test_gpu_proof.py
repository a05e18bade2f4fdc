"""benchmarks/gpu_proof.py: the whole script at toy size on the CPU (--smoke, as CI runs it), and the partial
results a run stopped by its hard limit leaves behind."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_proof.py"
ITEMS = ["env", "attention", "cuda_tests", "tier_5_resident", "tier_5_parts", "tier_9_resident", "tier_9_parts",
         "tier_5_layers", "tier_9_layers", "block_14b", "bf16_error", "vae_decode", "presets", "fp8", "compile"]


def run_proof(out, *options, timeout=900):
    return subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out), *options], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_smoke_run_measures_every_item_and_writes_json_and_markdown(tmp_path):
    done = run_proof(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "gpu_proof.json").read_text())
    items = results["items"]
    assert list(items) == ITEMS
    assert {name: item["status"] for name, item in items.items()} == dict.fromkeys(ITEMS, "ok")
    assert results["proof"]["ended"] == "done" and results["proof"]["smoke"] is True

    attention = items["attention"]
    assert attention["auto"] == "native"
    timed = {row["kernel"] for row in attention["kernels"] if row["usable"]}
    assert {"native", "_native_math"} <= timed
    for tier in ("resident", "parts", "layers"):
        item = items[f"tier_9_{tier}"]
        assert item["seconds_per_step"] > 0 and item["plan_peak_gib"] > 0 and item["flops_per_step"] > 0
    assert items["bf16_error"]["finite"] and 0 < items["bf16_error"]["relative_mean_error"] < 0.05
    presets = items["presets"]["presets"]
    assert presets["balanced"]["layer_evaluations"] < presets["quality"]["layer_evaluations"]
    assert presets.get("turbo", {}).get("status") in ("ok", "not available")
    assert items["vae_decode"]["output"] == [1, 3, 5, 48, 64]
    assert items["cuda_tests"]["returncode"] == 0 and "skipped" in items["cuda_tests"]["summary"]

    markdown = (tmp_path / "gpu_proof.md").read_text()
    assert "## Memory tiers" in markdown and "| 9 | layers | native |" in markdown
    assert "## Attention kernels" in markdown and "## Presets" in markdown


def test_a_run_stopped_by_its_hard_limit_keeps_what_it_measured(tmp_path):
    done = run_proof(tmp_path, "--hard-limit", "2", timeout=300)
    assert done.returncode == 3, done.stderr[-2000:]
    results = json.loads((tmp_path / "gpu_proof.json").read_text())
    assert results["proof"]["ended"] == "hard limit"
    assert results["items"]["env"]["status"] == "ok" and results["items"]["env"]["matmul_tflops"] > 0
    stopped = [item for item in results["items"].values() if item["status"] == "error"]
    assert len(stopped) == 1 and "hard limit of 2 s" in stopped[0]["error"]
    assert "| env | ok |" in (tmp_path / "gpu_proof.md").read_text()


def test_the_budget_skips_items_that_do_not_fit_with_the_reason(tmp_path):
    done = run_proof(tmp_path, "--budget", "0", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    items = json.loads((tmp_path / "gpu_proof.json").read_text())["items"]
    assert list(items) == ITEMS
    assert all(item["status"] == "skipped" and "time budget" in item["reason"] for item in items.values())
