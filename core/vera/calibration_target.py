"""Where `vera-render calibrate` may write speed.json: never into a bundle that ships with Vera (the embedded
demo model, anything inside the installed package) nor into one that is read-only (no write permission for
this user, or no write bit at all: a studio marks a published bundle so). Such a calibration goes to a named
output bundle (`--out NEW`, a copy of the bundle made there first), or is refused with the command that does
it. Rewriting a shipped bundle's curve would silently change every later `balanced` render of everyone.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import vera
from vera.errors import BadInput
from vera.layout import bundle_path
from vera.model.bundle_manifest import BUNDLE_FILE, bundle_folder
from vera.shot import load_valid

PACKAGE = Path(vera.__file__).resolve().parent


def calibration_folder(spec_paths, out: str | Path | None) -> Path:
    """The bundle folder the calibration of `spec_paths` writes into: `out` (made as a copy of the shots'
    bundle when it does not exist), else the shots' own bundle when Vera may write there; BadInput otherwise."""
    source = bundle_folder(bundle_path(load_valid(Path(spec_paths[0]))))
    if out is not None:
        out = Path(out).expanduser().resolve()
        if not out.exists():
            shutil.copytree(source, out)
        elif not (out / BUNDLE_FILE).is_file():
            raise BadInput(f"{out}: --out names a folder that is not a model bundle (no {BUNDLE_FILE}); name a new "
                           "folder and the bundle is copied there")
        source = out
    why = _not_ours(source)
    if why:
        specs = " ".join(shlex.quote(str(p)) for p in spec_paths)
        raise BadInput(f"{source}: {why}; calibrate into a copy instead: vera-render calibrate {specs} "
                       f"--out {shlex.quote(source.name + '-calibrated')}")
    return source


def _not_ours(folder: Path) -> str | None:
    """Why calibration may not write into `folder`, or None."""
    real = folder.resolve()
    if real.is_relative_to(PACKAGE):
        return "this bundle ships with Vera, and calibrating would change it for every user"
    targets = [real] + [real / "speed.json"] * (real / "speed.json").exists()
    if any(not os.access(p, os.W_OK) or not os.stat(p).st_mode & 0o222 for p in targets):
        return "this bundle is read-only"
    return None
