"""Numbers in the docs come from the benchmarks' JSON through scripts/docs_numbers.py, never by hand (issue 21)."""

from __future__ import annotations

import importlib.util
import json
import re
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


DOCS = docs_numbers.PAGES
HEADING = re.compile(r"^#{1,6} ", re.M)
BENCH_COMMAND = re.compile(r"python (benchmarks/\w+\.py)")


def _blocks():
    return [(doc, match) for doc in DOCS for match in docs_numbers.BLOCK.finditer(doc.read_text())]


def test_every_numbers_block_is_known_backed_by_json_and_up_to_date():
    names = {match.group("name") for _, match in _blocks()}
    assert {"demo-eval-retrain", "io", "sampling", "gpu-proof", "plan-render", "loader"} <= names
    assert names <= set(docs_numbers.SOURCES)
    for name in names:  # a block whose JSON is still to come says why (SOURCES[...].awaiting)
        source = docs_numbers.data_name(name)
        assert (docs_numbers.NUMBERS / f"{source}.json").is_file() or docs_numbers.SOURCES[source].awaiting, name
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs_numbers.py"), "--check"],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr


def test_every_benchmark_command_in_the_docs_sits_in_a_section_with_its_generated_block():
    """`python benchmarks/X.py ...` outside a block claims figures: its section (between headings) must show X's
    generated block. A bare `benchmarks/X.py` is a pointer and may stand anywhere."""
    lonely = []
    for doc in DOCS:
        for section in HEADING.split(doc.read_text()):
            generated = {bench for match in docs_numbers.BLOCK.finditer(section)
                         for bench in BENCH_COMMAND.findall(docs_numbers.SOURCES[
                             docs_numbers.data_name(match.group("name"))].command)}
            outside = docs_numbers.BLOCK.sub("", section)
            lonely += [f"{doc.name}: python {bench}" for bench in BENCH_COMMAND.findall(outside)
                       if bench not in generated]
    assert not lonely, lonely


def test_no_benchmark_table_is_typed_outside_a_block():
    """Each benchmark's own markdown, rendered from its JSON, gives its tables' header rows; none of them may
    appear in a doc outside a generated block (a hand-copied table)."""
    headers = set()
    for name, source in docs_numbers.SOURCES.items():
        path = docs_numbers.NUMBERS / f"{docs_numbers.data_name(name)}.json"
        if path.is_file():
            lines = source.render(json.loads(path.read_text())).splitlines()
            headers |= {line for line, below in zip(lines, lines[1:]) if line.startswith("|") and below.startswith("|-")}
    assert any("| step | seconds |" in h for h in headers)  # io_bench's table is among them
    copied = [f"{doc.name}: {header}" for doc in DOCS for header in headers
              if header in docs_numbers.BLOCK.sub("", doc.read_text())]
    assert not copied, copied


def test_a_block_without_its_json_fails_with_the_command_to_run(tmp_path, monkeypatch):
    monkeypatch.setattr(docs_numbers, "NUMBERS", tmp_path)
    with pytest.raises(SystemExit, match=r"no docs/numbers/io.json: run python scripts/docs_numbers.py --run io"):
        docs_numbers.rewrite("<!-- numbers:io -->\nold\n<!-- /numbers -->\n")
    kept = "<!-- numbers:sampling-turbo -->\nhand-written until its run\n<!-- /numbers -->\n"
    assert docs_numbers.rewrite(kept) == kept  # awaiting its JSON: kept as written


def test_gpu_proof_run_refuses_without_cuda_in_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs_numbers.py"), "--run", "gpu-proof"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stderr.strip().count("\n") == 0, run.stderr
    assert "gpu-proof: needs a CUDA GPU" in run.stderr


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
