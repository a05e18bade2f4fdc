"""The joint attention's kernel: diffusers' dispatcher, chosen by `--attention` / the spec's model.attention."""

import json
import shutil

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vera.cli import main
from vera.errors import BadInput
from vera.exr import read_layer
from vera.model.attention import CHOICES, KERNELS, kernel_of, resolve_kernel, usable_kernels, use_kernel, why_unusable
from vera.model.configs import STREAMS, VeraConfig
from vera.model.dit import VeraMoT
from vera.shot import validate

from bundles import base_spec, write_plates, write_spec

# 2 layers, 2 heads of 24: big enough that the kernels' blocking differs from one plain matmul.
SMALL = VeraConfig(dim=48, ffn_dim=64, num_heads=2, num_layers=2, text_dim=16, freq_dim=32, text_len=8)


class PlainSdpaJointAttention(nn.Module):
    """The joint attention as Vera computed it before the dispatcher: (B, heads, L, head_dim) tensors of all
    streams concatenated and one F.scaled_dot_product_attention (the reference for `auto` on the CPU)."""

    def forward(self, q, k, v, isolate=False):
        q, k, v = ([t.transpose(1, 2) for t in part] for part in (q, k, v))  # (B, L, H, D) -> (B, H, L, D)
        if isolate:
            return [F.scaled_dot_product_attention(*qkv).transpose(1, 2) for qkv in zip(q, k, v)]
        joint = F.scaled_dot_product_attention(torch.cat(q, dim=2), torch.cat(k, dim=2), torch.cat(v, dim=2))
        return [part.transpose(1, 2) for part in joint.split([part.shape[2] for part in q], dim=2)]


def model_and_inputs(seed=0, cfg=SMALL, batch=2):
    torch.manual_seed(seed)
    model = VeraMoT(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, len(STREAMS), cfg.in_dim, 3, 4, 6, generator=gen)
    t = torch.tensor([12.5, 730.0])[:batch]
    context = torch.randn(batch, cfg.text_len, cfg.text_dim, generator=gen)
    return model, (x, t, context)


@pytest.mark.parametrize("isolate", [False, True])
def test_auto_on_the_cpu_is_native_and_bit_identical_to_plain_sdpa(isolate):
    model, args = model_and_inputs()
    assert use_kernel(model, "auto", "cpu", torch.float32) == "native"
    assert kernel_of(model) == "native"
    with torch.no_grad():
        out = model(*args, isolate_streams=isolate)
        for block in model.blocks:
            block.attention = PlainSdpaJointAttention()
        reference = model(*args, isolate_streams=isolate)
    assert out.abs().max() > 0.1
    assert torch.equal(out, reference)


def test_every_kernel_that_runs_on_the_cpu_gives_the_same_output():
    model, args = model_and_inputs(seed=1)
    kernels = usable_kernels("cpu", torch.float32, SMALL.num_heads, SMALL.head_dim)
    # PyTorch's reference math, SDPA's own choice and its CPU flash kernel always run on a CPU
    assert {"native", "_native_math", "_native_flash"} <= set(kernels)
    assert "_native_efficient" not in kernels  # no CPU kernel: refused by the probe, not trusted blindly
    outputs = {}
    with torch.no_grad():
        for kernel in kernels:
            use_kernel(model, kernel, "cpu", torch.float32)
            outputs[kernel] = model(*args)
    for kernel, out in outputs.items():
        torch.testing.assert_close(out, outputs["_native_math"], rtol=1e-5, atol=1e-5, msg=kernel)


def test_unknown_kernel_is_refused_listing_the_choices():
    model, _ = model_and_inputs()
    with pytest.raises(BadInput, match=r"unknown attention kernel 'flsh'.*native, _native_cudnn"):
        use_kernel(model, "flsh", "cpu", torch.float32)


