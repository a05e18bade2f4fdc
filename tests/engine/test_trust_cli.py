"""What a wrangler's script and a compositor read off the command line (issue 18): `status --verify` fails on a
damaged frame, `qc --comp` says which comp difference failed, a spec path Deadline would split is refused at
submit, and output or job folders that cannot exist are bad input (exit 2), not internal errors."""

from vera import exr
from vera.cli import main
from vera.errors import EXIT_QC_FAILED

from bundles import base_spec, write_plates, write_spec


def test_status_verify_fails_on_a_checksum_mismatch(tmp_path, shot, fake, capsys):
    assert main(["run", str(shot), "--progress", "none"]) == 0
    assert main(["status", str(tmp_path / "out"), "--verify"]) == 0
    frame = tmp_path / "out" / "edit.1003.exr"
    data = bytearray(frame.read_bytes())
    data[-1] ^= 0xFF
    frame.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["status", str(tmp_path / "out")]) == 0  # without --verify nothing is read: nothing found
    assert main(["status", str(tmp_path / "out"), "--verify"]) == EXIT_QC_FAILED
    out = capsys.readouterr().out
    assert "1003" in out and "checksum mismatch" in out, out


def test_qc_comp_names_the_comp_difference_that_failed_it(tmp_path, shot, fake, capsys):
    assert main(["run", str(shot), "--progress", "none"]) == 0
    plate, edit, comp = (str(tmp_path / p) for p in ("plate.####.exr", "out/edit.####.exr", "comp.####.exr"))
    assert main(["comp", "--plate", plate, "--edit", edit, "--out", comp, "--progress", "none"]) == 0
    layer = exr.read_layer(tmp_path / "comp.1002.exr")  # graded whole, as a wrong Write colour space would
    exr.write_exr(tmp_path / "comp.1002.exr", {c: layer.pixels[..., i] * 1.25 for i, c in enumerate("RGBA")},
                  layer.display_window, layer.data_window)
    capsys.readouterr()
    assert main(["qc", "--plate", plate, "--edit", edit, "--comp", comp, "--progress", "none"]) == EXIT_QC_FAILED
    lines = capsys.readouterr().out.splitlines()
    [line] = [x for x in lines if x.startswith("frame 1002")]
    assert "FAILED" in line and "comp" in line and "untouched pixels differ" in line, line
    summary = lines[-1]
    assert "comp" in summary and "untouched pixels differ" in summary, summary


def test_a_double_quote_in_the_spec_path_is_refused_for_deadline(tmp_path, tiny_bundle, capsys):
    """Deadline's CommandLine plugin splits Arguments by CommandLineToArgvW rules, where '"' ends a quoted
    argument: the task would run with its argv split at the quote."""
    folder = tmp_path / 'sh"010'
    folder.mkdir()
    write_plates(folder)
    spec = write_spec(folder, base_spec(tiny_bundle))
    code = main(["submit", str(spec), "--farm", "deadline", "--out", str(tmp_path / "job"),
                 "--executable", "/opt/vera/bin/vera-render"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert '"' in err and "Deadline" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "job" / "render.plugin.info").exists()


def test_an_output_folder_under_proc_is_refused_by_validate(tmp_path, tiny_bundle, fake, capsys):
    write_plates(tmp_path)
    spec = base_spec(tiny_bundle)
    spec["output"]["dir"] = "/proc/vera_out"
    path = write_spec(tmp_path, spec)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "output.dir: /proc/vera_out cannot be created" in err, err
    assert main(["run", str(path), "--progress", "none"]) == 2
    assert fake.calls == []


def test_submit_to_a_job_folder_that_cannot_be_created_is_bad_input(tmp_path, shot, capsys):
    code = main(["submit", str(shot), "--farm", "openjd", "--out", "/proc/vera_jobs"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "internal error" not in err and "/proc/vera_jobs" in err and len(err.strip().splitlines()) == 1, err


def test_a_bad_demo_colorspace_leaves_no_folder_and_names_the_option(tmp_path, capsys):
    out = tmp_path / "vera-demo"
    code = main(["demo", "--out", str(out), "--colorspace", "ACEScgg", "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--colorspace" in err and "ACEScgg" in err and "shot.json" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()
