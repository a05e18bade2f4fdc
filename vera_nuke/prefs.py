"""Vera preferences: path of vera-render, default farm, output root.

Stored as JSON in ~/.nuke/vera_prefs.json ($VERA_PREFS overrides the file; $VERA_RENDER overrides the
vera-render path for one session, as a pipeline wrapper would set it).
"""

from __future__ import annotations

import json
import os

from vera_nuke.util import atomic_write_text

FARMS = ("openjd", "opencue", "deadline")
# output_root "": <the script's folder>/vera_renders, where farm nodes see it (an artist's home they usually
# cannot). launch: "yes" submits farm jobs, "no" only writes the job files.
DEFAULTS = {"vera_render": "", "farm": "openjd", "output_root": "", "launch": "yes"}


def path() -> str:
    return os.path.expanduser(os.environ.get("VERA_PREFS") or os.path.join("~", ".nuke", "vera_prefs.json"))


def load() -> dict:
    """The preferences, defaults filled in. An unreadable file counts as empty (never breaks Nuke's start)."""
    values = dict(DEFAULTS)
    try:
        with open(path(), encoding="utf-8") as f:
            stored = json.load(f)
        if isinstance(stored, dict):
            values.update({k: v for k, v in stored.items() if k in DEFAULTS and isinstance(v, str)})
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested too deep
        pass
    return values


def save(values: dict) -> None:
    clean = {k: str(values.get(k, DEFAULTS[k])) for k in DEFAULTS}
    if clean["launch"] not in ("yes", "no"):
        raise ValueError("launch must be yes or no")
    if clean["farm"] not in FARMS:
        raise ValueError(f"unknown farm {clean['farm']!r}: one of {', '.join(FARMS)}")
    atomic_write_text(path(), json.dumps(clean, indent=2) + "\n")


def output_root(values: dict | None = None) -> str:
    """The chosen output root, or "" for the default (beside the script: vera_nuke.shot.output_dir)."""
    chosen = (values or load())["output_root"].strip()
    return os.path.abspath(os.path.expanduser(chosen)) if chosen else ""
