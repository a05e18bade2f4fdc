"""`vera-train distill` and speed turbo: the distillation target, the student in a bundle, resume, two processes
against one, and the refusal of a bundle without a student."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train_ranks
from bundles import base_spec, random_bundle, write_plates, write_spec
from vera.cli import main as vera_render
from vera.errors import BadInput
from vera.model.bundle import load_bundle
from vera.model.lora import add_lora
from vera.model.student import STUDENT_FILE
from vera.sampling import sample
from vera.stepcache import layer_count
from vera.train.distill import DistillConfig, Recipe, distill, distill_loss, export_student, adapters_off
from vera.train.checkpoints import list_checkpoints
from vera.train.synth import vocabulary

TINY = {"student_steps": 2, "teacher_steps": 4, "guidance": 4.0, "frames": 5, "steps": 4, "global_batch": 2,
        "lora": {"rank": 4, "alpha": 4}, "lr": 5e-3, "warmup": 1, "log_every": 1, "checkpoint_every": 2,
        "keep_checkpoints": 3, "mask": "placement"}
# One and two processes sum the batch's gradients in a different order (float32; see test_fit_sharded). Almost
# every weight agrees to 1e-5; AdamW turns a near-zero gradient element whose rounding differs into a step of up
# to lr, so a few elements differ more: measured 2 of 1024 elements of a weight at 1.5e-5 to 5.7e-5 (lr 5e-3,
# 4 steps, up to 8e-4 in one element). The bound: at most 0.5% of all elements beyond 1e-5 (a different data
# split or noise would move nearly all of them), none by more than one AdamW step (lr).
ATOL, OUTLIERS = 1e-5, 0.005


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return random_bundle(tmp_path_factory.mktemp("teacher") / "bundle", config="vera-tiny", resolution=(32, 32),
                         window=5, patch=8, vocab_words=vocabulary())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from vera.train.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, 4, seed=3, size=(32, 32), frames=5)
    return root


@pytest.fixture(scope="module")
def lora_run(teacher, dataset, tmp_path_factory):
    """TINY's LoRA student distilled straight through (4 steps): its summary and run folder."""
    out = tmp_path_factory.mktemp("lora") / "run"
    return distill(config(teacher), dataset, out, device="cpu", progress="none"), out


def config(teacher, **change) -> DistillConfig:
    return DistillConfig.from_dict({**TINY, "bundle": str(teacher), **change})


def student_tensors(bundle: Path) -> dict:
    return load_file(str(bundle / STUDENT_FILE))


def assert_close(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=lambda m, key=key: f"{key}: {m}")


def assert_equal_but_rounding(a: dict, b: dict, lr: float) -> None:
    assert a.keys() == b.keys() and a
    difference = torch.cat([(a[key] - b[key]).abs().flatten() for key in a])
    assert float((difference > ATOL).float().mean()) <= OUTLIERS
    assert float(difference.max()) <= lr


def tiny_inputs(model, batch: int = 2):
    cfg = model.cfg
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(batch, cfg.in_dim - cfg.z_dim, 2, 4, 4, generator=g)
    context = torch.randn(batch, cfg.text_len, cfg.text_dim, generator=g)
    noise = torch.randn(batch, 3, cfg.z_dim, 2, 4, 4, generator=g)
    return cond, context, torch.zeros_like(context), noise


def test_target_is_the_teachers_guided_solution(teacher):
    """A LoRA student starts as its teacher (adapters are zero): asked for the teacher's own single unguided
    step its loss is 0 (to the rounding of (x + ds v - x) / ds); with guidance or more teacher sub-steps the target moves away from it."""
    model = load_bundle(teacher, device="cpu").transformer.float()
    add_lora(model, rank=2)
    cond, context, negative, noise = tiny_inputs(model)
    off = torch.autocast("cpu", enabled=False)
    weights = {"edit": 1.0, "alpha": 1.0, "composite": 1.0}

    def loss(steps: int, guidance: float, segment: int) -> float:
        cfg = DistillConfig(bundle=str(teacher), student_steps=2, teacher_steps=steps, guidance=guidance)
        recipe = Recipe.of(cfg, {"shift": 3.0, "guidance": guidance, "negative_prompt": ""})
        total, _ = distill_loss(model, lambda: adapters_off(model), cond, context, negative, noise, segment,
                                recipe, weights, lambda: off)
        return float(total.detach())

    assert loss(2, 1.0, 0) < 1e-12 and loss(2, 1.0, 1) < 1e-12
    assert loss(2, 4.0, 1) > 1e-6    # guidance folded in: the target is the guided velocity
    assert loss(8, 1.0, 0) > 1e-6    # four teacher sub-steps do not land where one student step does


