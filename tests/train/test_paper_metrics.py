"""The paper's content-preservation metrics: hand-checked values, the region per task, and `vera-train eval
--metrics paper` on a public-format test split written by `vera-train synth --format public-test`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vera.errors import BadInput
from vera.train.paper_metrics import keep_region, psnr, ssim


def video(seed=0, shape=(3, 24, 32, 3)):
    return np.random.default_rng(seed).uniform(0.1, 0.9, shape).astype(np.float32)


def test_identical_videos_give_infinite_psnr_and_unit_ssim():
    a = video()
    region = np.ones(a.shape[:3], bool)
    assert psnr(a, a.copy(), region) == math.inf
    assert ssim(a, a.copy(), region) == pytest.approx(1.0, abs=1e-6)


def test_a_known_perturbation_gives_its_analytic_psnr():
    """+0.01 on every channel of the region: MSE 1e-4, so PSNR = 10 log10(1 / 1e-4) = 40 dB exactly; pixels
    outside the region do not count however wrong they are."""
    a = video(1)
    region = np.zeros(a.shape[:3], bool)
    region[:, 4:20, 5:25] = True
    b = a.copy()
    b[region] += 0.01
    b[~region] = 0.0
    assert psnr(a, b, region) == pytest.approx(40.0, abs=1e-3)
    # SSIM: a small uniform offset keeps the structure (close to 1), noise destroys it
    shifted = a + np.float32(0.01)
    noisy = a + np.random.default_rng(2).normal(0, 0.1, a.shape).astype(np.float32)
    assert ssim(a, noisy, region) < 0.95 < 0.99 < ssim(a, shifted, region) < 1.0


def test_region_follows_the_task():
    mask = np.zeros((1, 4, 4), np.float32)
    mask[0, :2] = 1.0
    alpha = np.zeros((1, 4, 4), np.float32)
    alpha[0, 0, 0], alpha[0, 3, 3] = 0.5, 0.002
    assert keep_region("background_change", mask, alpha).sum() == 8  # the preserved subject
    kept = keep_region("object_addition", mask, alpha)
    assert kept.sum() == 15 and not kept[0, 0, 0] and kept[0, 3, 3]  # 0.002 <= 1/255 counts as untouched
    with pytest.raises(BadInput, match="alpha_path"):
        keep_region("object_addition", mask, None)


def test_eval_paper_metrics_on_a_synthetic_public_test_split(tmp_path, capsys):
    from vera.train.cli import main as vera_train

    data = tmp_path / "test"
    assert vera_train(["synth", "--format", "public-test", "--out", str(data), "--n", "2", "--seed", "1000",
                       "--size", "64x48", "--frames", "5", "--progress", "none"]) == 0
    records = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    assert {r["edit_type"] for r in records} == {"obj_add", "background_replace"}
    for r in records:
        assert {"video_id", "input_path", "prompt", "edit_type", "mask_path", "alpha_path"} <= set(r)
        assert (data / r["input_path"]).is_file()
    capsys.readouterr()
    table = tmp_path / "table.md"
    assert vera_train(["eval", "--metrics", "paper", "--data", str(data), "--json", "--markdown", str(table),
                       "--progress", "none"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["table"]) == {"object_addition", "background_change"}
    for row in report["table"].values():
        assert row["records"] == 1 and row["lpips"] is None
        assert 0 < row["ssim"] <= 1 and (row["psnr"] == "inf" or row["psnr"] > 0) and 0 <= row["iou"] <= 1
    assert any("LPIPS skipped" in note for note in report["notes"])
    markdown = table.read_text()
    assert markdown.startswith("| task | method | PSNR | SSIM | LPIPS | IS |") and "object addition" in markdown
