"""The one way vera reads JSON that other people wrote (shot specs, render manifests, bundle.json, speed.json,
the input-hash cache, sample descriptions).

Python's json parser recurses once per nested array or object, so a file of 100,000 '[' raises RecursionError
(not a ValueError: it used to escape every `except ValueError` and end as "internal error", exit 1). Nesting is
measured before parsing, without recursion, and anything deeper than MAX_DEPTH is refused as BadInput (exit 2)
naming the file; no Vera file nests more than a few levels, and code that walks the parsed data recursively
(schema checks, manifest diffs) stays far below the interpreter's limit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from vera.errors import BadInput

MAX_DEPTH = 64
_BRACKETS_AND_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON `text` (brackets inside strings do not count)."""
    depth = deepest = 0
    for token in _BRACKETS_AND_STRINGS.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def parse(text: str, where, what: str):
    """The value in JSON `text` read from `where` (a file or a label); BadInput naming both for bad JSON or
    nesting deeper than MAX_DEPTH."""
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise BadInput(f"{where}: not a valid {what} (nested {depth} levels deep; at most {MAX_DEPTH} are read)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:  # the reason keeps the line and column
        raise BadInput(f"{where}: not a valid {what}: not valid JSON ({exc})") from None
    except RecursionError:  # a stack smaller than MAX_DEPTH needs (never on a normal interpreter)
        raise BadInput(f"{where}: not a valid {what} (nested too deeply to read)") from None


def read_json(path, what: str):
    """The JSON value in the file `path`; unreadable, not UTF-8, not JSON or nested too deep is BadInput."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not a valid {what} ({exc})") from None
    return parse(text, path, what)


def read_json_object(path, what: str) -> dict:
    """The JSON object in the file `path` (a `what`: "bundle manifest", "sample.json", ...); anything else there
    is the user's file and a BadInput naming it."""
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise BadInput(f"{path}: not a valid {what} (expected a JSON object, got {type(data).__name__})")
    return data
