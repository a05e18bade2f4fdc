"""Stamps that decide whether a render is still valid (issue 18): the input-hash cache notices a plate changed in
place with its mtime set back (ctime cannot be set back), and the bundle identity covers files bundle.json
names outside the bundle folder."""

import json
import os
import shutil

from vera.layout import load_shot
from vera.manifest import bundle_identity, inputs_of

from bundles import base_spec, write_plates, write_spec


def _change_in_place_keeping_mtime(path):
    """Flip the last byte (same size, same inode), then put the mtime back as it was."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def test_a_plate_changed_in_place_with_its_mtime_set_back_gets_a_new_hash(tmp_path, tiny_bundle):
    write_plates(tmp_path)
    shot = load_shot(write_spec(tmp_path, base_spec(tiny_bundle)))
    before = inputs_of(shot)["plate"]
    assert (tmp_path / "out" / ".vera" / "input_hashes.json").is_file()  # the cache the second call reads
    _change_in_place_keeping_mtime(tmp_path / "plate.1005.exr")
    after = inputs_of(shot)["plate"]
    assert after["1005"] != before["1005"]
    assert {k: v for k, v in after.items() if k != "1005"} == {k: v for k, v in before.items() if k != "1005"}


def _bundle_naming_an_outside_file(tiny_bundle, tmp_path):
    """A copy of the bundle whose transformer weights live beside it, named by an absolute path."""
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    manifest = json.loads((bundle / "bundle.json").read_text())
    outside = tmp_path / "weights" / "transformer.safetensors"
    outside.parent.mkdir()
    shutil.move(bundle / manifest["transformer"], outside)
    manifest["transformer"] = str(outside)
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    return bundle, outside


def test_the_bundle_identity_covers_files_named_outside_its_folder(tmp_path, tiny_bundle):
    bundle, outside = _bundle_naming_an_outside_file(tiny_bundle, tmp_path)
    write_plates(tmp_path)
    spec = load_shot(write_spec(tmp_path, base_spec(bundle))).spec
    before = bundle_identity(spec)
    data = bytearray(outside.read_bytes())
    data[len(data) // 2] ^= 0xFF  # retrained in place: the middle changes, the name and size do not
    outside.write_bytes(bytes(data))
    assert bundle_identity(spec) != before
