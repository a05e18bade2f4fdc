"""Wall time of the README's two commands on a fresh clone: the demo, and the tests as CI runs them (then the
inner loop).

    python benchmarks/suite_bench.py --json FILE      # about 7 minutes on a 2-core machine

It clones this checkout's committed HEAD into temporary folders (nothing of this checkout's virtual environment,
byte-code or caches comes along) and times, on the same machine in the same run:

- the README's first command (new venv, install, `vera-render demo`) in one clone;
- the whole of `bash .ci/run` (new venv, pip install, `lint-imports`, the whole suite on every core) in
  another, and the suite's own time from pytest's summary line;
- the inner loop, `python -m pytest -q -n auto -m "not slow"`, in the venv the second step made;

against the bars of issue 19 (the whole CI run 6 minutes or less, the inner loop 2). torch.compile's cache
(`TORCHINDUCTOR_CACHE_DIR`) is pointed into the scratch folder, so an earlier run's compiled kernels do not
help. The table lists the 15 slowest tests of the whole run, as `.ci/run` prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BARS_S = {"ci": 6 * 60, "inner_loop": 2 * 60}  # issue 19
DEMO_COMMAND = re.compile(r"```bash\n(?P<command>[^\n]*vera-render demo[^\n]*)\n```")
SUMMARY = re.compile(r"^=* ?(?P<counts>\d+ passed.*?) in (?P<seconds>[\d.]+)s", re.M)
SLOWEST = re.compile(r"^(?P<seconds>[\d.]+)s (?P<phase>call|setup|teardown) +(?P<test>\S+)$", re.M)


def timed(command: str, cwd: Path, env: dict, log: Path) -> dict:
    """Run `command` in bash; its wall time, exit code, and pytest's summary (counts, seconds) if it printed one."""
    start = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - start
    text = log.read_text()
    summary = list(SUMMARY.finditer(text))
    result = {"command": command, "returncode": code, "wall_s": round(wall, 1)}
    if summary:
        result.update(pytest_s=float(summary[-1]["seconds"]), counts=summary[-1]["counts"].strip())
    result["slowest"] = [{"seconds": float(m["seconds"]), "phase": m["phase"], "test": m["test"]}
                         for m in SLOWEST.finditer(text)][:15]
    if code != 0:
        result["tail"] = text[-3000:]
    return result


def measure(work: Path) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(work / "inductor"))
    env.pop("VIRTUAL_ENV", None)
    for name in ("demo", "ci"):
        subprocess.run(["git", "clone", "-q", str(ROOT), str(work / name)], check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=work / "ci", capture_output=True,
                            text=True, check=True).stdout.strip()
    demo = timed(DEMO_COMMAND.search((work / "demo" / "README.md").read_text())["command"], work / "demo", env,
                 work / "demo.log")
    clone = work / "ci"
    ci = timed("bash .ci/run", clone, env, work / "ci.log")
    inner = timed('. .venv/bin/activate && python -m pytest -q -n auto -m "not slow"', clone, env,
                  work / "inner.log")
    return {"commit": commit, "cpus": os.cpu_count(), "demo": demo, "ci": ci, "inner_loop": inner,
            "bars_s": BARS_S}


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {round(seconds % 60):02d} s"


def markdown(result: dict) -> str:
    ci, inner, bars = result["ci"], result["inner_loop"], result["bars_s"]

    def verdict(run, bar):
        if run["returncode"] != 0:
            return f"FAILED (exit {run['returncode']})"
        return f"{'met' if run['wall_s'] <= bar else 'NOT met'} ({run['wall_s'] / bar:.2f} of it)"

    rows = [
        f"Fresh clone of {result['commit']}, {result['cpus']} CPUs.",
        "",
        "| run | wall | of which pytest | tests | bar |",
        "|---|---|---|---|---|",
        f"| the README's demo command (venv, install, `vera-render demo`) | **{_minutes(result['demo']['wall_s'])}** "
        f"| | | {'ok' if result['demo']['returncode'] == 0 else 'FAILED'} |",
        f"| `bash .ci/run` (venv, install, `lint-imports`, whole suite) | **{_minutes(ci['wall_s'])}** | "
        f"{_minutes(ci.get('pytest_s', 0))} | {ci.get('counts', '-')} | {_minutes(bars['ci'])}: "
        f"{verdict(ci, bars['ci'])} |",
        f"| inner loop, `-m \"not slow\"` (same venv) | **{_minutes(inner['wall_s'])}** | "
        f"{_minutes(inner.get('pytest_s', 0))} | {inner.get('counts', '-')} | {_minutes(bars['inner_loop'])}: "
        f"{verdict(inner, bars['inner_loop'])} |",
        "",
        "The 15 slowest tests of the whole run (`--durations=15`):",
        "",
        "| seconds | phase | test |",
        "|---|---|---|",
        *(f"| {row['seconds']:.1f} | {row['phase']} | `{row['test']}` |" for row in ci["slowest"]),
    ]
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the result here as JSON")
    parser.add_argument("--keep", help="do the work in this folder and keep it (the clone and the logs)")
    args = parser.parse_args(argv)
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        result = measure(Path(args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="vera-suite-") as work:
            result = measure(Path(work))
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(result[run]["returncode"] == 0 for run in ("demo", "ci", "inner_loop")) else 1


if __name__ == "__main__":
    sys.exit(main())
