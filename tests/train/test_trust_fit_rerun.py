"""`vera-train fit` run again after it finished (issue 18): the docs say re-running resumes, so it trains nothing
more, exits 0, and keeps summary.json's final loss (it crashed formatting None and wrote "final_loss": null)."""

import json

from vera.train.cli import main
from vera.train.synth import generate

from test_fit import TINY


def test_fit_run_again_after_finishing_keeps_its_summary(tmp_path, capsys):
    generate(tmp_path / "data", 4, seed=3, size=(32, 32), frames=5)
    config = tmp_path / "fit.json"
    config.write_text(json.dumps({**TINY, "steps": 2}))
    argv = ["fit", "--config", str(config), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
            "--progress", "none"]
    assert main(argv) == 0
    first = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert first["steps"] == 2 and first["final_loss"] is not None
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "already" in err, err
    again = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert again["steps"] == 2 and again["final_loss"] == first["final_loss"]