@pytest.mark.slow
def test_distill_writes_a_student_that_turbo_samples_in_one_forward_per_step(lora_run):
    summary, run = lora_run
    bundle = Path(summary["bundle"])
    entry = json.loads((bundle / "bundle.json").read_text())["student"]
    assert entry["kind"] == "lora" and entry["steps"] == 2 and entry["teacher"]["guidance"] == 4.0
    losses = [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 4

    student = load_bundle(bundle, device="cpu", student=True)
    base = load_bundle(bundle, device="cpu")
    changed = [k for k, v in student.transformer.state_dict().items()
               if not torch.equal(v, base.transformer.state_dict()[k])]
    assert changed and all(k.startswith("blocks.") for k in changed)  # the adapted layers, merged

    cond, context, negative, _ = tiny_inputs(student.transformer, batch=1)
    count = layer_count(student.transformer)
    sample(student.transformer, cond, context, None, steps=2, guidance=1.0, shift=3.0, sampler="euler")
    assert count.full == 2 * student.config.num_layers  # 2 steps x 1 row: no negative branch


def test_resumed_run_equals_the_straight_run(lora_run, teacher, dataset, tmp_path):
    straight, _ = lora_run
    distill(config(teacher), dataset, tmp_path / "resumed", device="cpu", progress="none", max_steps=2)
    resumed = distill(config(teacher), dataset, tmp_path / "resumed", device="cpu", progress="none")
    assert resumed["steps"] == 4 and resumed["steps_this_run"] == 2
    assert_close(student_tensors(Path(resumed["bundle"])), student_tensors(Path(straight["bundle"])))


def test_full_student_and_export_from_a_checkpoint(teacher, dataset, tmp_path):
    summary = distill(config(teacher, lora=None, steps=2), dataset, tmp_path / "run", device="cpu",
                      progress="none")
    entry = json.loads((Path(summary["bundle"]) / "bundle.json").read_text())["student"]
    assert entry["kind"] == "full"
    exported = export_student(list_checkpoints(tmp_path / "run")[-1], tmp_path / "exported")
    assert_close(student_tensors(exported), student_tensors(Path(summary["bundle"])))
    student = load_bundle(exported, device="cpu", student=True).transformer.state_dict()
    assert any(not torch.equal(v, load_bundle(teacher, device="cpu").transformer.state_dict()[k])
               for k, v in student.items())


@pytest.fixture(scope="module")
def two_process_distills(teacher, dataset, tmp_path_factory):
    """TINY's full student (no LoRA) distilled on 2 gloo processes with each `parallel`, one after another in one
    torchrun launch (tests/train_ranks.py): {parallel: (its config, its run folder)}."""
    folder = tmp_path_factory.mktemp("two")
    runs, jobs = {}, []
    for parallel in ("fsdp", "ddp"):
        cfg = {**TINY, "bundle": str(teacher), "parallel": parallel, "lora": None}
        path = folder / f"{parallel}.json"
        path.write_text(json.dumps(cfg))
        runs[parallel] = (cfg, folder / parallel)
        jobs.append({"argv": ["distill", "--config", str(path), "--data", str(dataset), "--out",
                              str(folder / parallel), "--progress", "none"]})
    train_ranks.launch(jobs, folder)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["fsdp", "ddp"])
def test_two_processes_equal_one(two_process_distills, dataset, tmp_path, parallel):
    """torchrun, 2 gloo processes, each half of the global batch (FSDP2-sharded or DDP) = one process; the
    sharded checkpoint of step 2 resumes on one process to the same student. A full student (its frozen teacher
    sharded too): a fresh LoRA's down-projections get exactly zero gradient on the first step and near-zero ones
    next, which AdamW scales up to lr-sized steps, so their float32 summation order shows at 1e-3; the LoRA
    student's exactness is the resume test's."""
    cfg, two = two_process_distills[parallel]
    one = distill(DistillConfig.from_dict(cfg), dataset, tmp_path / "one", device="cpu", progress="none")
    assert_equal_but_rounding(student_tensors(two / "bundle"), student_tensors(Path(one["bundle"])), cfg["lr"])
    if parallel == "fsdp":
        checkpoint = list_checkpoints(two)[0]
        assert checkpoint.is_dir() and checkpoint.name == "step_00000002"
        resumed = tmp_path / "resumed"
        (resumed / "checkpoints").mkdir(parents=True)
        shutil.copytree(checkpoint, resumed / "checkpoints" / checkpoint.name)
        summary = distill(DistillConfig.from_dict(cfg), dataset, resumed, device="cpu", progress="none")
        assert summary["steps_this_run"] == 2
        assert_equal_but_rounding(student_tensors(resumed / "bundle"), student_tensors(Path(one["bundle"])),
                                  cfg["lr"])


def test_turbo_without_a_student_is_refused(teacher, tmp_path, capsys):
    with pytest.raises(BadInput, match="vera-train distill"):
        load_bundle(teacher, device="cpu", student=True)
    shot = tmp_path / "shot"
    write_plates(shot)
    spec = write_spec(shot, {**base_spec(teacher), "speed": "turbo"})
    code = vera_render(["run", str(spec), "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "vera-train distill" in err and str(teacher) in err


def test_turbo_renders_with_the_students_recipe(teacher, dataset, tmp_path):
    """`--speed turbo` on a bundle with a student: the student's steps, one forward each, whatever the spec's
    sampler asks for."""
    summary = distill(config(teacher, steps=1), dataset, tmp_path / "run", device="cpu", progress="none")
    shot = tmp_path / "shot"
    write_plates(shot)
    spec = write_spec(shot, {**base_spec(summary["bundle"]), "sampler": {"name": "unipc", "steps": 9,
                                                                         "guidance": 6.0}})
    assert vera_render(["run", str(spec), "--speed", "turbo", "--progress", "none"]) == 0
    manifest = json.loads((shot / "out" / "manifest.json").read_text())
    text = json.dumps(manifest)
    assert '"speed": "turbo"' in text and '"steps": 2' in text
