import json
import shutil

import numpy as np
import pytest
import torch

from vera.errors import BadInput
from vera.train.cli import main as vera_train
from vera.train.data import (
    LayeredDataset, check_dataset, open_dataset, find_samples, frame_path, read_exr_sample, read_jsonl_sample,
    write_exr_frame, write_exr_sample, write_video,
)

W, H, F = 64, 48, 5


# --- fixtures -----------------------------------------------------------------------------------------------
def layered_arrays(frames=F, width=W, height=H):
    """A hand-made layered shot: a horizontal-gradient plate, a half-transparent green square element."""
    plate = np.zeros((frames, height, width, 3), np.float32)
    plate[..., 0] = np.linspace(0.1, 0.9, width)[None, None, :]
    plate[..., 2] = 0.25
    alpha = np.zeros((frames, height, width), np.float32)
    for i in range(frames):
        alpha[i, 10:30, 8 + 4 * i:28 + 4 * i] = 0.5
        alpha[i, 15:25, 13 + 4 * i:23 + 4 * i] = 1.0
    straight = np.array([0.2, 0.8, 0.3], np.float32)
    element = np.concatenate([straight * alpha[..., None], alpha[..., None]], axis=-1)
    mask = np.zeros((frames, height, width), np.float32)
    mask[:, 30:, :20] = 1.0
    return plate, element, mask, straight


def write_good_sample(folder, **kwargs):
    plate, element, mask, _ = layered_arrays()
    return write_exr_sample(folder, plate=plate, element=element, mask=mask, instruction="add a green box",
                            task="object_addition", **kwargs)


def write_public_set(root, records=1):
    """A tiny public-format train set: JSONL at the root, MP4s under videos/ referenced relatively."""
    plate, element, mask, straight = layered_arrays()
    alpha = element[..., 3]
    edit_rgb = np.broadcast_to(straight, plate.shape)
    composite = element[..., :3] + plate * (1 - alpha[..., None])
    lines = []
    for i in range(records):
        names = {k: f"videos/{i}_{k}.mp4" for k in ("input", "edit", "alpha", "mask", "comp")}
        for key, frames in zip(names, (plate, edit_rgb, alpha, mask, composite)):
            write_video(root / names[key], frames)
        composite_key = "composite_path" if i % 2 == 0 else "target_composite_path"
        lines.append({"edit_instruction": "Add a green square", "input_video_path": names["input"],
                      "edit_rgb_path": names["edit"], "edit_alpha_path": names["alpha"],
                      "mask_path": names["mask"], composite_key: names["comp"]})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return plate, edit_rgb, alpha, mask, composite


# --- layered EXR ----------------------------------------------------------------------------------------------
def test_exr_sample_reads_back_unpremultiplied_with_derived_composite(tmp_path):
    plate, element, mask, straight = layered_arrays()
    folder = write_good_sample(tmp_path / "shot_a", first=1001)
    assert sorted(p.name for p in (folder / "element").iterdir())[0] == "element.1001.exr"
    clip = read_exr_sample(folder)
    assert clip.instruction == "add a green box" and clip.task == "object_addition"
    np.testing.assert_allclose(clip.source, plate, atol=1e-3)
    np.testing.assert_allclose(clip.alpha, element[..., 3], atol=1e-3)
    np.testing.assert_allclose(clip.mask, mask, atol=1e-3)
    covered = element[..., 3] > 0
    np.testing.assert_allclose(clip.edit_rgb[covered], np.broadcast_to(straight, clip.edit_rgb[covered].shape),
                               atol=2e-3)
    assert np.all(clip.edit_rgb[~covered] == 0)  # undefined colour where alpha is 0: the fill (black)
    assert np.all(read_exr_sample(folder, edit_fill=0.5).edit_rgb[~covered] == 0.5)
    expected = element[..., :3] + plate * (1 - element[..., 3:])
    np.testing.assert_allclose(clip.composite, expected, atol=2e-3)
    part = read_exr_sample(folder, start=1, count=2)
    assert part.source.shape[0] == 2
    np.testing.assert_allclose(part.alpha, element[1:3, ..., 3], atol=1e-3)


def test_exr_comp_sequence_overrides_the_derived_composite(tmp_path):
    plate, element, mask, _ = layered_arrays()
    graded = np.full_like(plate, 0.3)
    folder = write_exr_sample(tmp_path / "s", plate=plate, element=element, composite=graded,
                              instruction="x", task="background_change")
    meta = json.loads((folder / "sample.json").read_text())
    assert meta["has_composite"] and not meta["has_mask"]
    clip = read_exr_sample(folder)
    np.testing.assert_allclose(clip.composite, graded, atol=1e-3)
    assert clip.mask is None


