import os
import sys
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
    """`cuda` tests need a CUDA GPU: skipped on machines without one (benchmarks/gpu_proof.py runs them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
