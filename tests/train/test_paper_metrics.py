"""The paper's content-preservation metrics: hand-checked values, the region per task, and `vera-train eval
--metrics paper` on a public-format test split written by `vera-train synth --format public-test`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from skimage.metrics import structural_similarity

from vera.errors import BadInput
from vera.train import paper_metrics
from vera.train.cli import main as vera_train
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


@pytest.mark.slow
def test_eval_paper_metrics_on_a_synthetic_public_test_split(tmp_path, capsys, monkeypatch):

    data = tmp_path / "test"
    assert vera_train(["synth", "--format", "public-test", "--out", str(data), "--n", "2", "--seed", "1000",
                       "--size", "64x48", "--frames", "5", "--progress", "none"]) == 0
    records = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    assert {r["edit_type"] for r in records} == {"obj_add", "background_replace"}
    for r in records:
        assert {"video_id", "input_path", "prompt", "edit_type", "mask_path", "alpha_path"} <= set(r)
        assert (data / r["input_path"]).is_file()
    capsys.readouterr()
    seen = []
    clips = []
    real_sample, real_render = paper_metrics.read_jsonl_sample, paper_metrics.render_frames
    monkeypatch.setattr(paper_metrics, "read_jsonl_sample",
                        lambda *a, **k: clips.append(real_sample(*a, **k)) or clips[-1])

    def spy_render(*args, **kwargs):
        layers = real_render(*args, **kwargs)
        seen.append((clips[-1], layers))
        return layers

    monkeypatch.setattr(paper_metrics, "render_frames", spy_render)
    table = tmp_path / "table.md"
    assert vera_train(["eval", "--metrics", "paper", "--data", str(data), "--json", "--markdown", str(table),
                       "--progress", "none"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["table"]) == {"object_addition", "background_change"}
    for row in report["table"].values():
        assert row["records"] == 1 and row["lpips"] is None
    # the same numbers from scikit-image on the layers the render produced (captured on their way out), the
    # composite done here by hand (A + B(1-a)) and the region from the record's own files
    assert len(seen) == 2
    untouched_seen = 0
    for (clip, layers), row in zip(seen, report["records"]):
        frames = sorted(layers)
        source = clip.source[:len(frames)]
        rgb = np.stack([layers[f][0][..., :3] for f in frames])
        alpha = np.stack([layers[f][0][..., 3:4] for f in frames])
        composite = rgb + source * (1.0 - alpha)
        region = (clip.mask[:len(frames)] > 0.5) if clip.task == "background_change" else \
            (clip.alpha[:len(frames)] <= 1 / 255)
        mse = float(np.mean((source[region].astype(np.float64) - composite[region]) ** 2))
        expected_psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
        got_psnr = math.inf if row["psnr"] in ("inf", math.inf) else row["psnr"]
        assert got_psnr == pytest.approx(expected_psnr, rel=1e-4), clip.task
        ssim_maps = np.stack([structural_similarity(s_, c_, channel_axis=-1, data_range=1.0, full=True)[1]
                              for s_, c_ in zip(source, composite.astype(np.float32))]).mean(axis=-1)
        assert row["ssim"] == pytest.approx(float(ssim_maps[region].mean()), abs=1e-4), clip.task
        untouched = alpha[..., 0] == 0  # where the predicted alpha is 0 the source comes through exactly
        if untouched.any():  # (a background change's matte may cover its whole small frame)
            untouched_seen += 1
            assert psnr(source, composite.astype(np.float32), untouched) == math.inf, clip.task
    assert untouched_seen, "no render left any pixel at alpha 0: the exactness check never ran"
    assert any("LPIPS skipped" in note for note in report["notes"])
    markdown = table.read_text()
    assert markdown.startswith("| task | method | PSNR | SSIM | LPIPS | IS |") and "object addition" in markdown
