"""Progress reporting in the dialect of whoever is watching.

- `bar`: a tqdm bar on a terminal (stderr).
- `openjd`: `openjd_progress: N` lines on stdout (Open Job Description).
- `deadline`: `Progress: N%` lines on stdout (Deadline's CommandLine plugin progress regex).
- `log`: one plain line per step on stderr (farm logs, Nuke's ProgressTask reader).
- `none`: silent.
`auto` picks `bar` on a terminal and `log` otherwise. Farm job templates pass the mode explicitly.
Every mode also prints a final `done` line in `log` so logs always end with what happened.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

MODES = ("auto", "bar", "openjd", "deadline", "log", "none")


def add_progress_argument(parser) -> None:
    parser.add_argument("--progress", choices=MODES, default="auto",
                        help="how to report progress (default: bar on a terminal, plain lines otherwise)")


class Progress:
    """A counter of `total` steps with a label. Use as a context manager; call `advance(n, note)`."""

    def __init__(self, total: int, label: str, mode: str = "auto", stream_out=None, stream_err=None):
        self.total = max(int(total), 1)
        self.label = label
        self.done = 0
        self.out = stream_out or sys.stdout
        self.err = stream_err or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.err, "isatty", lambda: False)() else "log"
        self.mode = mode
        self._bar = None
        self._last_percent = -1
        if mode == "bar":
            self._bar = tqdm(total=self.total, desc=label, file=self.err, unit="step", leave=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total)

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done = min(self.total, self.done + n)
        if self.mode == "bar":
            self._bar.update(n)
            if note:
                self._bar.set_postfix_str(note, refresh=False)
        elif self.mode == "openjd":
            self._emit_percent(self.out, "openjd_progress: {p}")
        elif self.mode == "deadline":
            self._emit_percent(self.out, "Progress: {p}%")
        elif self.mode == "log":
            suffix = f" {note}" if note else ""
            print(f"{self.label}: {self.done}/{self.total} ({self.percent}%){suffix}", file=self.err, flush=True)

    def _emit_percent(self, stream, fmt: str) -> None:
        if self.percent != self._last_percent:
            self._last_percent = self.percent
            print(fmt.format(p=self.percent), file=stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
