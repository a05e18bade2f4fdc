"""Vera on one GPU, in one command: speed, memory and numerics of the real sizes with random weights.

    python benchmarks/gpu_proof.py --out proof            # one H100/H200-class GPU, about 8 minutes at most
    python benchmarks/gpu_proof.py --smoke --out proof    # every item at toy size on the CPU (CI; under a minute)

Writes proof/gpu_proof.json and proof/gpu_proof.md (a Markdown table per item), both rewritten after EVERY item,
so a run that is killed keeps what it measured. Each item runs in its own try: an error is recorded in the JSON
(type, message, the traceback's last lines) and the next item runs. A time budget (--budget, seconds) skips the
items that no longer fit (each has an estimate of its cost, FULL_COST_S), and a watchdog ends the process at
--hard-limit after writing what it has, so a hard outer limit (10 minutes) is never the one that stops it.

What it needs, on the GPU machine (no network there; nothing is downloaded):
  * python with torch built for CUDA; numpy. This repository (vera is imported from core/, not installed).
  * diffusers (pure Python: carry its wheel, and importlib_metadata's, if the machine lacks them). Without it
    the items marked [diffusers] are skipped with that reason, and the joint attention runs PyTorch's SDPA
    (vera.model.attention: `native` is the only kernel without diffusers).
  * pytest (+ pytest-timeout, which the repository's pytest settings use) for the `cuda` tests item.
  * optional kernels, timed when present: flash-attn (`flash`), FlashAttention-3 (`_flash_3`), sageattention
    (`sage`), xformers.

Items (random weights; vera-1.3b is the full three-stream model, 3 x 1.42B parameters):
  env          GPU, versions, packages; a bf16 8192^3 matmul (the peer the model's throughput is compared to);
  attention    every attention kernel on the joint attention at the real token counts (3 streams x 49 / 81
               frames of 832x480), and the one `auto` picks [diffusers for all but native];
  cuda_tests   `pytest -m cuda` on the files holding CUDA-only tests (CUDA_TEST_FILES; skipped on a CPU);
  tier_*       seconds per sampling step (one forward of both guidance branches, batch 2, after one warm-up) and
               peak memory, per memory tier (resident / parts / layers: vera.offload, `vera-render plan`) at 49
               and 81 frames, beside vera.plan's estimate for the same tier; MFU from vera.plan's FLOP model
               [layers: diffusers];
  block_14b    one vera-14b joint layer (3 x 14B-size blocks) at 81 frames: seconds, MFU, x40 layers;
  bf16_error   the bf16 model's output against the same weights in float32 (full vera-1.3b, a short clip);
  vae_decode   the Wan VAE (diffusers' AutoencoderKLWan, default = Wan2.1 config) decoding 832x480x49: peak
               memory and seconds, beside vera.plan's VAE estimate [diffusers];
  presets      wall time of the sampling loop (vera.sampling.sample) under quality / balanced / turbo at reduced
               steps, balanced with the demo bundle's calibrated step-cache curve; turbo "not available" where
               this build has no such preset (vera.presets) [diffusers];
  fp8          weight memory and step time with fp8 weight storage (vera.offload) against bf16 [diffusers];
  compile      seconds per step eager vs torch.compile'd joint layer (vera.stepcache.compile_blocks), compile time.

MFU is model FLOPs per second over the GPU's datasheet dense bf16 peak (PEAK_BF16_TFLOPS, by device name; None for
an unknown GPU) and, as a peer measured in the same run, over the 8192^3 bf16 matmul's rate.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "core"))

from vera.atomic import atomic_write_text  # noqa: E402
from vera.model.attention import KERNELS, attend, kernel_of, resolve_kernel, use_kernel, why_unusable  # noqa: E402
from vera.model.configs import CONFIGS, STREAMS, VeraConfig  # noqa: E402
from vera.model.dit import JointBlock, VeraMoT, rope_cos_sin  # noqa: E402
from vera.model.vae import WanVAE  # noqa: E402
from vera.offload import apply_fp8_storage, apply_layer_offload  # noqa: E402
from vera.plan import (GIB, VAE_BYTES_PER_PARAM, WAN_VAE_PARAMS, Strategy, estimate, forward_flops,  # noqa: E402
                       latent_grid, plan, tokens_per_stream)
from vera.sampling import sample  # noqa: E402
from vera.presets import PRESETS, plan_steps, read_calibration  # noqa: E402
from vera.stepcache import compile_blocks, layer_count  # noqa: E402

try:
    import diffusers
except ImportError:
    diffusers = None

# Datasheet dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, by a substring of torch.cuda.get_device_name().
# H100/H200 SXM: 989.4; H100 PCIe: 756; A100: 312; L40S: 362; B200: 2250. (A large bf16 matmul reaches about
# 790 on an H200: the `env` item measures it, and MFU is given against both.) First match wins.
PEAK_BF16_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("H800", 989.4), ("GH200", 989.4),
                    ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0))

FULL = dict(model="vera-1.3b", big="vera-14b", frames=(49, 81), size=(832, 480), short_frames=9,
            preset_frames=17, preset_steps=50, compile_frames=17, fp8_frames=49, vae_frames=49, vae={},
            matmul=8192, reps=2, attention_reps=3, budget=450.0, hard_limit=540.0)
# Toy sizes for --smoke (CPU, CI): the same items and JSON shape in seconds.
SMOKE_BIG = VeraConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=40, text_dim=32, freq_dim=32, text_len=16)
SMOKE = dict(model="vera-tiny", big=SMOKE_BIG, frames=(5, 9), size=(64, 48), short_frames=5, preset_frames=5,
             preset_steps=6, compile_frames=5, fp8_frames=5, vae_frames=5,
             vae=dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1), matmul=256, reps=1,
             attention_reps=1, budget=300.0, hard_limit=600.0)
# Rough cost of each item on an H200 (seconds): an item starts only if it fits in what is left of the budget.
# Measured on an H200 (2026-12-04, reps=1 / 20 preset steps) plus a margin: 12, 20, 14 (49 frames) / 17 (81),
# 20 / 17, 8, 3, 3, 27, 15, 19.
CUDA_TEST_FILES = ("test_gpu.py", "test_gpus_promises.py")  # tests/test_repo.py checks the list is whole
FULL_COST_S = {"env": 5, "attention": 25, "cuda_tests": 45, "tier": 35, "tier_layers": 40, "block_14b": 20,
               "bf16_error": 20, "vae_decode": 20, "presets": 90, "fp8": 40, "compile": 90}
GUIDANCE, SHIFT = 5.0, 5.0  # Wan2.1 T2V's recipe: two branches per step (batch 2)


class Proof:
    """The results, the clock and the files."""

    def __init__(self, out: Path, smoke: bool, budget: float):
        self.out, self.smoke, self.budget = out, smoke, budget
        self.started = time.monotonic()
        self.size = SMOKE if smoke else FULL
        self.device = torch.device("cpu" if smoke else "cuda")
        self.dtype = torch.float32 if smoke else torch.bfloat16  # vera.model.bundle.resolve_device's choice
        self.cfg = CONFIGS[self.size["model"]]
        self.results = {"proof": {"command": " ".join(["python", "benchmarks/gpu_proof.py", *sys.argv[1:]]),
                                  "smoke": smoke, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                                  "budget_s": budget, "model": self.size["model"]}, "items": {}}
        self.current = None
        self.child = None  # a running subprocess (the cuda_tests item), ended with the run
        self.lock = threading.Lock()
        self._model = None
        self._layers_model = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def cost(self, kind: str) -> float:
        return 0.0 if self.smoke else FULL_COST_S[kind]

    def run(self, name: str, kind: str, fn, needs_diffusers: bool = False) -> None:
        left = self.budget - self.elapsed()
        if needs_diffusers and diffusers is None:
            record = {"status": "skipped", "reason": "diffusers is not installed"}
        elif left < self.cost(kind):
            record = {"status": "skipped", "reason": f"time budget: {left:.0f} s left, the item needs about "
                                                     f"{self.cost(kind):.0f} s"}
        else:
            with self.lock:
                self.current = name
                self.results["items"][name] = {"status": "running"}
            started = time.monotonic()
            try:
                record = {"status": "ok", **fn()}
            except Exception as exc:  # noqa: BLE001 - one item's failure is recorded; the next item runs
                record = {"status": "error", "error": f"{type(exc).__name__}: {str(exc).strip()[:500]}",
                          "traceback": traceback.format_exc().strip().splitlines()[-6:]}
            record["wall_s"] = round(time.monotonic() - started, 2)
            release()
        with self.lock:
            self.current = None
            self.results["items"][name] = record
            self.write()
        print(f"gpu_proof: {name}: {record['status']} ({self.elapsed():.0f} s)"
              + (f" {record.get('error') or record.get('reason')}" if record["status"] != "ok" else ""), flush=True)

    def write(self) -> None:
        self.results["proof"]["elapsed_s"] = round(self.elapsed(), 1)
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "gpu_proof.json", json.dumps(self.results, indent=1, default=str) + "\n")
        atomic_write_text(self.out / "gpu_proof.md", markdown(self.results))

    def watchdog(self, hard_limit: float) -> None:
        """End the process at `hard_limit` seconds, after recording the item that was running as timed out."""
        def expire():
            with self.lock:
                if self.current is not None:
                    self.results["items"][self.current] = {"status": "error", "error": f"timed out: the run "
                                                           f"reached its hard limit of {hard_limit:.0f} s"}
                self.results["proof"]["ended"] = "hard limit"
                self.write()
                if self.child is not None:
                    self.child.kill()
            print(f"gpu_proof: hard limit of {hard_limit:.0f} s reached; results written", flush=True)
            os._exit(3)

        timer = threading.Timer(hard_limit, expire)
        timer.daemon = True
        timer.start()

    # ---------------------------------------------------------------------------------- shared models

    def model(self) -> VeraMoT:
        """The random full-size model on the device (built once, rebuilt after an item freed it)."""
        if self._model is None:
            self._model = random_model(self.cfg, self.device, self.dtype)
            use_kernel(self._model, "auto", self.device, self.dtype)
        return self._model

    def drop_model(self) -> None:
        self._model = None
        release()

    def layers_model(self) -> VeraMoT:
        """The same weights in CPU memory, one joint block at a time streamed to the device (memory `layers`)."""
        if self._layers_model is None:
            source = self.model()
            with torch.device("meta"):
                model = VeraMoT(self.cfg)
            model = model.to(self.dtype).to_empty(device="cpu")
            model.load_state_dict(source.state_dict())
            model.eval().requires_grad_(False)
            use_kernel(model, kernel_of(source), self.device, self.dtype)
            self._layers_model = apply_layer_offload(model, self.device)
            self.drop_model()  # the layers tier's peak must not count a resident copy
        return self._layers_model


# ---------------------------------------------------------------------------------------------- helpers


def release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated() / GIB, 3)


def allocated_gib(device) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    torch.cuda.synchronize()
    return round(torch.cuda.memory_allocated() / GIB, 3)


def timed_once(fn, device) -> tuple[float, object]:
    """(wall seconds, result) of one call, the device synchronised before the clock stops."""
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def timed(fn, device, warmup: int = 1, reps: int = 1) -> list[float]:
    """Wall seconds of `reps` calls after `warmup` calls, the device synchronised around each."""
    for _ in range(warmup):
        fn()
    sync(device)
    return [timed_once(fn, device)[0] for _ in range(reps)]


def random_model(cfg: VeraConfig, device, dtype, seed: int = 0) -> VeraMoT:
    """VeraMoT's own initialisation, run on the device (a CPU would take minutes at full size)."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = VeraMoT(cfg)
    return model.to(dtype).eval().requires_grad_(False)


