"""`vera-render calibrate` never writes over a bundle that ships with Vera or is read-only (issue 18): it writes
to a named output bundle (--out) or refuses with the command that does."""

import shutil

from vera.cli import main
from vera.model.bundle_manifest import DEMO_PATH

from bundles import base_spec, write_plates, write_spec


def test_calibrating_the_shipped_demo_bundle_is_refused(tmp_path, capsys):
    write_plates(tmp_path)
    spec = write_spec(tmp_path, base_spec("demo"))
    before = (DEMO_PATH / "speed.json").read_bytes()
    code = main(["calibrate", str(spec), "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "ships with Vera" in err and "--out" in err and "vera-render calibrate" in err, err
    assert (DEMO_PATH / "speed.json").read_bytes() == before


def test_a_read_only_bundle_is_refused(tmp_path, tiny_bundle, capsys):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "published")
    bundle.chmod(0o555)
    try:
        write_plates(tmp_path)
        spec = write_spec(tmp_path, base_spec(bundle))
        assert main(["calibrate", str(spec), "--progress", "none"]) == 2
        assert "read-only" in capsys.readouterr().err
        assert not (bundle / "speed.json").exists()
    finally:
        bundle.chmod(0o755)


def test_calibration_goes_to_the_named_output_bundle(tmp_path, capsys):
    write_plates(tmp_path)
    spec = write_spec(tmp_path, base_spec("demo"))
    before = (DEMO_PATH / "speed.json").read_bytes()
    out = tmp_path / "demo-calibrated"
    code = main(["calibrate", str(spec), "--out", str(out), "--steps", "4", "--progress", "none"])
    assert code == 0, capsys.readouterr().err
    assert (out / "bundle.json").is_file() and (out / "speed.json").read_bytes() != before
    assert (DEMO_PATH / "speed.json").read_bytes() == before
