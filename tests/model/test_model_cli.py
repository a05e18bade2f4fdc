"""`vera-render model-info` and `vera-render convert`."""

import json

import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import save_file

from vera.cli import main
from vera.errors import EXIT_BAD_INPUT
from vera.model.checkpoint import load_vera, read_config
from vera.model.configs import STREAMS, get_config

from test_dit import diffusers_wan

TINY = get_config("vera-tiny")


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_model_info_json_counts_three_wan_streams(capsys):
    with torch.device("meta"):
        wan_count = sum(p.numel() for p in WanTransformer3DModel(num_attention_heads=12, ffn_dim=8960,
                                                                 num_layers=30).parameters())
    code, out, _ = run(capsys, "model-info", "--config", "vera-1.3b", "--json")
    assert code == 0
    info = json.loads(out)
    conditioning = 1536 * 20 * 4  # patch-embedding weights for 16 source-latent + 4 mask channels
    assert info["wan_per_stream"] == wan_count
    assert info["streams"] == {name: wan_count + conditioning for name in STREAMS}
    assert info["total"] == 3 * (wan_count + conditioning)
    assert round(info["total"] / 1e9, 2) == 4.26


def test_model_info_text(capsys):
    code, out, _ = run(capsys, "model-info", "--config", "vera-14b")
    assert code == 0
    assert "42,866,703,552 parameters (42.87B" in out
    assert out.count("14,288,901,184 = Wan2.1 14,288,491,584 + conditioning 409,600") == 3


def test_model_info_unknown_config_is_bad_input(capsys):
    code, _, err = run(capsys, "model-info", "--config", "vera-7b")
    assert code == EXIT_BAD_INPUT
    assert "vera-7b" in err and len(err.strip().splitlines()) == 1


def test_convert_sharded_diffusers_folder(tmp_path, capsys):
    wan = diffusers_wan(TINY, seed=3)
    wan.save_pretrained(tmp_path / "wan", max_shard_size="40KB")
    out = tmp_path / "vera.safetensors"
    code, stdout, err = run(capsys, "convert", "--from-wan", str(tmp_path / "wan"), "--out", str(out),
                            "--dtype", "bfloat16")
    assert code == 0, err
    assert str(out) in stdout
    assert read_config(out) == TINY  # inferred from the weights' sizes
    model = load_vera(out, dtype=torch.float32)
    source = wan.state_dict()
    for name in STREAMS:
        torch.testing.assert_close(getattr(model.blocks[1], name).cross_attn.k.weight,
                                   source["blocks.1.attn2.to_k.weight"].bfloat16().float(), rtol=0, atol=0)
        torch.testing.assert_close(getattr(model.blocks[0], name).norm3.weight, source["blocks.0.norm2.weight"].bfloat16().float())


def test_convert_errors_are_one_line_with_exit_2(tmp_path, capsys):
    code, _, err = run(capsys, "convert", "--from-wan", str(tmp_path / "nowhere"), "--out",
                       str(tmp_path / "v.safetensors"))
    assert code == EXIT_BAD_INPUT and "nowhere" in err and len(err.strip().splitlines()) == 1

    state = {k: v.contiguous() for k, v in diffusers_wan(TINY, seed=4).state_dict().items()}
    state.pop("proj_out.bias")
    source = tmp_path / "wan.safetensors"
    save_file(state, str(source))
    code, _, err = run(capsys, "convert", "--from-wan", str(source), "--out", str(tmp_path / "v.safetensors"),
                       "--config", "vera-tiny")
    assert code == EXIT_BAD_INPUT and "missing proj_out.bias" in err and str(source) in err
    assert not (tmp_path / "v.safetensors").exists()

    code, _, err = run(capsys, "convert", "--from-wan", str(source), "--out", str(tmp_path / "v.pt"))
    assert code == EXIT_BAD_INPUT and ".safetensors" in err
