import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network at run time, in tests too
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


import pytest


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """One small random Vera bundle for the session (24x16 model frames, window 9): the real loader reads it."""
    from bundles import SMALL_HEIGHT, SMALL_WIDTH, random_bundle

    return random_bundle(tmp_path_factory.mktemp("bundle") / "tiny", resolution=(SMALL_WIDTH, SMALL_HEIGHT))
