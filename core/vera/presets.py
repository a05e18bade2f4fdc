"""Speed presets an artist picks (`quality | balanced | preview`) as pure data, and the step plan each makes
of a shot's recipe (its steps and guidance, from the spec or the bundle). No torch: the spec validates against
these names, and the sampler (vera.sampling) and its hooks (vera.stepcache) carry the plan out.

A preset changes three things of the recipe:

- **steps**: `preview` samples with fewer steps;
- **guidance schedule**: classifier-free guidance runs the negative branch only for the first
  `guidance_until` of the steps; the remaining (late, low-noise) steps run the prompt branch alone, half the
  work. `preview` uses it; `balanced` keeps guidance on every step, because on the demo set dropping it cost
  far more quality than caching did (docs/performance.md). A shot may set `sampler.guidance_until`;
- **step caching**: diffusers' MagCache on the joint layers (vera.stepcache): on a step whose predicted change
  is small, every joint layer is skipped and the step reuses the previous step's residual (blocks' output -
  input). MagCache needs the model's residual-magnitude curve: `vera-render calibrate` (vera.calibrate)
  measures it once per bundle and writes it to `speed.json` beside bundle.json (the farm never calibrates). A
  bundle without it renders uncached (the other levers still apply).

`quality` is the full recipe with nothing changed: no hooks act on the numbers, so its pixels are bit-identical
to a render without presets. What no library does for us: the calibration as data (here; diffusers only prints
the ratios), ratios for any step grid from one calibration (the curve is stored against the timestep;
vera.stepcache.magnitude_ratios), and keeping the cached residual valid when the guidance schedule drops the
negative branch (the batch halves; vera.stepcache).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from vera.atomic import atomic_write_text
from vera.errors import BadInput
from vera.jsonio import read_json_object

SAMPLERS = ("unipc", "euler")  # vera.sampling
PRESETS = ("quality", "balanced", "preview")  # the shot spec's default is balanced (vera.shot.ShotSpec.speed)
CALIBRATION_FILE = "speed.json"


@dataclass(frozen=True)
class Preset:
    steps_fraction: float         # of the recipe's steps (rounded, at least MIN_STEPS)
    guidance_until: float         # fraction of steps that run the negative branch (CFG recipes only)
    cache_threshold: float        # MagCache's bound on the accumulated magnitude error; 0 = no caching
    cache_max_skip: int           # MagCache K: at most this many consecutive steps reuse the residual
    cache_retention: float        # MagCache: the first fraction of steps is always computed


# Measured on the demo bundle's held-out clips (benchmarks/sampling_bench.py, docs/performance.md).
PRESET_TABLE = {
    "quality": Preset(steps_fraction=1.0, guidance_until=1.0, cache_threshold=0.0, cache_max_skip=0,
                      cache_retention=1.0),
    # MagCache's published Wan2.1-1.3B threshold and retention; K=3 measured as good as K=4 (same evaluations,
    # +0.4 dB). The negative branch stays on every step: dropping it for even the last 10% of a 50-step,
    # guidance-5 recipe cost 6 dB of PSNR against the full recipe (a background change fell to 28 dB).
    "balanced": Preset(steps_fraction=1.0, guidance_until=1.0, cache_threshold=0.12, cache_max_skip=3,
                       cache_retention=0.2),
    # A first look: 7.7x fewer FLOPs than the 50-step guided recipe, 4.0x than the demo's 12 steps.
    "preview": Preset(steps_fraction=0.4, guidance_until=0.3, cache_threshold=0.3, cache_max_skip=3,
                      cache_retention=0.2),
}
MIN_STEPS = 4


def check_preset(name: str) -> str:
    if name not in PRESETS:
        raise BadInput(f"unknown speed {name!r}; choose one of: {', '.join(PRESETS)}")
    return name


@dataclass(frozen=True)
class StepPlan:
    """What one `vera.sampling.sample` call does: how many steps, which of them guided, what caching."""
    steps: int
    guidance_until: float = 1.0
    cache_threshold: float = 0.0
    cache_max_skip: int = 0
    cache_retention: float = 1.0
    curve: tuple = ()             # calibration: ((timestep, log residual magnitude), ...); () = none

    @property
    def caching(self) -> bool:
        return self.cache_threshold > 0 and bool(self.curve)

    def guided(self, index: int, steps: int) -> bool:
        """Whether step `index` of `steps` runs the negative branch (when the recipe uses guidance at all)."""
        return index < max(1, math.ceil(self.guidance_until * steps - 1e-9))


def plan_steps(preset: str, steps: int, guidance_until: float | None = None, curve=()) -> StepPlan:
    """The plan of `preset` applied to a recipe of `steps`; an explicit `guidance_until` wins over the preset's."""
    p = PRESET_TABLE[check_preset(preset)]
    n = steps if p.steps_fraction >= 1 else max(min(steps, MIN_STEPS), round(steps * p.steps_fraction))
    until = p.guidance_until if guidance_until is None else float(guidance_until)
    return StepPlan(steps=int(n), guidance_until=until, cache_threshold=p.cache_threshold,
                    cache_max_skip=p.cache_max_skip, cache_retention=p.cache_retention,
                    curve=tuple(map(tuple, curve)) if p.cache_threshold > 0 else ())


# ------------------------------------------------------------------------------------------ calibration data

def read_calibration(bundle_folder) -> dict | None:
    """speed.json of a bundle folder ({"curve": [[t, log magnitude], ...], ...}), or None when not calibrated."""
    if bundle_folder is None:
        return None
    path = Path(bundle_folder) / CALIBRATION_FILE
    if not path.is_file():
        return None
    data = read_json_object(path, "speed calibration")
    curve = data.get("curve")
    if not (isinstance(curve, list) and len(curve) >= 2
            and all(isinstance(p, list) and len(p) == 2 for p in curve)):
        raise BadInput(f"{path}: 'curve' must be a list of at least two [timestep, log magnitude] pairs")
    return data


def write_calibration(bundle_folder, data: dict) -> None:
    curve = ",\n  ".join(json.dumps(point) for point in data["curve"])  # one [t, log magnitude] per line
    rest = json.dumps({k: v for k, v in data.items() if k != "curve"}, indent=1)[1:-2]
    atomic_write_text(Path(bundle_folder) / CALIBRATION_FILE, f'{{"curve": [\n  {curve}\n ],{rest}\n}}\n')


