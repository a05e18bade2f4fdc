"""Speed: presets an artist picks (`quality | balanced | preview | turbo`), applied to the sampling loop from outside.

`turbo` is different in kind: it samples with the bundle's distilled student (`vera-train distill`,
vera.model.student) on the student's own few-step recipe, one forward per step; the rest of this docstring is
about the other three.

A preset changes three things of the shot's recipe (its steps and guidance, from the spec or the bundle):

- **steps**: `preview` samples with fewer steps;
- **guidance schedule**: classifier-free guidance runs the negative branch only for the first
  `guidance_until` of the steps; the remaining (late, low-noise) steps run the prompt branch alone, half the
  work. `preview` uses it; `balanced` keeps guidance on every step, because on the demo set dropping it cost
  far more quality than caching did (docs/performance.md). A shot may set `sampler.guidance_until`;
- **step caching**: diffusers' MagCache (`diffusers.hooks.apply_mag_cache`) on the joint layers
  (`VeraMoT.blocks`, each a `JointBlock`): on a step whose predicted change is small, every joint layer is
  skipped and the step reuses the previous step's residual (blocks' output - input). The decision is one per
  step for the whole batch, so the three streams and both CFG branches (one batch, vera.sampling) are always
  skipped or computed together. MagCache needs the model's residual-magnitude curve: `calibrate` measures it
  once per bundle and `vera-render calibrate` writes it to `speed.json` beside bundle.json (the farm never
  calibrates). A bundle without it renders uncached (the other levers still apply).

`quality` is the full recipe with nothing changed: no hooks act on the numbers, so its pixels are bit-identical
to a render without this module. `step_cache` also counts joint-layer evaluations (full and skipped) for the
manifest. Why MagCache and not diffusers' other caches: FirstBlockCache reads its input under the fixed name
`hidden_states` (our blocks take `x`) and needs a pipeline-set cache context; TaylorSeer, FasterCache and
PyramidAttentionBroadcast hook diffusers' `Attention` / `FeedForward` modules, which our network does not use;
MagCache reads the argument name from `TransformerBlockRegistry`, where JointBlock is registered here.
What no library does for us, and is written here: its calibration as data (diffusers only prints the ratios),
ratios for any step grid from one calibration (the curve is stored against the timestep), and keeping the
cached residual valid when the guidance schedule drops the negative branch (the batch halves).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from vera.errors import BadInput

PRESETS = ("quality", "balanced", "preview", "turbo")  # the shot spec's default is balanced (vera.shot.ShotSpec.speed)
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
    # The bundle's distilled student (vera.model.student): its own few steps, guidance folded in, no cache.
    # Its steps and shift come from the bundle (vera.model.student.turbo_recipe), not from the shot's recipe.
    "turbo": Preset(steps_fraction=1.0, guidance_until=1.0, cache_threshold=0.0, cache_max_skip=0,
                    cache_retention=1.0),
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
    from pathlib import Path

    from vera.errors import read_json_object

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
    from pathlib import Path

    from vera.atomic import atomic_write_text

    curve = ",\n  ".join(json.dumps(point) for point in data["curve"])  # one [t, log magnitude] per line
    rest = json.dumps({k: v for k, v in data.items() if k != "curve"}, indent=1)[1:-2]
    atomic_write_text(Path(bundle_folder) / CALIBRATION_FILE, f'{{"curve": [\n  {curve}\n ],{rest}\n}}\n')


def magnitude_ratios(curve, timesteps) -> list[float]:
    """MagCache's per-step ratios |residual_i| / |residual_i-1| for this grid of timesteps, from the calibrated
    curve of log residual magnitude against the timestep (1.0 for the first step)."""
    points = np.asarray(sorted(curve), dtype=np.float64)
    ts = np.asarray([float(t) for t in timesteps], dtype=np.float64)
    log_mag = np.interp(ts, points[:, 0], points[:, 1])
    return [1.0] + [float(r) for r in np.exp(np.diff(log_mag))]


def curve_from_steps(timesteps, magnitudes: list[list[float]]) -> list[list[float]]:
    """Average several runs' per-step mean residual magnitudes (same grid) into [[t, log magnitude], ...].

    Each run is normalised to its first step, so clips of different content weigh the same."""
    logs = np.log(np.asarray(magnitudes, dtype=np.float64))
    mean = (logs - logs[:, :1]).mean(axis=0)
    return [[round(float(t), 4), round(float(m), 6)] for t, m in zip(timesteps, mean)]


# --------------------------------------------------------------------------------- hooks on the joint layers

_COUNT_HOOK = "vera_layer_count"
_REGISTERED = []


def _register_joint_blocks(blocks) -> None:
    """Tell diffusers' caches how a JointBlock is called: the residual streams are the argument `x`, and the
    block returns them as one tensor (all streams, all CFG branches: cached and skipped as one). The registry
    matches exact classes, so a block FSDP2 has sharded (a generated subclass, FSDPJointBlock) is registered too."""
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry

    for cls in {type(block) for block in blocks} - set(_REGISTERED):
        TransformerBlockRegistry.register(cls, TransformerBlockMetadata(
            return_hidden_states_index=0, return_encoder_hidden_states_index=None, hidden_states_argument_name="x"))
        _REGISTERED.append(cls)


class LayerCount:
    """Joint-layer evaluations, in layer x batch-row units (a CFG step's two branches count twice)."""

    def __init__(self):
        self.full = 0
        self.skipped = 0

    def as_dict(self) -> dict:
        return {"full": self.full, "skipped": self.skipped}


def layer_count(model) -> LayerCount:
    """The running count of a model (kept on it, so a caller can take the difference around a render)."""
    if not hasattr(model, "_vera_layer_count"):
        model._vera_layer_count = LayerCount()
    return model._vera_layer_count


def _counting_hook(count: LayerCount):
    from diffusers.hooks import ModelHook

    class CountEvaluations(ModelHook):
        """Innermost hook: runs only when the layer really computes."""

        def pre_forward(self, module, *args, **kwargs):
            count.full += int(args[0].shape[0] if args else kwargs["x"].shape[0])
            return args, kwargs

    return CountEvaluations()


class StepCache:
    """Hooks on the joint layers for one sampling run (see `step_cache`). The sampler calls
    `before_step(batch)` before each model call."""

    def __init__(self, model, plan: StepPlan, timesteps):
        self.model, self.plan, self.timesteps = model, plan, timesteps
        self.count = layer_count(model)
        self.blocks = list(getattr(model, "blocks", ()))  # a stand-in model without joint layers: nothing to hook
        self.handles, self.leader, self.calls = [], None, 0

    def __enter__(self):
        from diffusers.hooks import HookRegistry

        self.full_before = self.count.full
        for block in self.blocks:
            # registered first = innermost: it runs only when the layer really computes
            HookRegistry.check_if_exists_or_initialize(block).register_hook(_counting_hook(self.count), _COUNT_HOOK)
            self.handles.append(block.register_forward_pre_hook(self._count_call))  # every call, skipped or not
        if self.plan.caching and self.blocks:
            from diffusers.hooks import MagCacheConfig, apply_mag_cache

            _register_joint_blocks(self.blocks)
            config = MagCacheConfig(threshold=self.plan.cache_threshold, max_skip_steps=self.plan.cache_max_skip,
                                    retention_ratio=self.plan.cache_retention,
                                    num_inference_steps=len(self.timesteps),
                                    mag_ratios=magnitude_ratios(self.plan.curve, self.timesteps))
            apply_mag_cache(getattr(self.model, "network", self.model), config)  # a wrapper's inner model
            self.leader = HookRegistry.check_if_exists_or_initialize(self.blocks[0]).get_hook(
                "mag_cache_leader_block_hook")
        if hasattr(self.model, "step_cache_started"):  # vera.launch's leader: the other ranks do the same
            self.model.step_cache_started(self.plan, self.timesteps)
        return self

    def _count_call(self, module, args):
        self.calls += int(args[0].shape[0])

    def before_step(self, batch: int) -> None:
        """The guidance schedule dropped the negative branch: keep the cached residual of the prompt branch
        (the first rows of the [prompt, negative] batch), so a skipped step stays right in shape and meaning."""
        if self.leader is None:
            return
        try:
            state = self.leader.state_manager.get_state()
        except ValueError:  # no cache context yet: no step has run
            return
        if state.previous_residual is not None and state.previous_residual.shape[0] > batch:
            state.previous_residual = state.previous_residual[:batch]

    def __exit__(self, *exc):
        from diffusers.hooks import HookRegistry

        for handle in self.handles:
            handle.remove()
        for block in self.blocks:
            registry = HookRegistry.check_if_exists_or_initialize(block)
            for name in reversed(list(registry.hooks)):  # outermost first
                registry.remove_hook(name, recurse=False)
        self.count.skipped += self.calls - (self.count.full - self.full_before)
        if hasattr(self.model, "step_cache_ended"):
            self.model.step_cache_ended()
        return False


def step_cache(model, plan: StepPlan | None, timesteps) -> StepCache:
    """Counting (always) and MagCache (when the plan caches) on `model.blocks` for one sampling run over
    `timesteps`: `with step_cache(model, plan, timesteps) as cache: ...`."""
    return StepCache(model, plan or StepPlan(steps=len(timesteps)), timesteps)


# ------------------------------------------------------------------------------------------------ calibrate

class ResidualMagnitudes:
    """Records, for every model call, its timestep and the mean token norm of the joint layers' total residual
    (last block's output - first block's input, over all streams and rows): what MagCache's ratios are made of."""

    def __init__(self, model):
        self.model, self.records, self.handles = model, [], []

    def __enter__(self):
        state = {}

        def take_t(module, args):
            state["t"] = float(args[1].reshape(-1)[0])

        def take_input(module, args):
            state["x"] = args[0]

        def record(module, args, output):
            residual = (output - state["x"]).float()
            self.records.append((state["t"], float(torch.linalg.norm(residual, dim=-1).mean())))

        blocks = self.model.blocks
        self.handles = [self.model.register_forward_pre_hook(take_t), blocks[0].register_forward_pre_hook(take_input),
                        blocks[-1].register_forward_hook(record)]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        return False


def calibrate(spec_paths, steps: int | None = None, seed: int = 0, progress=None) -> tuple[str, dict]:
    """Render the first window of each shot at the full recipe (`steps` overriding the recipe's: a fine grid
    gives a detailed curve) and measure the residual-magnitude curve. Returns (bundle folder, speed.json data).
    Every shot must use the same bundle, sampler and shift."""
    import vera
    from vera.model.bundle import bundle_folder, load_bundle
    from vera.pipeline import render_frames, sampler_settings
    from vera.render import load_shot

    shots = [load_shot(path) for path in spec_paths]
    if not shots:
        raise BadInput("calibrate: give at least one shot spec")
    names = {"demo" if s.spec.model.bundle == "demo" else s.spec.resolve(s.spec.model.bundle) for s in shots}
    if len(names) != 1:
        raise BadInput(f"calibrate: the shots use different bundles ({', '.join(sorted(names))}); calibrate each "
                       "bundle with its own shots")
    name = names.pop()
    bundle = load_bundle(name, device=shots[0].spec.model.device)
    runs, recipe = [], None
    for shot in shots:
        spec = shot.spec
        spec.speed = "quality"
        if steps is not None:
            spec.sampler.steps = int(steps)
        settings = sampler_settings(bundle, spec)
        this = {"sampler": settings.sampler, "steps": settings.steps, "shift": settings.shift,
                "guidance": settings.guidance}
        if recipe is not None and this != recipe:
            raise BadInput(f"{shot.spec_path}: calibrate: recipe {this} differs from the first shot's {recipe}")
        recipe = this
        with ResidualMagnitudes(bundle.transformer) as magnitudes:
            render_frames(bundle, spec, shot.windows[0].frames, seed)
        runs.append(magnitudes.records)
        if progress is not None:
            progress.advance(1, f"{spec.name}")
    timesteps = [t for t, _ in runs[0]]
    data = {"curve": curve_from_steps(timesteps, [[m for _, m in run] for run in runs]),
            "calibrated": dict(recipe, shots=[s.spec.name for s in shots], seed=int(seed)),
            "vera": vera.__version__}
    return str(bundle_folder(name)), data


# ------------------------------------------------------------------------------------------------ compile

def compile_blocks(model, report=print) -> None:
    """Regional compilation: `torch.compile` each JointBlock's forward. The blocks share one class and one code
    object, so dynamo compiles the layer once and reuses the graph at every depth (the weights are graph
    inputs). The compile happens in the first forward; its time (compile included) is reported once."""
    for block in model.blocks:
        block.forward = torch.compile(block.forward, fullgraph=True, dynamic=False)
    started = {}

    def start(module, args):
        started.setdefault("t", time.perf_counter())

    def stop(module, args, output):
        handles[0].remove()
        handles[1].remove()
        report(f"vera: torch.compile of the joint layer: first forward {time.perf_counter() - started['t']:.1f} s "
               "(compile included)")

    handles = [model.register_forward_pre_hook(start), model.register_forward_hook(stop)]
