"""Numbers in the docs come from the benchmarks' JSON through scripts/docs_numbers.py, never by hand (issue 21)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


docs_numbers = _load("docs_numbers", ROOT / "scripts" / "docs_numbers.py")


def test_every_numbers_block_is_known_backed_by_json_and_up_to_date():
    names = set()
    for doc in (ROOT / "docs").glob("*.md"):
        for match in docs_numbers.BLOCK.finditer(doc.read_text()):
            names.add(match.group("name"))
    assert "demo-eval-retrain" in names  # docs/demo-model.md's held-out table
    assert names <= set(docs_numbers.SOURCES)
    for name in names:
        assert (docs_numbers.NUMBERS / f"{name}.json").is_file(), name
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs_numbers.py"), "--check"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr


def test_rewrite_fills_a_block_from_its_json_and_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(docs_numbers, "NUMBERS", tmp_path)
    (tmp_path / "demo-time.json").write_text(json.dumps({
        "median_demo_s": 6.75, "repeat": 3, "median_python_start_s": 0.021, "cpus": 2,
        "load_average_at_start": 0.4}))
    text = "before\n<!-- numbers:demo-time -->\nhand-typed 2.8 s\n<!-- /numbers -->\nafter\n"
    new = docs_numbers.rewrite(text)
    assert new.startswith("before\n<!-- numbers:demo-time -->\n") and new.endswith("<!-- /numbers -->\nafter\n")
    assert "2.8 s" not in new and "**6.75 s**" in new
    assert "`python benchmarks/demo_bench.py --repeat 3 --json OUT.json`" in new
    assert docs_numbers.rewrite(new) == new  # idempotent: --check passes right after a rewrite
    with pytest.raises(SystemExit, match="unknown numbers block"):
        docs_numbers.rewrite("<!-- numbers:made-up -->\nx\n<!-- /numbers -->\n")


@pytest.mark.slow
def test_io_bench_table_and_summary_use_the_same_ratios(tmp_path):
    """The table's post-model rows are the summary's ratios (each against the plain write of its own layer)."""
    out = tmp_path / "io.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "io_bench.py"), "--width", "256", "--height",
                          "144", "--model-width", "64", "--model-height", "36", "--repeat", "1", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    table = {row["step"]: row for row in result["table"]}
    for case, ratio in result["post_model_ratio"].items():
        assert table[f"post-model step ({case})"]["ratio"] == pytest.approx(ratio)
        assert table[f"post-model step ({case})"]["base"] == f"write ({case})"
        assert f"{ratio:.2f}" in run.stdout.split(f"post-model step ({case})")[1].splitlines()[0]