def test_dataset_yields_model_tensors_with_aspect_kept(tmp_path):
    for name in ("a", "b"):
        write_good_sample(tmp_path / name)
    dataset = LayeredDataset(tmp_path, frames=5, size=(64, 64))
    assert len(dataset) == 2
    item = dataset[0]
    assert item["source"].shape == (3, 5, 64, 64) and item["edit"].shape == (3, 5, 64, 64)
    assert item["alpha"].shape == (1, 5, 64, 64) and item["mask"].shape == (1, 5, 64, 64)
    assert item["source"].min() >= -1 and item["source"].max() <= 1
    # 64x48 fits 64x64 unscaled: 8 rows of padding above and below, black (-1) and matte 0
    assert torch.all(item["source"][:, :, :8] == -1) and torch.all(item["alpha"][:, :, -8:] == 0)
    plate, element, _, _ = layered_arrays()
    expected_source = torch.from_numpy(plate).permute(3, 0, 1, 2) * 2 - 1
    assert torch.allclose(item["source"][:, :, 8:56], expected_source, atol=3e-3)
    assert torch.allclose(item["alpha"][0, :, 8:56], torch.from_numpy(element[..., 3]), atol=2e-3)
    same = open_dataset(tmp_path, width=64, height=64, frames=5)[0]
    assert all(torch.equal(same[k], item[k]) for k in ("source", "edit", "alpha", "composite", "mask"))
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch["composite"].shape == (2, 3, 5, 64, 64) and batch["instruction"] == ["add a green box"] * 2


def test_dataset_clips_long_and_pads_short_samples(tmp_path):
    plate, element, mask, _ = layered_arrays(frames=3)
    write_exr_sample(tmp_path / "short", plate=plate, element=element, mask=mask, instruction="i",
                     task="object_addition")
    alpha = LayeredDataset(tmp_path, frames=5, size=(32, 24))[0]["alpha"][0]
    assert alpha.shape == (5, 24, 32)
    assert torch.equal(alpha[3], alpha[2]) and torch.equal(alpha[4], alpha[2])
    assert not torch.equal(alpha[1], alpha[2])
    with pytest.raises(BadInput, match="4k\\+1"):
        LayeredDataset(tmp_path, frames=4)


def test_dataset_reports_a_bad_sample_by_path(tmp_path):
    folder = write_good_sample(tmp_path / "s")
    frame_path(folder, "plate", 1003).unlink()
    with pytest.raises(BadInput, match="plate.####.exr: missing frames 1003"):
        LayeredDataset(tmp_path, frames=5, size=(32, 24))[0]


# --- public JSONL + MP4 -------------------------------------------------------------------------------------
def test_public_format_reads_mp4s_relative_to_the_jsonl(tmp_path):
    plate, edit_rgb, alpha, mask, composite = write_public_set(tmp_path, records=2)
    fmt, samples, problems = find_samples(tmp_path)
    assert fmt == "jsonl-mp4" and len(samples) == 2 and not problems
    for ref in samples:  # record 1 names its composite target_composite_path
        clip = read_jsonl_sample(ref.record)
        assert clip.path.endswith("train.jsonl:1") or clip.path.endswith("train.jsonl:2")
        assert clip.instruction == "Add a green square" and clip.task == "object_addition"
        assert clip.source.shape == (F, H, W, 3) and clip.alpha.shape == (F, H, W)
        assert clip.source.dtype == np.float32
        np.testing.assert_allclose(clip.source, plate, atol=3 / 255)
        np.testing.assert_allclose(clip.edit_rgb, edit_rgb, atol=3 / 255)
        np.testing.assert_allclose(clip.alpha, alpha, atol=3 / 255)
        np.testing.assert_allclose(clip.mask, mask, atol=3 / 255)
        np.testing.assert_allclose(clip.composite, composite, atol=3 / 255)
    item = LayeredDataset(tmp_path / "train.jsonl", frames=5, size=(W, H))[1]
    assert item["composite"].shape == (3, F, H, W) and bool(item["has_edit"])


def test_public_test_records_map_edit_type_to_task(tmp_path):
    write_public_set(tmp_path)
    record = {"video_id": "v1", "input_path": "videos/0_input.mp4", "prompt": "a beach at sunset",
              "edit_type": "background_replace", "mask_path": "videos/0_mask.mp4", "alpha_path": "videos/0_alpha.mp4"}
    (tmp_path / "train.jsonl").unlink()
    (tmp_path / "test.jsonl").write_text(json.dumps(record) + "\n")
    _, samples, _ = find_samples(tmp_path)
    clip = read_jsonl_sample(samples[0].record)
    assert clip.task == "background_change" and clip.instruction == "a beach at sunset"
    assert clip.edit_rgb is None and clip.alpha.shape == (F, H, W)
    item = LayeredDataset(tmp_path, frames=5, size=(W, H))[0]
    assert not bool(item["has_edit"]) and torch.all(item["edit"] == -1)


