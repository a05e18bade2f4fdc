"""The text encoder: transformers `UMT5EncoderModel` + its tokenizer from a local folder, with a prompt cache.

Wan2.1 conditions on umT5-xxl hidden states: the prompt is tokenised to at most `max_length` (512) tokens, the
encoder's last hidden state is kept for the real tokens and zero-padded to `max_length`.

Prompts are cleaned as Wan2.1's tokenizer wrapper cleans them (`clean_prompt`: ftfy, HTML entities, whitespace)
before they are encoded or looked up.

The real encoder is large (about 11 GB in bf16), and every farm task of a shot asks for the same prompts, so
embeddings are cached on disk keyed by (cache version, encoder fingerprint, cleaned prompt): the first task
encodes, the rest read a small safetensors file and never load the encoder. Cache files are written atomically, so concurrent tasks are
safe. The cache lives in `$VERA_CACHE/prompts` (default `~/.cache/vera/prompts`).

`build_tiny_text_encoder` writes a small random UMT5 and a word-level tokenizer: tests use it, and so does the
embedded demo model, whose instruction words must each be one distinct token.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import struct
import sys
from pathlib import Path

import ftfy
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import AutoTokenizer, PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel
from transformers.utils import logging as hf_logging

from vera.atomic import atomic_path
from vera.errors import BadInput

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2: T5's pad / eos / unk convention
PUNCTUATION = tuple(".,!?;:'\"-()")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model")
_FINGERPRINT_SAMPLE = 1 << 20  # bytes read from each end of each weight file
# Bumped whenever what an entry holds for a prompt changes (2: prompts cleaned with ftfy + HTML unescaping);
# entries of another version live under other keys and are never read.
CACHE_VERSION = 2


def default_cache_dir() -> Path:
    root = os.environ.get("VERA_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "vera") / "prompts"


def clean_prompt(prompt: str) -> str:
    """Clean a prompt as Wan2.1 does before tokenising: ftfy's fix_text (mojibake, curly quotes...), HTML
    entities unescaped twice, whitespace runs collapsed to one space, ends stripped."""
    text = html.unescape(html.unescape(ftfy.fix_text(prompt)))
    return re.sub(r"\s+", " ", text).strip()


def _find_tokenizer_folder(folder: Path) -> Path:
    # A diffusers Wan checkout keeps the tokenizer beside the encoder (text_encoder/ + tokenizer/).
    for candidate in (folder, folder / "tokenizer", folder.parent / "tokenizer"):
        if any((candidate / name).is_file() for name in _TOKENIZER_FILES):
            return candidate
    raise BadInput(f"{folder}: no tokenizer files (tokenizer.json or spiece.model) here or in a tokenizer/ folder")


def encoder_fingerprint(folder: str | Path, tokenizer_folder: str | Path, dtype: torch.dtype) -> str:
    """A content hash of the encoder: config, tokenizer files, each weight file's safetensors header, size and
    first/last megabyte, and the compute dtype. Content-based (not mtimes), so every farm node computes the same
    key for the same weights, and cheap even for an 11 GB encoder."""
    folder, tokenizer_folder = Path(folder), Path(tokenizer_folder)
    h = hashlib.sha256(str(dtype).encode())
    for path in [folder / "config.json"] + [tokenizer_folder / n for n in _TOKENIZER_FILES]:
        if path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise BadInput(f"{folder}: no .safetensors weights for the text encoder")
    for path in weights:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header_len = struct.unpack("<Q", f.read(8))[0]
            h.update(path.name.encode() + str(size).encode() + f.read(min(header_len, size)))
            f.seek(max(0, size - _FINGERPRINT_SAMPLE))
            h.update(f.read(_FINGERPRINT_SAMPLE))
    return h.hexdigest()


def _quiet_transformers() -> None:
    # weight-loading progress bars are noise in farm logs and Nuke's progress reader

    hf_logging.disable_progress_bar()


class TextEncoder:
    """Prompt -> (B, max_length, d_model) float32 embeddings, zero past each prompt's tokens; cached on disk.

    The model is loaded only on a cache miss, and `unload()` frees it once the prompts of a shot are encoded.
    `encoder_runs` counts forward passes (how a test proves a cache hit skipped the encoder).
    """

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 cache_dir: str | Path | None = None, max_length: int = 512):
        self.folder = Path(folder)
        config_path = self.folder / "config.json"
        if not config_path.is_file():
            raise BadInput(f"{self.folder}: not a text encoder folder (no config.json)")
        try:
            self.config = json.loads(config_path.read_text())
            self.d_model = int(self.config["d_model"])
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"{config_path}: not a text encoder config ({type(exc).__name__}: {exc})") from None
        self.tokenizer_folder = _find_tokenizer_folder(self.folder)
        self.device = torch.device(device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.max_length = int(max_length)
        self.encoder_runs = 0
        self._fingerprint: str | None = None
        self._model = None
        self._tokenizer = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = encoder_fingerprint(self.folder, self.tokenizer_folder, self.dtype)
        return self._fingerprint

    def _load(self) -> None:
        if self._model is not None:
            return

        _quiet_transformers()
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_folder, local_files_only=True)
            self._model = UMT5EncoderModel.from_pretrained(self.folder, local_files_only=True, use_safetensors=True,
                                                           dtype=self.dtype).to(self.device).eval()
        except (OSError, ValueError, TypeError, SafetensorError) as exc:  # damaged config, tokenizer or weights
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # the machine said no (permissions, full disk...): vera.cli maps it
            raise BadInput(f"{self.folder}: not a loadable text encoder ({str(exc).splitlines()[0][:200]})") from None

    def unload(self) -> None:
        """Free the encoder (the cache keeps what it produced)."""
        self._model = None
        self._tokenizer = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def cache_path(self, prompt: str) -> Path:
        key = hashlib.sha256(f"vera-prompt-cache-{CACHE_VERSION}\0{self.fingerprint}\0{prompt}".encode()).hexdigest()
        return self.cache_dir / f"{key}.safetensors"

    def _read_cache(self, prompt: str) -> torch.Tensor | None:
        path = self.cache_path(prompt)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("prompt") != prompt:
                    return None
                return f.get_tensor("embeddings")
        except (SafetensorError, OSError, KeyError):
            return None  # a damaged entry is re-encoded and rewritten

    def _write_cache(self, prompt: str, embeddings: torch.Tensor) -> None:
        try:
            with atomic_path(self.cache_path(prompt)) as tmp:
                save_file({"embeddings": embeddings.contiguous()}, tmp,
                          metadata={"prompt": prompt, "encoder": self.fingerprint,
                                    "cache_version": str(CACHE_VERSION)})
        except OSError as exc:  # a read-only or full cache costs time, not the render
            print(f"vera: warning: prompt cache {self.cache_dir} not written ({exc})", file=sys.stderr)

    @torch.no_grad()
    def _run_encoder(self, prompts: list[str]) -> list[torch.Tensor]:
        self._load()
        tokens = self._tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True,
                                 add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        ids, mask = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
        hidden = self._model(ids, attention_mask=mask).last_hidden_state.float().cpu()
        self.encoder_runs += 1
        lengths = mask.sum(dim=1).tolist()
        return [h[:n] for h, n in zip(hidden, lengths)]

    def encode(self, prompts: str | list[str]) -> torch.Tensor:
        """Embeddings (B, max_length, d_model) float32 on the CPU, for one prompt or a list."""
        prompts = [clean_prompt(p) for p in ([prompts] if isinstance(prompts, str) else prompts)]
        found = {p: self._read_cache(p) for p in dict.fromkeys(prompts)}
        missing = [p for p, e in found.items() if e is None]
        if missing:
            for prompt, emb in zip(missing, self._run_encoder(missing)):
                self._write_cache(prompt, emb)
                found[prompt] = emb
        out = torch.zeros(len(prompts), self.max_length, self.d_model)
        for i, prompt in enumerate(prompts):
            emb = found[prompt][: self.max_length]
            out[i, : emb.shape[0]] = emb
        return out

    def is_cached(self, prompt: str) -> bool:
        """Whether `encode(prompt)` would read the cache (and not load the encoder)."""
        return self._read_cache(clean_prompt(prompt)) is not None


def build_tiny_text_encoder(folder: str | Path, vocab_words, d_model: int = 32, num_layers: int = 2,
                            num_heads: int = 2, d_ff: int | None = None, seed: int = 0) -> Path:
    """Write a small random (seeded) UMT5 encoder and a word-level tokenizer to `folder`.

    The tokenizer lower-cases, splits on whitespace and punctuation, and maps each of `vocab_words` (plus common
    punctuation) to its own id; other words become <unk>. Returns the folder.
    """
    _quiet_transformers()
    folder = Path(folder)
    vocab: dict[str, int] = {}
    for word in (*SPECIAL_TOKENS, *PUNCTUATION, *(w.lower() for w in vocab_words)):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=512)
    config = UMT5Config(vocab_size=len(vocab), d_model=d_model, d_kv=d_model // num_heads,
                        d_ff=d_ff or 2 * d_model, num_layers=num_layers, num_heads=num_heads, dropout_rate=0.0,
                        relative_attention_num_buckets=8, relative_attention_max_distance=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UMT5EncoderModel(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder)
    return folder
