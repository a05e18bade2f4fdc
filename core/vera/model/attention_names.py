"""The names of the joint attention's kernels, without torch (the spec, the CLI's options and `validate` need
them; vera.model.attention runs them).

The names are diffusers' `AttentionBackendName` values (tests/model/test_attention.py checks this list against the
installed diffusers), less its `*_hub` kernels, which download code from the Hub when first used: Vera never uses
the network at run time.
"""

from __future__ import annotations

from vera.errors import BadInput

AUTO = "auto"
KERNELS = ("flash", "flash_varlen", "_flash_3", "_flash_varlen_3", "flex", "native", "_native_cudnn",
           "_native_efficient", "_native_flash", "_native_math", "_native_npu", "_native_xla", "sage", "sage_varlen",
           "_sage_qk_int8_pv_fp8_cuda", "_sage_qk_int8_pv_fp8_cuda_sm90", "_sage_qk_int8_pv_fp16_cuda",
           "_sage_qk_int8_pv_fp16_triton", "xformers")
CHOICES = (AUTO, *KERNELS)
# Exact kernels, fastest first on recent NVIDIA GPUs: FlashAttention-3 (Hopper), cuDNN's fused attention,
# FlashAttention-2, PyTorch's own flash kernel, then SDPA's own choice. benchmarks/gpu_proof.py times them all
# (an H200, torch 2.11: cuDNN 557 TFLOP/s on the 81-frame joint attention, PyTorch's flash kernel 354;
# flash-attn 2/3 were not installed there: docs/performance.md, "GPU proof").
AUTO_ORDER = ("_flash_3", "_native_cudnn", "flash", "_native_flash", "native")
CPU_DEFAULT = "native"  # PyTorch's SDPA choosing its own kernel: the numbers Vera always had


def check_kernel_name(name: str) -> str:
    """`name` if it is a kernel Vera knows (or auto); BadInput listing the valid ones otherwise."""
    if name not in CHOICES:
        raise BadInput(f"unknown attention kernel {name!r}; choose one of: {', '.join(CHOICES)}")
    return name