def test_kernel_without_its_package_is_refused_naming_the_package():
    pytest.importorskip("diffusers")
    try:
        import flash_attn  # noqa: F401
        pytest.skip("flash-attn is installed here")
    except ImportError:
        pass
    reason = why_unusable("flash", torch.device("cpu"), torch.float32, 2, 24)
    assert "flash-attn" in reason
    with pytest.raises(BadInput, match=r"attention kernel 'flash' cannot be used here: .*flash-attn"):
        resolve_kernel("flash", "cpu", torch.float32, 2, 24)


def test_kernel_that_has_no_cpu_implementation_is_refused():
    with pytest.raises(BadInput, match=r"'_native_efficient' cannot be used here: it does not run on cpu"):
        resolve_kernel("_native_efficient", "cpu", torch.float32, 2, 24)


def small_shot(tmp_path, bundle, **model):
    write_plates(tmp_path)
    spec = base_spec(bundle)
    spec["model"].update(model)
    spec["sampler"]["steps"] = 1
    return write_spec(tmp_path, spec)


def test_validate_refuses_an_unknown_kernel_with_exit_2(tmp_path, tiny_bundle, capsys):
    shot = small_shot(tmp_path, tiny_bundle, attention="flsh")
    problems = validate(shot)
    assert any("model.attention" in p and "'flsh'" in p and "_native_math" in p for p in problems), problems
    assert main(["validate", str(shot)]) == 2
    assert "model.attention" in capsys.readouterr().err
    assert not any("attention" in p for p in validate(small_shot(tmp_path, tiny_bundle, attention="_native_math")))


def test_run_option_and_spec_field_choose_the_kernel_and_the_header_records_it(tmp_path, tiny_bundle):
    shot = small_shot(tmp_path, tiny_bundle, attention="_native_math")
    assert main(["run", str(shot), "--progress", "none"]) == 0
    assert read_layer(tmp_path / "out" / "edit.1001.exr").attributes["vera/attention"] == "_native_math"
    shutil.rmtree(tmp_path / "out")
    assert main(["run", str(shot), "--attention", "auto", "--progress", "none"]) == 0
    assert read_layer(tmp_path / "out" / "edit.1001.exr").attributes["vera/attention"] == "native"


def test_run_refuses_a_kernel_that_cannot_run_with_exit_2(tmp_path, tiny_bundle, capsys):
    shot = small_shot(tmp_path, tiny_bundle)
    assert main(["run", str(shot), "--attention", "_native_efficient", "--progress", "none"]) == 2
    assert "'_native_efficient' cannot be used here" in capsys.readouterr().err


def test_the_kernel_does_not_invalidate_finished_renders(tmp_path, tiny_bundle):
    """Like the device, the kernel is how the numbers are computed, not what is asked for: a farm node that
    picks another kernel does not make the shot's other windows stale."""
    shot = small_shot(tmp_path, tiny_bundle)
    assert main(["run", str(shot), "--progress", "none"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "attention" not in manifest["settings"]["spec"]["model"]


def test_the_kernel_names_are_diffusers_backends_but_those_downloaded_from_the_hub():
    """vera.model.attention_names keeps the names without torch (for the spec and the CLI); they must be exactly
    what the installed diffusers dispatches, less the `*_hub` kernels (which download code at run time)."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    assert set(KERNELS) == {b.value for b in AttentionBackendName if not b.value.endswith("_hub")}
    assert CHOICES == ("auto", *KERNELS)


def test_without_diffusers_the_network_runs_sdpa_bit_identical_to_the_native_kernel(monkeypatch):
    """A GPU machine with torch alone (benchmarks/gpu_proof.py) still runs the network, with the same numbers."""
    import vera.model.attention as attention

    model, args = model_and_inputs(seed=3)
    with torch.no_grad():
        native = model(*args)
        monkeypatch.setattr(attention, "BACKENDS", {})
        assert resolve_kernel("auto", "cpu", torch.float32, 2, 24) == "native"
        bare = model(*args)
    assert torch.equal(native, bare)
