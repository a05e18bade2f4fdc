"""What a stranger's file may declare (issue 18): an EXR header's windows and the instruction's length are
bounded, checked by `validate` and on every read, and refused as bad input (exit 2) naming file, frame and size,
before anything is allocated."""

import numpy as np
import pytest

from vera.cli import main
from vera.exr import write_exr
from vera.limits import MAX_INSTRUCTION_CHARS

from bundles import FIRST, LAST, SMALL_HEIGHT, SMALL_WIDTH, base_spec, write_plates, write_spec


def _bomb(path, display=(0, 0, 59_999, 59_999), data=(0, 0, SMALL_WIDTH - 1, SMALL_HEIGHT - 1)):
    """A few hundred bytes whose header declares `display` (60000x60000: 57 GB as float RGBA)."""
    w, h = data[2] - data[0] + 1, data[3] - data[1] + 1
    write_exr(path, {c: np.zeros((h, w), np.float32) for c in "RGB"}, display, data, pixel_type="half")


def _with_data_window(path, box):
    """Rewrite the dataWindow attribute's bytes (name, type box2i, size 16, four int32) in place, as a crafted
    file would: the header then declares pixels the file does not hold."""
    raw = bytearray(path.read_bytes())
    at = raw.index(b"dataWindow\0box2i\0") + len(b"dataWindow\0box2i\0") + 4
    raw[at:at + 16] = np.array(box, "<i4").tobytes()
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_display_window_bomb_is_refused(tmp_path, tiny_bundle, fake, capsys, command):
    for frame in range(FIRST, LAST + 1):  # every frame alike: the sequence is consistent
        _bomb(tmp_path / f"plate.{frame}.exr")
    assert (tmp_path / "plate.1004.exr").stat().st_size < 1000
    spec = write_spec(tmp_path, base_spec(tiny_bundle))
    code = main([command, str(spec), *(["--progress", "none"] if command == "run" else [])])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "plate.1001.exr (frame 1001)" in err and "60000x60000" in err, err
    assert fake.calls == []


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_data_window_bomb_is_refused_before_its_pixels_are_read(tmp_path, tiny_bundle, fake, capsys, command):
    write_plates(tmp_path)
    _with_data_window(tmp_path / "plate.1002.exr", (0, 0, 69_999, 49_999))
    spec = write_spec(tmp_path, base_spec(tiny_bundle))
    code = main([command, str(spec), *(["--progress", "none"] if command == "run" else [])])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "plate.1002.exr (frame 1002)" in err and "70000x50000" in err, err
    assert fake.calls == []


def test_the_union_of_the_windows_is_what_counts(tmp_path, tiny_bundle, capsys, monkeypatch):
    """Each window alone under the cap, their union (from far apart corners) over it."""
    monkeypatch.setenv("VERA_MAX_MEGAPIXELS", "1")
    write_plates(tmp_path)
    _bomb(tmp_path / "plate.1001.exr", display=(0, 0, SMALL_WIDTH - 1, SMALL_HEIGHT - 1),
          data=(4000, 4000, 4000 + SMALL_WIDTH - 1, 4000 + SMALL_HEIGHT - 1))
    spec = write_spec(tmp_path, base_spec(tiny_bundle))
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"plate.1001.exr (frame {FIRST})" in err and "4024x4016" in err and "VERA_MAX_MEGAPIXELS" in err, err


def test_the_cap_is_a_setting(tmp_path, tiny_bundle, capsys, monkeypatch):
    write_plates(tmp_path)
    spec = write_spec(tmp_path, base_spec(tiny_bundle))
    assert main(["validate", str(spec)]) == 0
    monkeypatch.setenv("VERA_MAX_MEGAPIXELS", "0.0001")  # 100 pixels: the 24x16 plate is over it
    assert main(["validate", str(spec)]) == 2
    assert "24x16" in capsys.readouterr().err
    monkeypatch.setenv("VERA_MAX_MEGAPIXELS", "lots")
    assert main(["validate", str(spec)]) == 2
    assert "VERA_MAX_MEGAPIXELS" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["instruction", "negative_prompt"])
def test_a_prompt_longer_than_the_limit_is_refused(tmp_path, tiny_bundle, fake, capsys, key):
    write_plates(tmp_path)
    spec = base_spec(tiny_bundle)
    spec[key] = "add a red ball " * 300_000  # 4.5 MB, copied into every frame's header
    path = write_spec(tmp_path, spec)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{key}: " in err and str(MAX_INSTRUCTION_CHARS) in err, err
    assert main(["run", str(path), "--progress", "none"]) == 2
    assert fake.calls == []
