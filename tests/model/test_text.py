"""Text encoder: the tiny UMT5 + word-level tokenizer, embeddings, and the on-disk prompt cache."""

import pytest
import torch
from transformers import AutoTokenizer, UMT5EncoderModel

from vera.errors import BadInput
from vera.model.text import TextEncoder, build_tiny_text_encoder, clean_prompt

WORDS = ["add", "a", "red", "ball", "replace", "background", "with", "sky"]


@pytest.fixture(scope="module")
def encoder_folder(tmp_path_factory):
    return build_tiny_text_encoder(tmp_path_factory.mktemp("te") / "text_encoder", WORDS, d_model=32, seed=3)


def test_tiny_tokenizer_gives_each_word_one_token(encoder_folder):
    tok = AutoTokenizer.from_pretrained(encoder_folder, local_files_only=True)
    ids = tok("Add a RED ball, please!").input_ids
    vocab = tok.get_vocab()
    assert ids == [vocab["add"], vocab["a"], vocab["red"], vocab["ball"], vocab[","], tok.unk_token_id,
                   vocab["!"], tok.eos_token_id]
    assert len({vocab[w] for w in WORDS}) == len(WORDS)


def test_tiny_encoder_is_seeded_and_safetensors_only(encoder_folder, tmp_path):
    again = build_tiny_text_encoder(tmp_path / "again", WORDS, d_model=32, seed=3)
    other = build_tiny_text_encoder(tmp_path / "other", WORDS, d_model=32, seed=4)
    assert not list(encoder_folder.glob("*.bin"))
    load = lambda f: UMT5EncoderModel.from_pretrained(f, local_files_only=True, use_safetensors=True).state_dict()
    a, b, c = load(encoder_folder), load(again), load(other)
    key = "encoder.block.0.layer.0.SelfAttention.q.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])


def test_embeddings_match_the_encoder_and_are_zero_padded(encoder_folder, tmp_path):
    te = TextEncoder(encoder_folder, cache_dir=tmp_path / "cache", max_length=12)
    out = te.encode(["add a red ball", "replace the background with sky"])
    assert out.shape == (2, 12, 32) and out.dtype == torch.float32
    tok = AutoTokenizer.from_pretrained(encoder_folder, local_files_only=True)
    model = UMT5EncoderModel.from_pretrained(encoder_folder, local_files_only=True, use_safetensors=True)
    ids = tok("add a red ball", return_tensors="pt").input_ids  # 4 words + </s>
    with torch.no_grad():
        direct = model(ids).last_hidden_state[0]
    assert torch.allclose(out[0, :5], direct, atol=1e-5)
    assert out[0, 5:].abs().max() == 0 and out[0, :5].abs().sum(-1).min() > 0
    assert out[1, :6].abs().sum(-1).min() > 0 and out[1, 6:].abs().max() == 0  # 5 words + </s>; "the" is <unk>


def test_second_encode_reads_the_cache_and_never_runs_the_encoder(encoder_folder, tmp_path, monkeypatch):
    first = TextEncoder(encoder_folder, cache_dir=tmp_path / "cache", max_length=12)
    wanted = first.encode(["add a red ball", ""])
    assert first.encoder_runs == 1
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2
    assert not list((tmp_path / "cache").glob(".*.tmp"))  # atomic writes leave no temporaries

    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder ran on a cache hit")

    monkeypatch.setattr(UMT5EncoderModel, "forward", no_encoder)
    second = TextEncoder(encoder_folder, cache_dir=tmp_path / "cache", max_length=12)  # another farm task
    assert torch.equal(second.encode(["add  a red ball ", ""]), wanted)  # whitespace-normalised prompt
    assert second.encoder_runs == 0 and second._model is None  # never even loaded
    with pytest.raises(AssertionError, match="cache hit"):
        second.encode("a prompt never seen")


def test_cache_key_changes_with_the_encoder(encoder_folder, tmp_path):
    other = build_tiny_text_encoder(tmp_path / "other", WORDS, d_model=32, seed=9)
    a = TextEncoder(encoder_folder, cache_dir=tmp_path / "cache")
    b = TextEncoder(other, cache_dir=tmp_path / "cache")
    assert a.fingerprint != b.fingerprint
    assert a.cache_path("add a red ball") != b.cache_path("add a red ball")
    b.encode("add a red ball")
    assert b.encoder_runs == 1


def test_damaged_cache_entry_is_re_encoded(encoder_folder, tmp_path):
    te = TextEncoder(encoder_folder, cache_dir=tmp_path / "cache", max_length=8)
    wanted = te.encode("add a red ball")
    te.cache_path("add a red ball").write_bytes(b"garbage")
    te.unload()
    assert torch.equal(te.encode("add a red ball"), wanted)
    assert te.encoder_runs == 2


def test_default_cache_dir_honours_vera_cache(encoder_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("VERA_CACHE", str(tmp_path / "vc"))
    assert TextEncoder(encoder_folder).cache_dir == tmp_path / "vc" / "prompts"


def test_folder_without_encoder_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="no config.json"):
        TextEncoder(tmp_path)


def test_unwritable_cache_still_encodes(encoder_folder, tmp_path, capsys):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache folder should be")
    te = TextEncoder(encoder_folder, cache_dir=blocker / "prompts", max_length=8)
    out = te.encode("add a ball")
    assert out.shape == (1, 8, 32) and out.abs().sum() > 0
    assert "prompt cache" in capsys.readouterr().err


def test_prompts_are_cleaned_as_wan_cleans_them():
    """Wan2.1's tokenizer wrapper: ftfy.fix_text, html.unescape twice, strip, whitespace runs -> one space."""
    assert clean_prompt("  add a\tred\n\nball  ") == "add a red ball"
    assert clean_prompt("fish &amp;amp; chips") == "fish & chips"  # unescaped twice
    assert clean_prompt("add&nbsp;a red ball") == "add a red ball"  # the entity becomes whitespace, then a space
    assert clean_prompt("cafÃ© “sunset”") == 'café "sunset"'  # ftfy: mojibake repaired, quotes straightened


def test_prompts_that_clean_alike_share_one_embedding(encoder_folder, tmp_path):
    te = TextEncoder(encoder_folder, cache_dir=tmp_path / "cache", max_length=12)
    out = te.encode(["add a red ball", "add&nbsp;a  red&#32;ball"])
    assert torch.equal(out[0], out[1]) and te.encoder_runs == 1
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1


def test_cache_entries_of_the_unversioned_scheme_are_not_reused(encoder_folder, tmp_path):
    """Before prompts were cleaned as Wan cleans them, entries were keyed by sha256(fingerprint NUL prompt);
    an entry left there by that version must not be read back as this version's embedding."""
    import hashlib

    from safetensors.torch import save_file

    te = TextEncoder(encoder_folder, cache_dir=tmp_path / "cache", max_length=8)
    prompt = "add a red ball"
    old_key = hashlib.sha256(f"{te.fingerprint}\0{prompt}".encode()).hexdigest()
    (tmp_path / "cache").mkdir()
    save_file({"embeddings": torch.full((5, 32), 7.0)}, str(tmp_path / "cache" / f"{old_key}.safetensors"),
              metadata={"prompt": prompt, "encoder": te.fingerprint})
    out = te.encode(prompt)
    assert te.encoder_runs == 1 and not torch.equal(out[0, :5], torch.full((5, 32), 7.0))
    assert te.cache_path(prompt).name != f"{old_key}.safetensors"
