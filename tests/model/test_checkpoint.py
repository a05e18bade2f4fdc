"""Vera checkpoints and the Wan2.1 -> Vera conversion from both key layouts, single file and sharded."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vera.errors import BadInput
from vera.model.checkpoint import (convert_wan, diffusers_key_to_wan, load_vera, read_config, save_vera,
                                   wan_key_to_diffusers)
from vera.model.configs import STREAMS, get_config
from vera.model.dit import VeraMoT, file_state_dict

from test_dit import diffusers_wan, inputs

TINY = get_config("vera-tiny")


@pytest.fixture(scope="module")
def wan():
    return diffusers_wan(TINY, seed=7)


def original_state(wan) -> dict:
    """The diffusers model's weights under Wan2.1's original key names."""
    state = {diffusers_key_to_wan(k): v for k, v in wan.state_dict().items()}
    assert None not in state
    return state


def save_sharded(state: dict, folder, stem="diffusion_pytorch_model"):
    """Two safetensors shards and the index JSON that names them (the layout of the Wan 14B release)."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(state)
    shards = {f"{stem}-00001-of-00002.safetensors": keys[::2], f"{stem}-00002-of-00002.safetensors": keys[1::2]}
    weight_map = {}
    for name, shard_keys in shards.items():
        save_file({k: state[k].contiguous() for k in shard_keys}, str(folder / name))
        weight_map.update({k: name for k in shard_keys})
    (folder / f"{stem}.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def assert_streams_equal_wan(model: VeraMoT, wan):
    expected = original_state(wan)
    state = file_state_dict(model)
    for name in STREAMS:
        for key, value in expected.items():
            ours = state[f"{name}.{key}"]
            if key == "patch_embedding.weight":
                torch.testing.assert_close(ours[:, :TINY.z_dim], value, rtol=0, atol=0)
                assert ours[:, TINY.z_dim:].abs().max() == 0  # conditioning starts at zero
            else:
                torch.testing.assert_close(ours, value, rtol=0, atol=0)


def test_key_names_map_both_ways(wan):
    for key in wan.state_dict():
        ours = diffusers_key_to_wan(key)
        assert ours is not None and wan_key_to_diffusers(ours) == key
    ours = {k[len("edit."):] for k in file_state_dict(VeraMoT(TINY)) if k.startswith("edit.")}
    assert set(original_state(wan)) == ours
    assert wan_key_to_diffusers("blocks.3.norm3.weight") == "blocks.3.norm2.weight"
    assert diffusers_key_to_wan("blocks.3.norm2.weight") == "blocks.3.norm3.weight"
    assert wan_key_to_diffusers("img_emb.proj.0.weight") is None


@pytest.mark.parametrize("layout", ["diffusers-sharded", "original-sharded", "original-single", "original-pth",
                                    "original-prefixed"])
def test_conversion_round_trip(tmp_path, wan, layout):
    if layout == "diffusers-sharded":
        wan.save_pretrained(tmp_path / "src", max_shard_size="40KB")  # diffusers writes the shards + index
        assert len(list((tmp_path / "src").glob("*.safetensors"))) > 1
        source = tmp_path / "src"
    elif layout == "original-sharded":
        source = save_sharded(original_state(wan), tmp_path / "src") / "diffusion_pytorch_model.safetensors.index.json"
    elif layout == "original-single":
        source = tmp_path / "wan.safetensors"
        save_file(original_state(wan), str(source))
    elif layout == "original-pth":
        source = tmp_path / "wan.pth"
        torch.save(original_state(wan), source)
    else:  # the wrapper prefix some tools (ComfyUI) put around the keys
        source = tmp_path / "wan.safetensors"
        save_file({f"model.diffusion_model.{k}": v for k, v in original_state(wan).items()}, str(source))

    model = convert_wan(source, TINY)
    assert_streams_equal_wan(model, wan)
    out = save_vera(model, tmp_path / "vera.safetensors")
    assert read_config(out) == TINY
    assert json.loads(out.with_suffix(".json").read_text()) == TINY.to_dict()
    loaded = load_vera(out, device="cpu", dtype=torch.float32)
    assert_streams_equal_wan(loaded, wan)
    # and it computes Wan2.1 in every stream
    x, t, context = inputs(TINY, frames=2)
    with torch.no_grad():
        ours = loaded(x, t, context, isolate_streams=True)
        for i in range(len(STREAMS)):
            ref = wan(x[:, i, :TINY.z_dim], t, context, return_dict=False)[0]
            torch.testing.assert_close(ours[:, i], ref, rtol=0, atol=1e-5)


def test_config_is_inferred_from_the_weights(tmp_path, wan):
    source = tmp_path / "wan.safetensors"
    save_file(original_state(wan), str(source))
    assert convert_wan(source).cfg == TINY


def test_unnamed_sizes_take_the_head_count_from_config_json(tmp_path):
    odd = dataclasses.replace(TINY, dim=48, num_heads=3, z_dim=8, text_len=512)  # matches no named config
    wan = diffusers_wan(odd, seed=5)
    wan.save_pretrained(tmp_path / "wan")  # writes config.json with num_attention_heads
    model = convert_wan(tmp_path / "wan")
    assert model.cfg == odd and model.cfg.in_dim == 2 * 8 + 4
    x, t, context = inputs(odd, frames=2)
    with torch.no_grad():
        ref = wan(x[:, 1, :odd.z_dim], t, context, return_dict=False)[0]
        torch.testing.assert_close(model(x, t, context, isolate_streams=True)[:, 1], ref, rtol=0, atol=1e-5)
    (tmp_path / "wan" / "config.json").unlink()
    with pytest.raises(BadInput, match="pass --config"):
        convert_wan(tmp_path / "wan")


def test_problems_are_reported_together_by_name(tmp_path, wan):
    state = dict(wan.state_dict())
    del state["blocks.1.attn2.to_k.bias"]
    state["blocks.0.attn1.to_q.weight"] = torch.zeros(3, 3)
    state["img_emb.proj.1.weight"] = torch.zeros(2)
    source = tmp_path / "diffusers.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(source))
    with pytest.raises(BadInput) as err:
        convert_wan(source, TINY)
    message = str(err.value)
    assert str(source) in message
    # named as the source names them (diffusers here)
    assert "missing blocks.1.attn2.to_k.bias" in message
    assert "unexpected img_emb.proj.1.weight" in message
    assert "blocks.0.attn1.to_q.weight [3, 3] (expected [32, 32])" in message
    assert "\n" not in message


def test_loading_checks_names_and_never_unpickles(tmp_path):
    model = VeraMoT(TINY)
    path = save_vera(model, tmp_path / "m.safetensors")
    state = load_file(str(path))
    state.pop("alpha.head.head.bias")
    state["composite.extra"] = torch.zeros(1)
    broken = tmp_path / "broken.safetensors"
    save_file(state, str(broken), metadata={"vera_config": json.dumps(TINY.to_dict())})
    with pytest.raises(BadInput, match=r"missing alpha\.head\.head\.bias; unexpected composite\.extra"):
        load_vera(broken)
    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(1)}, str(plain))
    with pytest.raises(BadInput, match="not a Vera checkpoint"):
        load_vera(plain)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(BadInput, match="garbage.safetensors"):
        load_vera(garbage)
    with pytest.raises(BadInput, match="must end in .safetensors"):
        save_vera(model, tmp_path / "m.pth")


def test_load_casts_to_the_requested_dtype(tmp_path):
    path = save_vera(VeraMoT(TINY), tmp_path / "m.safetensors")
    model = load_vera(path, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not model.training
