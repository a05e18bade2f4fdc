"""The handlers of `vera-render validate` and `submit` (declared in vera.cli.render_cmds), imported when one of
them runs (vera.cli.later): they read the spec, its plates and the planner, never torch."""

from __future__ import annotations

import json
import sys

from vera.errors import EXIT_BAD_INPUT
from vera.farm.submission import submit
from vera.shot import validate


def validate_spec(args) -> int:
    problems = validate(args.spec)
    if args.json:
        print(json.dumps({"spec": args.spec, "valid": not problems, "problems": problems}, indent=2))
    else:
        for problem in problems:
            print(f"vera-render: error: {problem}", file=sys.stderr)
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        print(f"{args.spec}: {'valid' if not problems else count}", file=sys.stderr if problems else sys.stdout)
    return EXIT_BAD_INPUT if problems else 0


def submit_job(args) -> int:
    options = {"executable": args.executable, "priority": args.priority, "pool": args.pool, "group": args.group,
               "show": args.show, "gpus": args.gpus, "gpu_memory": args.gpu_memory}
    info = submit(args.spec, args.farm, args.out, launch=args.launch, force=args.force, **options)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
    else:
        print(info.describe())
    return 0
