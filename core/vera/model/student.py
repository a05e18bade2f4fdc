"""A bundle's distilled few-step student (`vera-train distill`), which the `turbo` speed samples with.

    bundle.json   "student": {"path": "student.safetensors", "kind": "lora" | "full", "steps": 4,
                              "shift": 2.0, "teacher": {"steps": 50, "guidance": 5.0, ...}}

The student is the bundle's transformer with the distilled change: a LoRA file (vera.model.lora, merged at load,
the bundle stays small) or a whole transformer (vera.model.checkpoint format). It samples `steps` Euler steps on
Wan's grid with `shift` and no negative branch: the teacher's guidance is folded into its weights, one forward
per step. `load_bundle(..., student=True)` loads it in place of the teacher; a bundle without one refuses.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vera.errors import BadInput
from vera.model.checkpoint import load_vera
from vera.model.lora import apply_lora

STUDENT_FILE = "student.safetensors"
STUDENT_SAMPLER = "euler"  # what distillation trains the student's steps to be (vera.train.distill)
KINDS = ("lora", "full")


def no_student(folder) -> BadInput:
    return BadInput(f"{folder}: this bundle has no distilled student, which speed turbo needs; make one with "
                    "`vera-train distill` (docs/training.md) or choose another speed")


def student_path(folder: Path, entry: dict) -> Path:
    path = Path(entry["path"])
    path = path if path.is_absolute() else folder / path
    if not path.is_file():
        raise BadInput(f"{path}: the student weights named by {folder / 'bundle.json'} are missing")
    return path


def apply_student(transformer: torch.nn.Module, folder: Path, entry: dict) -> torch.nn.Module:
    """Turn the loaded teacher `transformer` into the student, in place: the LoRA merged, or the full weights."""
    path = student_path(folder, entry)
    if entry["kind"] == "lora":
        return apply_lora(transformer, path, 1.0)
    dtype = next(transformer.parameters()).dtype
    student = load_vera(path, device="cpu", dtype=dtype)
    if student.cfg != transformer.cfg:
        raise BadInput(f"{path}: the student's config differs from the bundle's")
    transformer.load_state_dict(student.state_dict())
    return transformer


def turbo_recipe(bundle) -> dict:
    """The sampler settings of the student's recipe: {sampler, steps, shift, guidance=1}."""
    entry = bundle.student
    if entry is None:
        raise no_student(bundle.path)
    if not bundle.student_loaded:
        raise ValueError(f"{bundle.path}: speed turbo needs the bundle loaded with student=True")
    return {"sampler": STUDENT_SAMPLER, "steps": int(entry["steps"]), "shift": float(entry["shift"]),
            "guidance": 1.0}
