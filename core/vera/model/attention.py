"""The kernel of the joint attention, chosen by name and run through diffusers' attention dispatcher.

The names are diffusers' `AttentionBackendName` values (`native`, `_native_cudnn`, `_native_flash`,
`_native_efficient`, `_native_math`, `flash`, `_flash_3`, `sage`, `flex`, `xformers`, ...) plus `auto`. The
dispatcher takes q, k, v as (batch, tokens, heads, head_dim), which is the layout vera.model.dit keeps them in.
Its `*_hub` kernels are left out: they download code from the Hub when first used, and Vera never uses the
network at run time.

`auto` picks, on the CPU, `native` (PyTorch's SDPA choosing its own kernel: the numbers Vera always had); on a
GPU the first of AUTO_ORDER that runs there. Sage attention is never picked by `auto`: it quantises q and k to
int8 (and P.V to fp8 on some GPUs), which changes the numbers beyond rounding; ask for it by name.

diffusers is one of Vera's dependencies. Without it (a bare GPU machine running benchmarks/gpu_proof.py with
torch alone) the network still imports and runs, with one kernel: `native`, PyTorch's SDPA called as diffusers'
native kernel calls it (tests/model/test_attention.py checks the two are bit-identical).

A kernel is usable when diffusers finds its package (diffusers' own requirement check, with its install hint)
and a probe call at the model's head size and dtype runs on the device (e.g. `_native_efficient` has no CPU
kernel, `flash` needs bf16/fp16). Anything else is refused with BadInput naming the kernel and why.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vera.errors import BadInput
from vera.model.attention_names import AUTO, AUTO_ORDER, CHOICES, CPU_DEFAULT, KERNELS, check_kernel_name

try:
    from diffusers.models.attention_dispatch import AttentionBackendName, attention_backend, dispatch_attention_fn
except ImportError:  # torch alone (see the module docstring)
    AttentionBackendName = None

# name -> diffusers' enum member, looked up by name (no Enum call inside a compiled graph)
BACKENDS = {} if AttentionBackendName is None else {
    b.value: b for b in AttentionBackendName if b.value in KERNELS}
__all__ = ["AUTO", "AUTO_ORDER", "CHOICES", "CPU_DEFAULT", "KERNELS", "attend", "check_kernel_name", "kernel_of",
           "resolve_kernel", "usable_kernels", "use_kernel", "why_unusable"]


def why_unusable(kernel: str, device: torch.device, dtype: torch.dtype, heads: int, head_dim: int) -> str | None:
    """None if `kernel` runs here at this head size and dtype; otherwise the reason, in one line."""
    check_kernel_name(kernel)
    if not BACKENDS:  # only `native` exists without diffusers, and SDPA runs everywhere
        return None if kernel == "native" else "diffusers is not installed (without it only native runs)"
    if kernel not in BACKENDS:
        return f"the installed diffusers has no attention backend {kernel!r}"
    backend = BACKENDS[kernel]
    try:
        with attention_backend(backend):  # diffusers' check that the kernel's package is installed
            pass
    except (RuntimeError, ValueError) as exc:
        return str(exc).strip().splitlines()[0]
    probe = torch.zeros(1, 16, heads, head_dim, device=device, dtype=dtype)
    try:
        out = dispatch_attention_fn(probe, probe, probe, backend=backend)
    except Exception as exc:  # noqa: BLE001 - any failure of the probe means the kernel is not usable here
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return (f"it does not run on {torch.device(device).type} with {str(dtype).replace('torch.', '')} at head "
                f"dim {head_dim}: {type(exc).__name__}: {first_line}")
    if out.shape != probe.shape:
        return f"it returned shape {tuple(out.shape)} for {tuple(probe.shape)}"
    return None


def resolve_kernel(name: str, device, dtype: torch.dtype, heads: int, head_dim: int) -> str:
    """The kernel `name` stands for on this device (auto -> a concrete kernel); BadInput if it cannot run."""
    device = torch.device(device)
    if check_kernel_name(name) == AUTO:
        if device.type == "cpu":
            return CPU_DEFAULT
        return next(k for k in AUTO_ORDER if k == "native" or why_unusable(k, device, dtype, heads, head_dim) is None)
    reason = why_unusable(name, device, dtype, heads, head_dim)
    if reason:
        raise BadInput(f"attention kernel {name!r} cannot be used here: {reason} (use --attention auto, or one "
                       f"of {', '.join(usable_kernels(device, dtype, heads, head_dim))})")
    return name


def usable_kernels(device, dtype: torch.dtype, heads: int, head_dim: int) -> list[str]:
    """Every kernel that runs on `device` at this head size and dtype."""
    return [k for k in KERNELS if why_unusable(k, torch.device(device), dtype, heads, head_dim) is None]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: str) -> torch.Tensor:
    """Softmax attention of (B, Lq, heads, head_dim) queries over (B, Lk, heads, head_dim) keys/values."""
    if not BACKENDS:
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    return dispatch_attention_fn(q, k, v, backend=BACKENDS[kernel])


def use_kernel(model: torch.nn.Module, name: str, device, dtype: torch.dtype) -> str:
    """Set the joint attention of every layer of `model` (a VeraMoT, parallelized or not) to the kernel `name`
    resolves to on `device`; returns that kernel's name."""
    cfg = model.cfg
    kernel = resolve_kernel(name, device, dtype, cfg.num_heads, cfg.head_dim)
    for module in model.modules():
        if hasattr(module, "kernel"):  # vera.model.dit.JointAttention
            module.kernel = kernel
    return kernel


def kernel_of(model: torch.nn.Module) -> str:
    """The name of the kernel `model`'s joint attention runs."""
    return next(module.kernel for module in model.modules() if hasattr(module, "kernel"))
