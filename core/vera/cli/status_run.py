"""The handler of `vera-render status` (declared in vera.cli.render_cmds), imported when it runs (vera.cli.later):
it reads the manifest alone, so the Nuke node and the farm wrappers may ask often."""

from __future__ import annotations

import json

from vera.errors import EXIT_QC_FAILED
from vera.outputs import output_folder
from vera.status import format_status, status


def report_status(args) -> int:
    report = status(output_folder(args.out_dir), verify=args.verify)
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    # a frame on disk that is not the one rendered (changed or damaged) fails the check: exit 4, as qc
    return EXIT_QC_FAILED if report["frames"]["checksum_mismatches"] else 0
