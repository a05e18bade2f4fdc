import itertools
import json

import numpy as np
import pytest

from vera.errors import BadInput
from vera.train import synth
from vera.train.cli import main as vera_train
from vera.train.data import find_samples, over, read_exr_sample

SIZE = (64, 48)


def test_sample_is_deterministic_and_seeded():
    a = synth.make_sample(3, seed=7, size=SIZE, frames=5)
    b = synth.make_sample(3, seed=7, size=SIZE, frames=5)
    for name in ("plate", "element", "mask", "composite"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.instruction == b.instruction and a.params == b.params
    other_seed = synth.make_sample(3, seed=8, size=SIZE, frames=5)
    other_index = synth.make_sample(5, seed=7, size=SIZE, frames=5)
    assert not np.array_equal(a.plate, other_seed.plate)
    assert not np.array_equal(a.plate, other_index.plate)


def test_sample_generated_alone_equals_the_one_in_a_run(tmp_path):
    folders = synth.generate(tmp_path / "run", n=3, seed=11, size=SIZE, frames=5)
    assert [f.name for f in folders] == ["sample_00000", "sample_00001", "sample_00002"]
    alone = synth.make_sample(2, seed=11, size=SIZE, frames=5)
    clip = read_exr_sample(folders[2])
    assert clip.instruction == alone.instruction and clip.task == alone.task
    # stored as half floats: equal to half precision
    np.testing.assert_allclose(clip.source, alone.plate, atol=1e-3)
    np.testing.assert_allclose(clip.alpha, alone.element[..., 3], atol=1e-3)
    np.testing.assert_allclose(clip.mask, alone.mask, atol=1e-3)
    meta = json.loads((folders[2] / "sample.json").read_text())
    assert meta["synthetic"]["index"] == 2 and meta["first"] == 1001 and meta["last"] == 1005
    assert json.loads((tmp_path / "run" / "dataset.json").read_text())["n"] == 3


@pytest.mark.parametrize("task", synth.TASKS)
def test_element_over_plate_equals_ground_truth_composite(task):
    sample = synth.make_sample(0, seed=1, size=SIZE, frames=5, task=task)
    np.testing.assert_allclose(over(sample.element, sample.plate), sample.composite, atol=1e-5)
    assert sample.composite.min() >= 0 and sample.composite.max() <= 1 + 1e-6


def test_written_layers_composite_like_a_real_compositor(tmp_path):
    import OpenImageIO as oiio

    folder = synth.generate(tmp_path, n=1, seed=4, size=SIZE, frames=5)[0]
    expected = synth.make_sample(0, seed=4, size=SIZE, frames=5).composite
    element = oiio.ImageBuf(str(folder / "element" / "element.1003.exr"))
    plate = oiio.ImageBuf(str(folder / "plate" / "plate.1003.exr"))
    plate_rgba = oiio.ImageBufAlgo.channels(plate, ("R", "G", "B", 1.0), ("R", "G", "B", "A"))
    comp = oiio.ImageBufAlgo.over(element, plate_rgba).get_pixels(oiio.FLOAT)[..., :3]
    np.testing.assert_allclose(comp, expected[2], atol=2e-3)
    np.testing.assert_allclose(read_exr_sample(folder).composite[2], comp, atol=1e-3)  # OIIO rounds to half


def test_background_change_keeps_the_subject_and_replaces_the_rest():
    sample = synth.make_sample(0, seed=2, size=SIZE, frames=5, task="background_change", colour="blue",
                               pattern="stripes")
    assert sample.instruction == "change the background to blue stripes; keep the subject"
    subject, alpha = sample.mask, sample.element[..., 3]
    edge = (subject > 0) & (subject < synth.EDGE_CORE)
    assert edge.any()
    # the layer covers the subject's soft edge fully: no share of the old background reaches the comp (no halo)
    np.testing.assert_array_equal(alpha[subject < synth.EDGE_CORE], 1.0)
    np.testing.assert_array_equal(alpha[subject == 1], 0.0)
    comp = sample.element[..., :3] + (1 - alpha[..., None]) * sample.plate
    np.testing.assert_allclose(comp, sample.composite, atol=1e-6)  # the target is the layer over the plate
    inside, outside = subject == 1, subject == 0
    assert inside.any() and outside.any()
    np.testing.assert_array_equal(sample.composite[inside], sample.plate[inside])  # untouched subject pixels
    np.testing.assert_array_equal(sample.composite[outside], sample.element[..., :3][outside])
    new_background = sample.element[..., :3][outside]
    assert synth.nearest_colour(new_background.mean(axis=0)) == "blue"
    assert not np.allclose(sample.composite[outside], sample.plate[outside], atol=0.05)


@pytest.mark.parametrize("direction", list(synth.DIRECTIONS))
def test_added_object_has_the_named_colour_moves_that_way_and_casts_a_soft_shadow(direction):
    sample = synth.make_sample(1, seed=5, size=SIZE, frames=9, task="object_addition", colour="red",
                               shape="box", direction=direction)
    alpha = sample.element[..., 3]
    opaque = alpha > 0.99
    colour = sample.element[..., :3][opaque].mean(axis=0)
    assert synth.nearest_colour(colour) == "red"

    def centroid(frame):
        ys, xs = np.nonzero(opaque[frame])
        return np.array([xs.mean(), ys.mean()])

    motion = centroid(-1) - centroid(0)
    dx, dy = synth.DIRECTIONS[direction]
    along = motion @ np.array([dx, dy])
    assert along > 10  # pixels over the clip, in the named direction
    assert abs(motion @ np.array([dy, dx])) < 1  # and not sideways
    shadow_only = (alpha > 0.1) & (alpha < 0.7) & (sample.element[..., 0] < 1e-6)
    assert shadow_only.sum() > 20  # a semi-transparent, black (premultiplied 0) shadow exists
    # untouched pixels: where the element is transparent the composite is the plate, bit-exact
    clear = alpha == 0
    np.testing.assert_array_equal(sample.composite[clear], sample.plate[clear])


def test_subject_alpha_has_soft_edges():
    sample = synth.make_sample(0, seed=3, size=(128, 96), frames=5)
    mask = sample.mask
    fractional = (mask > 0.02) & (mask < 0.98)
    interior = mask >= 0.98
    assert interior.sum() > 0
    # the edge band is wider than one anti-aliased pixel: at least ~1.5 fractional pixels per edge pixel
    boundary = interior & ~np.roll(interior, 1, axis=2)
    assert fractional.sum() > 1.5 * boundary.sum()
    assert len(np.unique(np.round(mask[fractional], 2))) > 20


def test_grammar_round_trips_through_parse_instruction():
    count = 0
    for task, slots in synth.SLOTS.items():
        for values in itertools.product(*slots.values()):
            chosen = dict(zip(slots, values))
            text = synth.format_instruction(task, **chosen)
            assert synth.parse_instruction(text) == {"task": task, **chosen}
            assert set(synth._words(text)) <= set(synth.vocabulary())
            count += 1
    assert count == len(synth.COLOURS) * (len(synth.SHAPES) * len(synth.DIRECTIONS) + len(synth.PATTERNS))
    for index in range(6):
        sample = synth.make_sample(index, seed=9, size=(16, 16), frames=1)
        parsed = synth.parse_instruction(sample.instruction)
        assert parsed["task"] == sample.task
        assert all(sample.params[k] == v for k, v in parsed.items())


def test_parse_instruction_tolerates_case_and_spacing_and_rejects_other_text():
    assert synth.parse_instruction("  Add a  RED ball moving left. ") == {
        "task": "object_addition", "colour": "red", "shape": "ball", "direction": "left"}
    assert synth.parse_instruction("change the background to green dots")["pattern"] == "dots"
    for text in ("add a magenta ball moving left", "make it rain", "add a red ball moving sideways", ""):
        with pytest.raises(BadInput):
            synth.parse_instruction(text)
    with pytest.raises(BadInput):
        synth.format_instruction("object_addition", colour="red", shape="cube", direction="left")


def test_vocabulary_is_the_grammar_words():
    words = synth.vocabulary()
    assert words == sorted(set(words))
    assert {"add", "moving", "background", "keep", "subject", ";"} <= set(words)
    assert set(synth.COLOURS) | set(synth.SHAPES) | set(synth.DIRECTIONS) | set(synth.PATTERNS) <= set(words)


def test_demo_plate_is_deterministic_soft_and_in_range():
    plate = synth.make_demo_plate(96, 64, frames=5, seed=1)
    assert plate.rgb.shape == (5, 64, 96, 3) and plate.subject_alpha.shape == (5, 64, 96)
    assert plate.rgb.dtype == np.float32 and 0 <= plate.rgb.min() and plate.rgb.max() <= 1
    assert ((plate.subject_alpha > 0.05) & (plate.subject_alpha < 0.95)).any()
    np.testing.assert_array_equal(plate.rgb, synth.make_demo_plate(96, 64, frames=5, seed=1).rgb)
    assert not np.array_equal(plate.rgb[0], plate.rgb[-1])  # it moves


def test_synth_cli_writes_a_dataset_that_checks_clean(tmp_path, capsys):
    out = tmp_path / "data"
    code = vera_train(["synth", "--out", str(out), "--n", "3", "--seed", "2", "--size", "48x32",
                       "--frames", "5", "--tasks", "background_change", "--progress", "none"])
    assert code == 0
    fmt, samples, _ = find_samples(out)
    assert fmt == "layered-exr" and len(samples) == 3
    assert {read_exr_sample(s.folder).task for s in samples} == {"background_change"}
    assert read_exr_sample(samples[0].folder).source.shape == (5, 32, 48, 3)
    assert vera_train(["check-data", str(out)]) == 0
    capsys.readouterr()
    assert vera_train(["synth", "--out", str(out), "--n", "1", "--frames", "6"]) == 2
    assert "4k+1" in capsys.readouterr().err


def test_parallel_synth_writes_the_same_files_as_one_process(tmp_path):
    one = vera_train(["synth", "--out", str(tmp_path / "one"), "--n", "5", "--seed", "4", "--size", "48x32",
                      "--frames", "5", "--progress", "none"])
    many = vera_train(["synth", "--out", str(tmp_path / "many"), "--n", "5", "--seed", "4", "--size", "48x32",
                       "--frames", "5", "--progress", "none", "--jobs", "2"])
    assert one == many == 0
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(files) > 5
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "many" / name).read_bytes(), name
    assert vera_train(["synth", "--out", str(tmp_path / "bad"), "--n", "2", "--jobs", "0"]) == 2
