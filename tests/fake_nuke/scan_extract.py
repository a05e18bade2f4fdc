"""Regenerate nuke_scan.json (the fake's knob facts) from a checkout of kirkjr2/nuke-python-reference.

    git clone https://github.com/kirkjr2/nuke-python-reference SCAN
    python tests/fake_nuke/scan_extract.py SCAN

Keeps, per node class the plugin makes or reads, its input count and each knob's name, type, default and
(enumerations) allowed values, as Nuke 17.0v3 reported them to the repository's scanner. No prose.
"""

import json
import subprocess
import sys
from pathlib import Path

REPOSITORY = "kirkjr2/nuke-python-reference"
CLASSES = ("Read", "Write", "Merge2", "Shuffle2", "Grade", "Group", "Dot", "NoOp", "Input", "Output", "Crop",
           "Viewer")
OUT = Path(__file__).resolve().parent / "nuke_scan.json"


def _show(repo: str, path: str) -> dict:
    return json.loads(subprocess.run(["git", "-C", repo, "show", f"HEAD:{path}"], check=True,
                                     capture_output=True, text=True).stdout)


def _knob(arg: dict) -> list:
    default = (arg.get("default") or {}).get("value")
    if arg["knob_type"] in ("Format_Knob", "Obsolete_Knob", "MetaData"):
        default = None  # the scan holds an object's repr, not a value
    values = arg.get("values") or {}
    allowed = values.get("values") if values.get("kind") == "allowed_values" else None
    return [arg["knob_type"], default, allowed]


def main(repo: str) -> None:
    commit = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    classes = {}
    for cls in CLASSES:
        data = _show(repo, f"data/nodes/{cls}.json")
        knobs = {name: _knob(arg) for section in ("arguments", "internal_arguments")
                 for name, arg in sorted(data[section].items())}
        classes[cls] = {"inputs": [data["inputs"]["minimum"], data["inputs"]["maximum"]], "knobs": knobs}
        nuke = data["provenance"]["nuke_version"]["string"]
    facts = {"source": {"repository": REPOSITORY, "commit": commit, "files": "data/nodes/<Class>.json",
                        "nuke": nuke, "regenerate": "python tests/fake_nuke/scan_extract.py SCAN_CHECKOUT"},
             "classes": classes}
    OUT.write_text(json.dumps(facts, indent=0, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
