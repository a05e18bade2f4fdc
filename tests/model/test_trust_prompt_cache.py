"""The prompt-embedding cache may sit on shared storage (issue 18): each entry says what it was made from (cleaned
prompt, encoder, dtype, cache version) and is checked on read; an entry that does not match is recomputed, with
a warning, so a stale or foreign entry never decides what a prompt means."""

import pytest
import torch
from safetensors.torch import save_file

from vera.model.text import CACHE_VERSION, TextEncoder, build_tiny_text_encoder

WORDS = ["add", "a", "red", "ball"]


@pytest.fixture
def encoder(tmp_path):
    folder = build_tiny_text_encoder(tmp_path / "text_encoder", WORDS, d_model=32, seed=3)
    return TextEncoder(folder, cache_dir=tmp_path / "cache", max_length=12)


def _forge(te, prompt, embeddings, **metadata):
    fields = {"prompt": prompt, "encoder": te.fingerprint, "dtype": str(te.dtype),
              "cache_version": str(CACHE_VERSION), **metadata}
    save_file({"embeddings": embeddings}, str(te.cache_path(prompt)), metadata=fields)


@pytest.mark.parametrize("what, metadata, shape", [
    ("another encoder", {"encoder": "someone-elses-encoder"}, None),
    ("another dtype", {"dtype": "torch.float16"}, None),
    ("another cache version", {"cache_version": "0"}, None),
    ("no record of its encoder", {"encoder": None}, None),
    ("embeddings of another width", {}, (4, 7)),
])
def test_an_entry_made_from_something_else_is_recomputed(encoder, capsys, what, metadata, shape):
    prompt = "add a red ball"
    good = encoder.encode(prompt)
    assert encoder.encoder_runs == 1
    fields = {k: v for k, v in metadata.items() if v is not None}
    forged = torch.full(shape or (4, 32), 7.0)
    _forge(encoder, prompt, forged, **fields)
    if metadata.get("encoder", "") is None:  # an entry without the field at all
        from safetensors.torch import save_file as save

        save({"embeddings": forged}, str(encoder.cache_path(prompt)), metadata={"prompt": prompt})
    capsys.readouterr()
    again = encoder.encode(prompt)
    assert torch.equal(again, good), what
    assert encoder.encoder_runs == 2
    assert "prompt cache" in capsys.readouterr().err
    assert encoder.is_cached(prompt)  # rewritten with the right record


def test_a_matching_entry_is_read_without_the_encoder(encoder):
    prompt = "add a red ball"
    good = encoder.encode(prompt)
    assert torch.equal(encoder.encode(prompt), good) and encoder.encoder_runs == 1
