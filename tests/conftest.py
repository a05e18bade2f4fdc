import os
import sys
from collections import Counter
from pathlib import Path

# The shared helpers (bundles, images, fake_nuke) live here, the tests in folders that mirror the package; a few
# tests reuse another's fixtures across folders (test_dit's reference Wan, test_vae's tiny Wan, test_render's
# fake renderer), so every folder is importable.
TESTS = Path(__file__).resolve().parent
for folder in (TESTS, *(TESTS / area for area in ("engine", "model", "train", "farm", "nuke"))):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network at run time, in tests too
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Under pytest-xdist (-n auto: one worker per core) each worker, and every process it starts, gets its share of the
# cores. torch's default of one thread per core would put 2 workers x 2 threads on 2 cores, and its threads wait
# for each other at every op: measured on this 2-core machine, two such processes ran the same convolutions and
# matmuls in 8.2-9.4 s with 2 threads each against 2.8-3.3 s with 1 (and used 3.7-3.9 against 2.0-2.3 CPU seconds).
# Set before torch is imported; a test that asks for its own count (torchrun workers: OMP_NUM_THREADS=1) keeps it.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // WORKERS)))
# The suite starts ~100 Python processes (CLI runs, torchrun ranks, harnesses) that import torch, diffusers and
# transformers. Where the environment turns byte-code caching off (PYTHONDONTWRITEBYTECODE=1, as on our CI
# machines) and pip installed with --no-compile, every one of them compiled those libraries from source again:
# measured on this 2-core machine, `import vera.render` took 13.4 s without cached byte-code and 6.6 s with it.
# So the suite writes the cache, Python's default, for itself and every process it starts (the first importer
# of a module pays once).
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


import pytest
import torch


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """One small random Vera bundle for the session (24x16 model frames, window 9): the real loader reads it."""
    from bundles import SMALL_HEIGHT, SMALL_WIDTH, random_bundle

    return random_bundle(tmp_path_factory.mktemp("bundle") / "tiny", resolution=(SMALL_WIDTH, SMALL_HEIGHT))


@pytest.fixture
def shot(tiny_bundle, tmp_path):
    """The small shot (bundles.py: 13 frames of 24x16, windows of 9) in tmp_path with the session's tiny bundle:
    the path of its spec."""
    from bundles import base_spec, write_plates, write_spec

    write_plates(tmp_path)
    return write_spec(tmp_path, base_spec(tiny_bundle))


@pytest.fixture
def fake(monkeypatch):
    """The model's work replaced by bundles.FakeRenderer (cheap, deterministic): the runner's own tests."""
    import vera.render as render
    from bundles import FakeRenderer

    renderer = FakeRenderer()
    monkeypatch.setattr(render, "_render_frames", renderer)
    return renderer


@pytest.fixture
def engine_on_path(monkeypatch):
    """vera-render found the way an installed Nuke finds it: on PATH (this test environment's scripts folder,
    where pip put it beside the interpreter), with no $VERA_RENDER override."""
    import sys

    monkeypatch.delenv("VERA_RENDER", raising=False)
    scripts = os.path.dirname(sys.executable)
    monkeypatch.setenv("PATH", scripts + os.pathsep + os.environ.get("PATH", ""))
    return scripts


def pytest_collection_modifyitems(config, items):
    """`cuda` tests need a CUDA GPU: skipped on machines without one (benchmarks/gpu_proof.py runs them).
    Under pytest-xdist, the files with the most `slow` tests go first (--dist worksteal hands them out in this
    order), so the long ones no longer start last and run alone."""
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if item.get_closest_marker("cuda") is not None:
                item.add_marker(skip)
    if WORKERS > 1:
        slow = Counter(item.path for item in items if item.get_closest_marker("slow") is not None)
        items.sort(key=lambda item: -slow[item.path])  # stable: each file's tests stay together, in their order
