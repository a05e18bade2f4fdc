import pytest

from vera.train.synth import generate


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Six synthetic layered clips of 5 frames at 32x32 (vera.train.synth), made once per test module: the
    tiny training runs' data."""
    root = tmp_path_factory.mktemp("synth")
    generate(root, 6, seed=3, size=(32, 32), frames=5)
    return root
