"""Copy a trained demo bundle into a warm start for further training on today's synthetic grammar.

Usage: python scripts/demo_warm_start.py FROM_BUNDLE TO_FOLDER   (scripts/train_demo.sh, docs/demo-model.md)

The transformer is copied as it is. The tiny text encoder is random and frozen, but the transformer learned
its word embeddings, so the new encoder keeps every known word's embedding row (found by the word, not by its
id, which moves when the sorted vocabulary grows) and all other weights; a new word starts from the row of
the word it is a synonym of (SYNONYMS) or from its own seeded random row.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from vera.model.text import build_tiny_text_encoder
from vera.train.synth import vocabulary

SYNONYMS = {"square": "box"}  # a box is drawn as a square (vera.train.synth._shape_distance)


def token_ids(text_encoder: Path) -> dict[str, int]:
    return json.loads((text_encoder / "tokenizer.json").read_text())["model"]["vocab"]


def warm_start(source: Path, target: Path) -> list[str]:
    """Write the warm-start bundle; returns the words that were new to the source's encoder."""
    shutil.copytree(source, target)
    old_folder, new_folder = source / "text_encoder", target / "text_encoder"
    config = json.loads((old_folder / "config.json").read_text())
    shutil.rmtree(new_folder)
    build_tiny_text_encoder(new_folder, vocabulary(), d_model=config["d_model"], num_layers=config["num_layers"],
                            num_heads=config["num_heads"], d_ff=config["d_ff"])
    old_ids, new_ids = token_ids(old_folder), token_ids(new_folder)
    old_weights = load_file(old_folder / "model.safetensors")
    weights = load_file(new_folder / "model.safetensors")
    added = sorted(set(new_ids) - set(old_ids))
    for name, tensor in weights.items():
        old = old_weights[name]
        if tensor.shape == old.shape:
            weights[name] = old.clone()
            continue
        # an embedding table: rows follow the token ids
        for word, new_id in new_ids.items():
            source_word = word if word in old_ids else SYNONYMS.get(word)
            if source_word in old_ids:
                tensor[new_id] = old[old_ids[source_word]]
    save_file(weights, new_folder / "model.safetensors")
    return added


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.splitlines()[2])
    new_words = warm_start(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"warm start in {sys.argv[2]}; new words: {', '.join(new_words) or 'none'}")
