"""The repository keeps its promises: CI runs the README's test command."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)


def test_ci_runs_the_readme_test_command():
    test_cmd = _readme_commands()[1].strip()
    assert "pytest" in test_cmd
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_cmd in ci_lines


def test_readme_installs_cpu_torch_first_and_everything_from_the_constraints():
    pins = _constraints()
    for cmd in _readme_commands()[:2]:
        # a fresh virtual environment first, activated in the same shell line, then CPU torch
        # (--no-compile: Python writes the bytecode of what is imported when it is; pip would compile every file)
        assert cmd.startswith("python3 -m venv .venv && . .venv/bin/activate && "
                              "pip install --no-compile -c constraints.txt torch==2.13.0 && ")
        installs = [part.strip() for part in cmd.split("&&") if part.strip().startswith("pip install")]
        assert len(installs) == 2 and all(part.startswith("pip install --no-compile -c constraints.txt ")
                                          for part in installs)
    assert pins["torch"] == "2.13.0"  # the public version: pip ignores the CPU wheel's local label (+cpu)


def _constraints() -> dict:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name] = version
    return pins


def test_constraints_pin_every_dependency_exactly():
    """Every dependency in pyproject.toml (dev extras too) has an exact pin, and Vera itself has none
    (scripts/refresh_constraints.sh writes the file)."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    pins = _constraints()
    for requirement in wanted:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()
        assert re.fullmatch(r"[0-9][0-9A-Za-z.]*", pins.get(name, "")), f"{name} is not pinned in constraints.txt"
    assert "vera" not in pins


def test_demo_training_script_and_configs_are_valid(tmp_path):
    """scripts/train_demo.sh (docs/demo-model.md) parses, and both stage configs load as vera-train fit would load
    them, with the global batch of the shipped model (per-process batch x the script's default 2 processes)."""
    import subprocess

    from vera.train.config import load_config

    script = ROOT / "scripts" / "train_demo.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert 'PROCS="${VERA_TRAIN_PROCS:-2}"' in text and "--nproc-per-node" in text
    stage1 = load_config(ROOT / "scripts" / "demo_config.json")
    stage2_path = tmp_path / "stage2.json"
    stage2_path.write_text((ROOT / "scripts" / "demo_finetune.json").read_text()
                           .replace("__STAGE1_BUNDLE__", str(tmp_path / "bundle")))
    stage2 = load_config(stage2_path)
    assert stage1.bundle["from"] == "random" and stage2.bundle["from"] == str(tmp_path / "bundle")
    assert stage1.batch * 2 == stage2.batch * 2 == 8
    assert stage1.defaults == stage2.defaults


def test_no_path_of_a_development_machine():
    """A fresh clone on any machine: no test, doc, benchmark or script names this machine's folders
    (tests find vera-render on PATH, docs name commands, not interpreters)."""
    machine_dirs = re.compile(r"(?<![\w.~])/(?:" + "|".join(("work", "root", "tmp")) + r")/")
    offenders = []
    for folder in ("core", "vera_nuke", "tests", "docs", "benchmarks", "scripts", "gizmos", ".ci"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".md", ".sh", ".gizmo", ".toml", ".json", "") and path.is_file():
                text = path.read_text(errors="replace")
                offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in machine_dirs.finditer(text)]
    for name in ("README.md", "init.py", "menu.py", "pyproject.toml"):
        offenders += [f"{name}: {m.group(0)}" for m in machine_dirs.finditer((ROOT / name).read_text())]
    assert offenders == []


def test_the_gpu_proof_runs_every_file_with_cuda_tests():
    """benchmarks/gpu_proof.py's cuda_tests item is the only place the `cuda` tests run: it must name them all."""
    tree = ast.parse((ROOT / "benchmarks" / "gpu_proof.py").read_text())
    named = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                 and any(getattr(t, "id", None) == "CUDA_TEST_FILES" for t in node.targets))
    marker = re.compile(r"^(@pytest\.mark\.cuda|pytestmark = pytest\.mark\.cuda)\b", re.M)
    marked = {path.name for path in (ROOT / "tests").rglob("test_*.py") if marker.search(path.read_text())}
    assert marked and marked == set(named)