# --- check-data -----------------------------------------------------------------------------------------------
def test_check_data_reports_every_bad_exr_sample_with_its_reason(tmp_path, capsys):
    root = tmp_path / "data"
    names = ("missing", "size", "range", "unpremult", "empty", "space")
    for name in ("good",) + names:
        write_good_sample(root / name)
    frame_path(root / "missing", "element", 1002).unlink()
    frame_path(root / "missing", "element", 1004).unlink()
    write_exr_frame(frame_path(root / "size", "mask", 1003), np.zeros((24, 32), np.float32), "RGBA")
    plate, element, _, _ = layered_arrays()
    hot = element[2].copy()
    hot[..., 3] *= 1.5
    write_exr_frame(frame_path(root / "range", "element", 1003), hot, "RGBA")
    straight = element[1].copy()
    straight[..., :3] = np.where(element[1][..., 3:] > 0, [0.2, 0.8, 0.3], 0)  # colour not multiplied by alpha
    write_exr_frame(frame_path(root / "unpremult", "element", 1002), straight, "RGBA")
    meta = json.loads((root / "empty" / "sample.json").read_text())
    (root / "empty" / "sample.json").write_text(json.dumps({**meta, "instruction": "  "}))
    (root / "space" / "sample.json").write_text(json.dumps({**meta, "colorspace": "ACEScgg"}))

    report = check_dataset(root)
    assert report["format"] == "layered-exr" and report["samples"] == 7
    bad = {b["path"]: " | ".join(b["problems"]) for b in report["bad"]}
    assert set(bad) == {str(root / n) for n in names}
    assert "missing frames 1002,1004" in bad[str(root / "missing")]
    assert "32x24" in bad[str(root / "size")] and "mask" in bad[str(root / "size")]
    assert "alpha out of range" in bad[str(root / "range")] and "1003" in bad[str(root / "range")]
    assert "RGB exceeds alpha" in bad[str(root / "unpremult")] and "1002" in bad[str(root / "unpremult")]
    assert bad[str(root / "empty")] == "empty instruction"
    assert "unknown colour space 'ACEScgg'" in bad[str(root / "space")] and "ACEScg" in bad[str(root / "space")]

    assert vera_train(["check-data", str(root)]) == 2
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == len(names) and str(root / "missing") in out
    assert vera_train(["check-data", str(root), "--json"]) == 2
    assert len(json.loads(capsys.readouterr().out)["bad"]) == len(names)
    for name in names:
        shutil.rmtree(root / name)
    assert vera_train(["check-data", str(root)]) == 0


def test_check_data_reports_every_bad_public_record(tmp_path, capsys):
    write_public_set(tmp_path, records=1)
    good = json.loads((tmp_path / "train.jsonl").read_text())
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a movie")
    write_video(tmp_path / "videos" / "small.mp4", np.zeros((F, 24, 32, 3), np.float32))
    records = [good,
               {**good, "edit_rgb_path": "videos/broken.mp4"},
               {**good, "edit_alpha_path": "videos/nowhere.mp4"},
               {**good, "edit_instruction": ""},
               {**good, "mask_path": "videos/small.mp4"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "{not json\n")
    report = check_dataset(tmp_path)
    bad = {b["path"].rsplit(":", 1)[1]: " | ".join(b["problems"]) for b in report["bad"]}
    assert report["samples"] == 6 and set(bad) == {"2", "3", "4", "5", "6"}
    assert "unreadable MP4" in bad["2"] and "broken.mp4" in bad["2"]
    assert "missing file" in bad["3"] and "nowhere.mp4" in bad["3"]
    assert "empty instruction" in bad["4"]
    assert "size mismatch" in bad["5"] and "32x24" in bad["5"]
    assert "not JSON" in bad["6"]
    assert vera_train(["check-data", str(tmp_path / "train.jsonl"), "--full"]) == 2
    assert str(tmp_path / "train.jsonl") + ":2" in capsys.readouterr().out


def test_check_data_on_no_dataset_is_one_line_exit_2(tmp_path, capsys):
    assert vera_train(["check-data", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "absent" in err
    (tmp_path / "empty").mkdir()
    assert vera_train(["check-data", str(tmp_path / "empty")]) == 2
    assert "no dataset found" in capsys.readouterr().err


def test_exr_sample_in_linear_space_composites_in_plate_space_then_converts(tmp_path):
    plate = np.full((1, 8, 8, 3), 0.18, np.float32)
    element = np.zeros((1, 8, 8, 4), np.float32)
    element[..., :4] = 0.5  # 50% white, premultiplied
    folder = write_exr_sample(tmp_path / "lin", plate=plate, element=element, instruction="x",
                              task="object_addition", colorspace="Linear Rec.709 (sRGB)")
    clip = read_exr_sample(folder)

    def srgb(linear):
        return 1.055 * linear ** (1 / 2.4) - 0.055

    np.testing.assert_allclose(clip.source, srgb(0.18), atol=2e-3)
    # Merge-over happens in linear (0.5 + 0.18 * 0.5), like Nuke; only then is the result encoded
    np.testing.assert_allclose(clip.composite, srgb(0.59), atol=2e-3)
    np.testing.assert_allclose(clip.edit_rgb, 1.0, atol=2e-3)
    meta = json.loads((folder / "sample.json").read_text())
    (folder / "sample.json").write_text(json.dumps({**meta, "colorspace": "Not A Space"}))
    with pytest.raises(BadInput, match=str(folder)):
        read_exr_sample(folder)
