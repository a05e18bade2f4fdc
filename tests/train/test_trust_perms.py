"""Files and folders vera makes through mkstemp / mkdtemp get an ordinary open()'s or mkdir()'s mode (0666 / 0777
less the umask), not the private 0600 / 0700, so other farm users can read them (issue 18)."""

import os
import stat

import numpy as np
import pytest

from vera.train.data import write_exr_sample


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_training_sample_folder_is_readable_by_other_farm_users(tmp_path, umask_022):
    plate = np.zeros((2, 8, 8, 3), np.float32)
    element = np.zeros((2, 8, 8, 4), np.float32)
    folder = write_exr_sample(tmp_path / "sample_0001", plate, element, "add a ball", "object_addition")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
