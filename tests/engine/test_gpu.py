"""What only a CUDA GPU can show (marker `cuda`: skipped without one; benchmarks/gpu_proof.py runs them).

Imports only torch and the network's own modules, so that a GPU machine with torch (and diffusers) alone collects
this file; diffusers-dependent tests skip without it.
"""

from __future__ import annotations

import copy

import pytest
import torch

from vera.model.attention import AUTO_ORDER, usable_kernels, use_kernel
from vera.model.configs import STREAMS, VeraConfig
from vera.model.dit import VeraMoT

pytestmark = pytest.mark.cuda

# head dim 128 as every Wan size; small otherwise
CONFIG = VeraConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=3, text_dim=32, freq_dim=32, text_len=8)


def model_and_inputs(seed=0):
    torch.manual_seed(seed)
    model = VeraMoT(CONFIG).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, len(STREAMS), CONFIG.in_dim, 3, 8, 12, generator=g)
    t = torch.tensor([300.0, 800.0])
    context = torch.randn(2, CONFIG.text_len, CONFIG.text_dim, generator=g)
    return model, (x.cuda(), t.cuda(), context.cuda())


def test_auto_picks_an_exact_fused_kernel_on_the_gpu():
    pytest.importorskip("diffusers")
    model, _ = model_and_inputs()
    kernel = use_kernel(model.cuda().bfloat16(), "auto", "cuda", torch.bfloat16)
    assert kernel in AUTO_ORDER and kernel != "native", kernel


def test_every_kernel_on_the_gpu_agrees_with_the_reference_math():
    pytest.importorskip("diffusers")
    model, args = model_and_inputs(seed=1)
    model = model.cuda().bfloat16()
    kernels = usable_kernels("cuda", torch.bfloat16, CONFIG.num_heads, CONFIG.head_dim)
    assert {"native", "_native_math", "_native_flash", "_native_efficient"} <= set(kernels)
    outputs = {}
    for kernel in kernels:
        use_kernel(model, kernel, "cuda", torch.bfloat16)
        with torch.no_grad():
            outputs[kernel] = model(*args).float()
    reference = outputs["_native_math"]
    scale = reference.abs().max()
    for kernel, out in outputs.items():
        # sage quantises q and k to int8 (and P.V to fp8 on Hopper): looser than the exact kernels' bf16 rounding
        tolerance = 0.1 if "sage" in kernel else 0.03
        assert (out - reference).abs().max() <= tolerance * scale, kernel


def test_blocks_streamed_to_the_gpu_with_prefetch_equal_the_resident_model():
    """The CUDA path of `layers` (side-stream prefetch, non-blocking copies), which the CPU tests cannot run."""
    pytest.importorskip("diffusers")
    from vera.offload import apply_layer_offload

    model, args = model_and_inputs(seed=2)
    model = model.bfloat16()
    streamed = apply_layer_offload(copy.deepcopy(model), torch.device("cuda"))
    resident = model.cuda()
    with torch.no_grad():
        expected = resident(*args)
        for _ in range(2):  # the second call runs on prefetched blocks
            assert torch.equal(streamed(*args), expected)
    assert next(streamed.blocks[0].parameters()).device.type == "cpu"  # back in CPU memory after the call


def test_fp8_storage_on_the_gpu_saves_a_byte_per_stored_weight_and_stays_close():
    pytest.importorskip("diffusers")
    from vera.offload import FP8_SKIP_PATTERNS, apply_fp8_storage

    model, args = model_and_inputs(seed=3)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    bf16 = model.cuda().bfloat16()
    torch.cuda.synchronize()
    bf16_bytes = torch.cuda.memory_allocated() - base
    fp8 = apply_fp8_storage(copy.deepcopy(bf16))
    torch.cuda.synchronize()
    fp8_bytes = torch.cuda.memory_allocated() - base - bf16_bytes
    stored = [m.weight for name, m in fp8.named_modules() if isinstance(m, torch.nn.Linear)
              and not any(pattern in name for pattern in FP8_SKIP_PATTERNS)]
    assert stored and all(w.dtype == torch.float8_e4m3fn for w in stored)
    # what the GPU holds shrinks by one byte per stored weight (bf16 -> fp8), allocator rounding aside
    assert fp8_bytes <= bf16_bytes - 0.95 * sum(w.numel() for w in stored)
    with torch.no_grad():
        ref, out = bf16(*args).float(), fp8(*args).float()
    assert float((out - ref).abs().mean() / ref.abs().mean()) < 0.06


def test_bf16_model_on_the_gpu_is_close_to_float32():
    model, args = model_and_inputs(seed=4)
    model = model.cuda()
    with torch.no_grad():
        ref = model(*args)
        out = copy.deepcopy(model).bfloat16()(*args).float()
    assert float((out - ref).abs().mean() / ref.abs().mean()) < 0.02
