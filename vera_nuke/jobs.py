"""The job registry: every render started from Nuke (local or farm), in one JSON file.

~/.vera/jobs.json by default ($VERA_JOBS overrides). Nuke writes it when a job starts and ends; the monitor
(in Nuke or as `vera-monitor`) reads it. Writes are atomic and serialised with a lock file, so a Nuke
session and a monitor process never lose each other's updates.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import threading
import uuid

from vera_nuke.util import atomic_write_text

ACTIVE_STATES = ("queued", "submitted", "running")
FINAL_STATES = ("done", "failed", "cancelled")
_thread_lock = threading.RLock()


def registry_path() -> str:
    return os.path.expanduser(os.environ.get("VERA_JOBS") or os.path.join("~", ".vera", "jobs.json"))


@contextlib.contextmanager
def _locked():
    path = registry_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with _thread_lock, open(path + ".lock", "a+") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # Windows: the thread lock still serialises one Nuke session
            pass
        yield path


def _read(path: str) -> list:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError):  # unreadable, or JSON nested too deep: no jobs to show
        return []
    return [j for j in data.get("jobs", []) if isinstance(j, dict)] if isinstance(data, dict) else []


def load(script: str | None = None) -> list:
    """All jobs, newest first; only those started from `script` when given."""
    jobs = _read(registry_path())
    if script:
        jobs = [j for j in jobs if os.path.normcase(j.get("script", "")) == os.path.normcase(script)]
    return sorted(jobs, key=lambda j: j.get("submitted", ""), reverse=True)


def new_job(**fields) -> dict:
    job = {"id": uuid.uuid4().hex[:12], "submitted": now(), "state": "queued"}
    job.update(fields)
    return job


def add(job: dict) -> dict:
    with _locked() as path:
        jobs = [j for j in _read(path) if j.get("id") != job["id"]] + [job]
        atomic_write_text(path, json.dumps({"jobs": jobs}, indent=2) + "\n")
    return job


def update(job_id: str, **changes) -> dict | None:
    with _locked() as path:
        jobs = _read(path)
        found = None
        for job in jobs:
            if job.get("id") == job_id:
                job.update(changes)
                job["updated"] = now()
                found = job
        if found is not None:
            atomic_write_text(path, json.dumps({"jobs": jobs}, indent=2) + "\n")
    return found


def get(job_id: str) -> dict | None:
    return next((j for j in _read(registry_path()) if j.get("id") == job_id), None)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