def step_inputs(cfg: VeraConfig, frames: int, width: int, height: int, device, batch: int = 2, seed: int = 0):
    """One sampling step's model inputs: both guidance branches (batch 2), random latents and prompt."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    grid = latent_grid(frames, width, height)
    x = torch.randn(batch, len(STREAMS), cfg.in_dim, *grid, generator=g).to(device)
    t = torch.full((batch,), 500.0, device=device)
    context = torch.randn(batch, cfg.text_len, cfg.text_dim, generator=g).to(device)
    return x, t, context


def step_flops(cfg: VeraConfig, frames: int, width: int, height: int, batch: int = 2) -> float:
    return batch * forward_flops(cfg, tokens_per_stream(cfg, frames, width, height))["total"]


def peak_tflops(name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def mfu(flops: float, seconds: float, proof: Proof) -> dict:
    env = proof.results["items"].get("env", {})
    rate = flops / seconds / 1e12
    datasheet, matmul = env.get("peak_bf16_tflops"), env.get("matmul_tflops")
    return {"model_tflops": round(rate, 3), "mfu": round(rate / datasheet, 3) if datasheet else None,
            "of_matmul": round(rate / matmul, 3) if matmul else None}


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------------------------ items


def item_env(proof: Proof) -> dict:
    cuda = proof.device.type == "cuda"
    name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    info = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / GIB, 1) if cuda else None,
            "capability": ".".join(map(str, torch.cuda.get_device_capability())) if cuda else None,
            "peak_bf16_tflops": peak_tflops(name) if cuda else None,
            "packages": {p: package_version(p) for p in ("diffusers", "numpy", "flash-attn", "flash_attn_3",
                                                         "sageattention", "xformers", "pytest", "triton")}}
    n = proof.size["matmul"]
    a = torch.randn(n, n, device=proof.device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=proof.device, dtype=torch.bfloat16)
    times = timed(lambda: a @ b, proof.device, warmup=3, reps=10)
    info["matmul"] = f"{n}x{n}x{n} bf16, median of 10"
    info["matmul_tflops"] = round(2 * n**3 / statistics.median(times) / 1e12, 3)
    return info


def item_attention(proof: Proof) -> dict:
    cfg, (width, height) = proof.cfg, proof.size["size"]
    heads, head_dim = cfg.num_heads, cfg.head_dim
    auto = resolve_kernel("auto", proof.device, proof.dtype, heads, head_dim)
    rows = []
    for frames in proof.size["frames"]:
        joint = len(STREAMS) * tokens_per_stream(cfg, frames, width, height)
        q, k, v = (torch.randn(2, joint, heads, head_dim, device=proof.device, dtype=proof.dtype)
                   for _ in range(3))
        flops = 4 * 2 * heads * joint * joint * head_dim
        for kernel in KERNELS:
            row = {"kernel": kernel, "frames": frames, "joint_tokens": joint}
            reason = why_unusable(kernel, proof.device, proof.dtype, heads, head_dim)
            scores = 2 * heads * joint * joint * proof.dtype.itemsize
            if reason is None and kernel in ("_native_math", "flex") and proof.device.type == "cuda" \
                    and scores > 0.5 * torch.cuda.mem_get_info()[0]:
                reason = f"materialises the full score matrix ({scores / GIB:.0f} GiB) without torch.compile"
            if reason is not None:
                rows.append({**row, "usable": False, "reason": reason})
                continue
            try:
                times = timed(lambda: attend(q, k, v, kernel), proof.device, warmup=1,
                              reps=proof.size["attention_reps"])
                seconds = statistics.median(times)
                rows.append({**row, "usable": True, "ms": round(1e3 * seconds, 2),
                             "tflops": round(flops / seconds / 1e12, 1)})
            except Exception as exc:  # noqa: BLE001 - a kernel that fails at this size is recorded, not fatal
                rows.append({**row, "usable": False, "reason": f"{type(exc).__name__}: {str(exc)[:200]}"})
            release()
        del q, k, v
        release()
    return {"auto": auto, "dtype": str(proof.dtype).replace("torch.", ""), "heads": heads, "head_dim": head_dim,
            "batch": 2, "kernels": rows}


def item_cuda_tests(proof: Proof) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "core"),
                                                                   os.environ.get("PYTHONPATH")])))
    # every file holding `cuda` tests, wherever the tests folder keeps it
    tests = [next(ROOT.glob(f"tests/**/{name}")) for name in CUDA_TEST_FILES]
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-m", "cuda", "-p", "no:cacheprovider",
               *(str(path.relative_to(ROOT)) for path in tests)]
    left = max(30.0, proof.budget - proof.elapsed() - 60)
    proof.child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
    try:
        output, _ = proof.child.communicate(timeout=min(180.0, left))
    except subprocess.TimeoutExpired:
        proof.child.kill()
        output, _ = proof.child.communicate()
    done, proof.child = proof.child, None
    lines = output.strip().splitlines()
    summary = next((line for line in reversed(lines) if " in " in line and ("passed" in line or "skipped" in line
                                                                            or "failed" in line or "error" in line)),
                   lines[-1] if lines else "")
    result = {"command": " ".join(command[1:]), "returncode": done.returncode, "summary": summary.strip("= ")}
    if done.returncode != 0:
        why = [line[:300] for line in lines if line.startswith(("FAILED", "ERROR", "E  "))][:12]
        raise RuntimeError(f"pytest -m cuda: exit {done.returncode}: {summary.strip('= ')}: " + " | ".join(why))
    return result


def item_tier(proof: Proof, frames: int, tier: str) -> dict:
    cfg, (width, height) = proof.cfg, proof.size["size"]
    model = proof.layers_model() if tier == "layers" else proof.model()
    vae = None
    if tier == "resident" and diffusers is not None:  # resident keeps the VAE on the device for the whole render
        vae = WanVAE.from_config(proof.size["vae"], device=proof.device)
    x, t, context = step_inputs(cfg, frames, width, height, proof.device)
    reset_peak(proof.device)

    def step():
        with torch.no_grad():
            return model(x, t, context)

    times = timed(step, proof.device, warmup=1, reps=proof.size["reps"])
    seconds = statistics.median(times)
    estimated = estimate(cfg, Strategy(memory=tier), frames, width, height)
    vae_weights = WAN_VAE_PARAMS * VAE_BYTES_PER_PARAM / GIB if tier == "resident" else 0.0
    flops = step_flops(cfg, frames, width, height)
    memory = torch.cuda.get_device_properties(0).total_memory / GIB if proof.device.type == "cuda" else 80.0
    planned = plan(cfg, frames, width, height, 1, memory)
    result = {"frames": frames, "size": f"{width}x{height}", "tier": tier, "kernel": kernel_of(model),
              "tokens_per_stream": tokens_per_stream(cfg, frames, width, height), "batch": 2,
              "seconds_per_step": round(seconds, 3), "times_s": [round(t, 3) for t in times],
              "peak_gib": peak_gib(proof.device),
              "vae_resident": vae is not None,
              "plan_step_gib": round(estimated["weights"] + estimated["activations"] + vae_weights, 2),
              "plan_peak_gib": estimated["peak"], "plan": estimated,
              "plan_seconds_per_step_at_150_tflops": round(planned.seconds_per_step, 2),
              "flops_per_step": flops, **mfu(flops, seconds, proof)}
    del vae
    return result


def item_block_14b(proof: Proof) -> dict:
    big = proof.size["big"]
    cfg = CONFIGS[big] if isinstance(big, str) else big
    (width, height), frames = proof.size["size"], proof.size["frames"][-1]
    proof.drop_model()
    torch.manual_seed(0)
    with torch.device(proof.device):
        block = JointBlock(cfg)
    block = block.to(proof.dtype).eval().requires_grad_(False)
    block.attention.kernel = resolve_kernel("auto", proof.device, proof.dtype, cfg.num_heads, cfg.head_dim)
    grid = tuple(s // p for s, p in zip(latent_grid(frames, width, height), cfg.patch_size))
    tokens = tokens_per_stream(cfg, frames, width, height)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(2, len(STREAMS), tokens, cfg.dim, generator=g).to(proof.device)
    e0 = (torch.randn(2, len(STREAMS), 6, cfg.dim, generator=g) / cfg.dim**0.5).to(proof.device)
    context = torch.randn(2, len(STREAMS), cfg.text_len, cfg.dim, generator=g).to(proof.device, proof.dtype)
    cos, sin = rope_cos_sin(cfg.head_dim, grid, proof.device)
    reset_peak(proof.device)

    def run():
        with torch.no_grad():
            return block(x, e0, context, cos, sin)

    seconds = statistics.median(timed(run, proof.device, warmup=1, reps=proof.size["reps"]))
    per_forward = forward_flops(cfg, tokens)
    flops = 2 * (per_forward["total"] - per_forward["embed_head"]) / cfg.num_layers
    return {"config": big if isinstance(big, str) else "smoke stand-in", "frames": frames, "tokens_per_stream": tokens,
            "batch": 2, "kernel": block.attention.kernel, "seconds_per_layer": round(seconds, 3),
            "peak_gib": peak_gib(proof.device), "layers": cfg.num_layers,
            "seconds_per_step_all_layers": round(seconds * cfg.num_layers, 2), **mfu(flops, seconds, proof)}


def item_bf16_error(proof: Proof) -> dict:
    cfg, (width, height), frames = proof.cfg, proof.size["size"], proof.size["short_frames"]
    proof.drop_model()
    model = random_model(cfg, proof.device, torch.float32, seed=1)
    x, t, context = step_inputs(cfg, frames, width, height, proof.device, batch=1, seed=1)
    with torch.no_grad():
        reference = model(x, t, context)
        model.to(torch.bfloat16)
        kernel = use_kernel(model, "auto", proof.device, torch.bfloat16)
        out = model(x, t, context).float()
    error = (out - reference).abs()
    return {"frames": frames, "size": f"{width}x{height}", "kernel_bf16": kernel,
            "float32_matmul": "ieee" if not torch.backends.cuda.matmul.allow_tf32 else "tf32",
            "finite": bool(torch.isfinite(out).all() and torch.isfinite(reference).all()),
            "relative_mean_error": round(float(error.mean() / reference.abs().mean()), 5),
            "relative_max_error": round(float(error.max() / reference.abs().max()), 5),
            "cosine": round(float(torch.nn.functional.cosine_similarity(out.flatten(), reference.flatten(), dim=0)), 6)}


def item_vae_decode(proof: Proof) -> dict:
    (width, height), frames = proof.size["size"], proof.size["vae_frames"]
    proof.drop_model()
    reset_peak(proof.device)
    vae = WanVAE.from_config(proof.size["vae"], device=proof.device)
    weights = allocated_gib(proof.device)
    latents = torch.randn(1, vae.z_dim, *vae.latent_shape(frames, height, width), device=proof.device)
    reset_peak(proof.device)
    with torch.no_grad():
        seconds, video = timed_once(lambda: vae.decode(latents), proof.device)
    estimated = estimate(proof.cfg, Strategy(memory="parts"), frames, width, height)
    return {"frames": frames, "size": f"{width}x{height}", "output": list(video.shape), "seconds": round(seconds, 2),
            "weights_gib": weights, "peak_gib": peak_gib(proof.device), "plan_vae_gib": estimated["vae"],
            "parameters": sum(p.numel() for p in vae.model.parameters())}


def item_presets(proof: Proof) -> dict:
    cfg, (width, height) = proof.cfg, proof.size["size"]
    frames, steps = proof.size["preset_frames"], proof.size["preset_steps"]
    model = proof.model()
    calibration = read_calibration(ROOT / "core" / "vera" / "assets" / "demo")
    curve = calibration["curve"] if calibration else ()
    g = torch.Generator(device="cpu").manual_seed(0)
    grid = latent_grid(frames, width, height)
    condition = torch.randn(1, cfg.in_dim - cfg.z_dim, *grid, generator=g).to(proof.device)
    context = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g).to(proof.device)
    negative = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g).to(proof.device)

    def run(step_plan, n):
        count = layer_count(model)
        before = count.full
        seconds, _ = timed_once(lambda: sample(model, condition, context, negative, steps=n, guidance=GUIDANCE,
                                               shift=SHIFT, plan=step_plan), proof.device)
        return seconds, count.full - before

    run(None, 2)  # warm-up: kernels, schedulers
    rows = {}
    for name in ("quality", "balanced", "turbo"):
        if name not in PRESETS:
            rows[name] = {"status": "not available", "reason": f"no {name!r} preset in this build (vera.presets)"}
            continue
        try:
            step_plan = plan_steps(name, steps, curve=curve)
            seconds, evaluations = run(step_plan, step_plan.steps)
            rows[name] = {"status": "ok", "steps": step_plan.steps, "seconds": round(seconds, 2),
                          "layer_evaluations": evaluations, "caching": step_plan.caching}
        except Exception as exc:  # noqa: BLE001 - one preset's failure leaves the others measured
            rows[name] = {"status": "error", "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    quality = rows["quality"].get("seconds")
    for row in rows.values():
        if row.get("status") == "ok" and quality:
            row["speedup"] = round(quality / row["seconds"], 2)
            row["work_ratio"] = round(rows["quality"]["layer_evaluations"] / row["layer_evaluations"], 2)
    return {"frames": frames, "size": f"{width}x{height}", "recipe_steps": steps, "guidance": GUIDANCE,
            "curve": "demo bundle's speed.json" if curve else "none (no step caching)", "presets": rows}


def item_fp8(proof: Proof) -> dict:
    cfg, (width, height), frames = proof.cfg, proof.size["size"], proof.size["fp8_frames"]
    proof.drop_model()
    base = allocated_gib(proof.device)
    model = proof.model()
    bf16_weights = allocated_gib(proof.device)
    x, t, context = step_inputs(cfg, frames, width, height, proof.device)

    def step():
        with torch.no_grad():
            return model(x, t, context)

    reset_peak(proof.device)
    bf16_seconds = statistics.median(timed(step, proof.device, warmup=1, reps=proof.size["reps"]))
    bf16_peak = peak_gib(proof.device)
    apply_fp8_storage(model)
    release()
    fp8_weights = allocated_gib(proof.device)
    reset_peak(proof.device)
    fp8_seconds = statistics.median(timed(step, proof.device, warmup=1, reps=proof.size["reps"]))
    result = {"frames": frames, "size": f"{width}x{height}", "seconds_per_step_bf16": round(bf16_seconds, 3),
              "seconds_per_step_fp8": round(fp8_seconds, 3), "peak_gib_bf16": bf16_peak,
              "peak_gib_fp8": peak_gib(proof.device)}
    if base is not None:
        result.update(weights_gib_bf16=round(bf16_weights - base, 3), weights_gib_fp8=round(fp8_weights - base, 3))
    proof.drop_model()  # its weights are fp8 now
    return result


def item_compile(proof: Proof) -> dict:
    cfg, (width, height), frames = proof.cfg, proof.size["size"], proof.size["compile_frames"]
    model = proof.model()
    x, t, context = step_inputs(cfg, frames, width, height, proof.device)

    def step():
        with torch.no_grad():
            return model(x, t, context)

    reps = 2 if not proof.smoke else 1
    eager = statistics.median(timed(step, proof.device, warmup=1, reps=reps))
    backend = "eager" if proof.smoke else "inductor"  # the smoke run checks the layer traces as one graph
    compile_blocks(model, report=lambda message: None, backend=backend)
    first, _ = timed_once(step, proof.device)
    compiled = statistics.median(timed(step, proof.device, warmup=0, reps=reps))
    proof.drop_model()
    return {"frames": frames, "size": f"{width}x{height}", "backend": backend, "kernel": kernel_of(model),
            "seconds_per_step_eager": round(eager, 3), "seconds_per_step_compiled": round(compiled, 3),
            "first_step_with_compile_s": round(first, 1), "speedup": round(eager / compiled, 3)}


# ----------------------------------------------------------------------------------------------- report


def findings(results: dict) -> list[str]:
    """What the tables say, in numbers derived from them (each only when its items ran)."""
    items = results["items"]
    # tiers with every number (on the CPU smoke run the peaks are None)
    tiers = {(i["frames"], i["tier"]): i for n, i in items.items() if n.startswith("tier_") and i.get("status") == "ok"
             and all(isinstance(i.get(k), (int, float)) for k in ("peak_gib", "plan_step_gib", "seconds_per_step"))}
    out = []
    if tiers:
        under = [100 * (1 - i["plan_step_gib"] / i["peak_gib"]) for i in tiers.values()]
        out.append(f"The planner's step memory is {min(under):.1f}-{max(under):.1f}% under the measured peak in every "
                   "tier.")
        streamed = [(f, 100 * (tiers[f, "layers"]["seconds_per_step"] / tiers[f, "parts"]["seconds_per_step"] - 1),
                     tiers[f, "parts"]["peak_gib"] - tiers[f, "layers"]["peak_gib"])
                    for f in sorted({f for f, _ in tiers}) if (f, "layers") in tiers and (f, "parts") in tiers]
        if streamed:
            out.append("Streaming the joint blocks from CPU memory (`layers`) costs " + ", ".join(
                f"{cost:.1f}% of step time at {f} frames for {saved:.1f} GiB less GPU memory" for f, cost, saved
                in streamed) + " than `parts`.")
        longest = max(f for f, t in tiers if t == "resident") if any(t == "resident" for _, t in tiers) else None
        if longest:
            step = tiers[longest, "resident"]["seconds_per_step"]
            out.append(f"A 50-step render at {longest} frames is 50 x {step:.1f} s = {50 * step / 60:.1f} min of "
                       "transformer time.")
    attention = items.get("attention", {})
    if attention.get("status") == "ok":
        ms = {(r["kernel"], r["frames"]): r["ms"] for r in attention["kernels"] if r.get("ms")}
        flash = [ms["native", f] / ms["_native_flash", f] for k, f in ms if k == "native" and ("_native_flash", f) in ms]
        if flash:
            out.append(f"PyTorch's flash kernel runs at {min(flash):.2f}-{max(flash):.2f}x the speed of SDPA's own "
                       f"choice (`native`); `auto` picked `{attention['auto']}`.")
    vae = items.get("vae_decode", {})
    if vae.get("status") == "ok" and vae.get("plan_vae_gib") and isinstance(vae.get("peak_gib"), (int, float)):
        out.append(f"The measured VAE decode peak is {vae['peak_gib'] / vae['plan_vae_gib']:.1f}x the planner's "
                   f"VAE estimate ({vae['peak_gib']} vs {vae['plan_vae_gib']} GiB).")
    return out


def markdown(results: dict, level: int = 1) -> str:
    """The report (gpu_proof.md; docs/performance.md renders it at level 3 through scripts/docs_numbers.py)."""
    proof, items = results["proof"], results["items"]
    env = items.get("env", {})
    h1, h2 = "#" * level, "#" * (level + 1)
    statuses = [item.get("status") for item in items.values()]
    lines = [f"{h1} GPU proof{' (smoke, CPU toy sizes)' if proof['smoke'] else ''}", "",
             f"`{proof['command']}`, started {proof['started']}, {proof.get('elapsed_s', 0)} s; model "
             f"{proof['model']} (random weights); device: {env.get('device', '?')}, torch {env.get('torch', '?')}, "
             f"CUDA {env.get('cuda')}; bf16 peak {env.get('peak_bf16_tflops')} TFLOP/s (datasheet), "
             f"{env.get('matmul_tflops')} TFLOP/s measured ({env.get('matmul', '')}).", "",
             "| item | status | wall s | note |", "| --- | --- | --- | --- |"]
    for name, item in items.items():
        note = item.get("error") or item.get("reason") or ""
        lines.append(f"| {name} | {item['status']} | {item.get('wall_s', '')} | {note[:160]} |")
    lines += ["", f"{statuses.count('ok')} of {len(statuses)} items ok."]
    found = findings(results)
    if found:
        lines += ["", f"{h2} What it shows", "", *(f"- {line}" for line in found)]
    tiers = [i for n, i in items.items() if n.startswith("tier_") and i.get("status") == "ok"]
    if tiers:
        lines += ["", f"{h2} Memory tiers: one sampling step (both guidance branches)", "",
                  "| frames | tier | kernel | s/step | peak GiB | plan: step GiB | plan: render peak GiB | "
                  "model TFLOP/s | MFU | of matmul |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for i in tiers:
            lines.append(f"| {i['frames']} | {i['tier']} | {i['kernel']} | {i['seconds_per_step']} | {i['peak_gib']} "
                         f"| {i['plan_step_gib']} | {i['plan_peak_gib']} | {i['model_tflops']} | {i['mfu']} | "
                         f"{i['of_matmul']} |")
    attention = items.get("attention", {})
    if attention.get("status") == "ok":
        lines += ["", f"{h2} Attention kernels on the joint attention (auto picks `{attention['auto']}`; "
                  f"{attention['dtype']}, batch 2, {attention['heads']} heads of {attention['head_dim']})", "",
                  "| kernel | frames | joint tokens | ms | TFLOP/s | not usable because |",
                  "| --- | --- | --- | --- | --- | --- |"]
        # a kernel whose package (or hardware) is missing is listed once below the table, not row by row
        def not_installed(row):
            return not row["usable"] and row["reason"].startswith(("Flash Attention", "Sage", "Xformers", "NPU", "XLA"))

        for row in attention["kernels"]:
            if not not_installed(row):
                lines.append(f"| {row['kernel']} | {row['frames']} | {row['joint_tokens']} | {row.get('ms', '')} | "
                             f"{row.get('tflops', '')} | {row.get('reason', '')[:120]} |")
        missing = sorted({row["kernel"] for row in attention["kernels"] if not_installed(row)})
        if missing:
            lines.append(f"\nNot installed here: {', '.join(missing)}.")
    simple = {"block_14b": "One 14B-size joint layer", "bf16_error": "bf16 against float32",
              "vae_decode": "VAE decode", "fp8": "fp8 weight storage", "compile": "torch.compile",
              "cuda_tests": "CUDA tests"}
    for name, title in simple.items():
        item = items.get(name, {})
        if item.get("status") == "ok":
            lines += ["", f"{h2} {title}", "", "| " + " | ".join(k for k in item if k not in ("status", "plan")) + " |",
                      "| " + " | ".join("---" for k in item if k not in ("status", "plan")) + " |",
                      "| " + " | ".join(str(v) for k, v in item.items() if k not in ("status", "plan")) + " |"]
    presets = items.get("presets", {})
    if presets.get("status") == "ok":
        lines += ["", f"{h2} Presets: the sampling loop, {presets['frames']} frames {presets['size']}, recipe "
                  f"{presets['recipe_steps']} steps, guidance {presets['guidance']}, curve: {presets['curve']}", "",
                  "| preset | status | steps | seconds | layer evaluations | wall speed-up | work ratio |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, row in presets["presets"].items():
            lines.append(f"| {name} | {row['status']} | {row.get('steps', '')} | {row.get('seconds', '')} | "
                         f"{row.get('layer_evaluations', '')} | {row.get('speedup', '')} | "
                         f"{row.get('work_ratio', '')} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu_proof.json and gpu_proof.md")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (CI)")
    parser.add_argument("--budget", type=float, help="seconds; items that no longer fit are skipped "
                                                      "(default 450, smoke 300)")
    parser.add_argument("--hard-limit", type=float, help="seconds; the process ends here, results written "
                                                          "(default 540, smoke 600)")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_proof: no CUDA GPU here; run with --smoke for the CPU toy run", file=sys.stderr)
        return 2
    size = SMOKE if args.smoke else FULL
    proof = Proof(Path(args.out), args.smoke, size["budget"] if args.budget is None else args.budget)
    proof.watchdog(size["hard_limit"] if args.hard_limit is None else args.hard_limit)
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 (the bf16_error reference)
    proof.write()

    proof.run("env", "env", lambda: item_env(proof))
    proof.run("attention", "attention", lambda: item_attention(proof))
    proof.run("cuda_tests", "cuda_tests", lambda: item_cuda_tests(proof))
    for frames in size["frames"]:
        for tier in ("resident", "parts"):
            proof.run(f"tier_{frames}_{tier}", "tier", lambda f=frames, t=tier: item_tier(proof, f, t))
    for frames in size["frames"]:
        proof.run(f"tier_{frames}_layers", "tier_layers", lambda f=frames: item_tier(proof, f, "layers"),
                  needs_diffusers=True)
    proof._layers_model = None
    proof.run("block_14b", "block_14b", lambda: item_block_14b(proof))
    proof.run("bf16_error", "bf16_error", lambda: item_bf16_error(proof))
    proof.run("vae_decode", "vae_decode", lambda: item_vae_decode(proof), needs_diffusers=True)
    proof.run("presets", "presets", lambda: item_presets(proof), needs_diffusers=True)
    proof.run("fp8", "fp8", lambda: item_fp8(proof), needs_diffusers=True)
    proof.run("compile", "compile", lambda: item_compile(proof))
    proof.results["proof"]["ended"] = "done"
    proof.write()
    statuses = [item["status"] for item in proof.results["items"].values()]
    print(f"gpu_proof: {statuses.count('ok')} ok, {statuses.count('skipped')} skipped, {statuses.count('error')} "
          f"errors in {proof.elapsed():.0f} s -> {proof.out / 'gpu_proof.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
