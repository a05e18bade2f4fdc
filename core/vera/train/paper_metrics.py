"""The paper's content-preservation metrics (`vera-train eval --metrics paper`) on the public test-split format.

Each record (`input_path`, `mask_path`, `alpha_path`, `prompt`, `edit_type`; MP4s relative to the JSONL file) is
rendered through the same pipeline as a user's shot: the source MP4 is the plate, the prompt the instruction.
The composite (the generated layer over the source, vera.comp's over) is then compared with the source inside
the region the edit must not change (`keep_region`):

- `background_replace`: the preserved subject, `mask_path` > 0.5;
- `obj_add`: every pixel the reference edit leaves alone, `alpha_path` <= 1/255 (no element, no shadow).

PSNR (scikit-image, data range 1, over the region's pixels of all frames), SSIM (scikit-image's SSIM map,
Gaussian-free 7x7 window, averaged over the region) and LPIPS (the `lpips` package with AlexNet, only when
local weights are given: nothing is downloaded) in display-referred [0, 1] RGB; matte IoU against
`alpha_path` > 0.5 where it exists. Values are means over records, per task, in a table shaped like the
paper's. Where this may differ from the paper: the paper does not publish its region definition or
resolution; we measure at the source's resolution, on the bundle's first window of frames.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vera.comp import over
from vera.errors import BadInput
from vera.model.bundle import load_bundle
from vera.pipeline import render_frames
from vera.progress import Progress
from vera.shot import MaskSpec, ModelSpec, OutputSpec, PlateSpec, SamplerSpec, ShotSpec
from vera.train.data import read_jsonl, read_jsonl_sample
from vera.train.evaluate import matte_iou as iou, write_placement_masks

UNTOUCHED_ALPHA = 1.0 / 255.0
TASK_NAMES = {"background_change": "background change", "object_addition": "object addition"}


def keep_region(task: str, mask: np.ndarray | None, ref_alpha: np.ndarray | None) -> np.ndarray:
    """(F,H,W) bool: where the edit must leave the source as it is (see the module docstring)."""
    if task == "background_change":
        if mask is None:
            raise BadInput("background_replace record without mask_path: no region to measure")
        return mask > 0.5
    if ref_alpha is None:
        raise BadInput("obj_add record without alpha_path: no region to measure")
    return ref_alpha <= UNTOUCHED_ALPHA


def psnr(reference: np.ndarray, test: np.ndarray, region: np.ndarray) -> float:
    """PSNR in dB over the region's pixels (all channels), data range 1; inf for identical pixels."""
    if not region.any():
        return float("nan")
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(reference[region], test[region], data_range=1.0))


def ssim(reference: np.ndarray, test: np.ndarray, region: np.ndarray) -> float:
    """Mean of scikit-image's per-pixel SSIM map (channels averaged) over the region, frame by frame."""
    if not region.any():
        return float("nan")
    maps = [structural_similarity(ref, out, channel_axis=-1, data_range=1.0, full=True)[1].mean(axis=-1)
            for ref, out in zip(reference, test)]
    return float(np.stack(maps)[region].mean())


class Lpips:
    """LPIPS (AlexNet) from local weights: `folder` holds torchvision's `alexnet-owt-7be5be79.pth` and the lpips
    package's `alex.pth` (v0.1 linear layers). Both are state dicts, read with weights_only=True."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        try:
            import lpips
            import torch
            import torchvision
        except ImportError as exc:
            raise BadInput(f"LPIPS needs the lpips and torchvision packages ({exc})") from None
        backbone, linear = folder / "alexnet-owt-7be5be79.pth", folder / "alex.pth"
        for path in (backbone, linear):
            if not path.is_file():
                raise BadInput(f"{path}: LPIPS weights missing (see docs/training.md)")
        model = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
        alexnet = torchvision.models.alexnet()
        alexnet.load_state_dict(torch.load(backbone, map_location="cpu", weights_only=True))
        model.net.load_state_dict({k.replace("features.", "slice", 0): v for k, v in alexnet.state_dict().items()},
                                  strict=False)
        model.load_state_dict(torch.load(linear, map_location="cpu", weights_only=True), strict=False)
        self.model, self.torch = model.eval(), torch

    def __call__(self, reference: np.ndarray, test: np.ndarray, region: np.ndarray) -> float:
        """Mean LPIPS distance map over the region (inputs (F,H,W,3) in [0,1])."""
        torch = self.torch
        to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() * 2 - 1
        with torch.no_grad():
            distance = self.model(to(reference), to(test), spatial=True)[:, 0].numpy()
        return float(distance[region].mean())


def matte_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    return iou(pred, truth)


def evaluate_record(bundle, record, seed: int, steps: int | None, lpips_metric=None) -> dict:
    """Render one test record through the pipeline and measure it."""
    window = int(bundle.defaults["window"])
    clip = read_jsonl_sample(record, 0, window)
    frames_count = len(clip.source)
    frames_count -= (frames_count - 1) % 4  # the pipeline's windows are 4k+1 frames
    source = clip.source[:frames_count]
    mask = None if clip.mask is None else clip.mask[:frames_count]
    ref_alpha = None if clip.alpha is None else clip.alpha[:frames_count]
    region = keep_region(clip.task, mask, ref_alpha)
    frames = list(range(1, frames_count + 1))
    with tempfile.TemporaryDirectory(prefix="vera-paper-") as tmp:
        work = Path(tmp)
        mask_pattern = None
        if clip.task == "object_addition" and ref_alpha is not None:  # where to add: as the demo is trained
            mask_pattern = write_placement_masks(work / "mask", frames, ref_alpha, bundle)
        spec = _shot(record, clip, frames, bundle, work, mask_pattern)
        if steps is not None:
            spec.sampler.steps = int(steps)
        layers = render_frames(bundle, spec, frames, seed)
    opaque = lambda rgb: np.concatenate([rgb, np.ones(rgb.shape[:-1] + (1,), np.float32)], axis=-1)
    composite = np.stack([over(layers[f][0], opaque(source[i]))[..., :3] for i, f in enumerate(frames)])
    result = {"record": record.path, "task": clip.task, "prompt": clip.instruction, "frames": frames_count,
              "region_fraction": round(float(region.mean()), 4),
              "psnr": psnr(source, composite, region), "ssim": ssim(source, composite, region),
              "lpips": None if lpips_metric is None else lpips_metric(source, composite, region)}
    if ref_alpha is not None:
        result["iou"] = matte_iou(np.stack([layers[f][1] for f in frames]), ref_alpha)
    return result


def _shot(record, clip, frames, bundle, work: Path, mask_pattern):
    source = record.video_paths()["source"]
    return ShotSpec(name=Path(source).stem, task=clip.task, instruction=clip.instruction,
                    plate=PlateSpec(path=str(source), first=frames[0], last=frames[-1], colorspace="sRGB - Texture"),
                    output=OutputSpec(dir=str(work / "out")), model=ModelSpec(bundle=str(bundle.path)),
                    sampler=SamplerSpec(name=bundle.defaults["sampler"]),
                    mask=MaskSpec(path=str(mask_pattern)) if mask_pattern else None)


def summarise(records: list[dict]) -> dict:
    """Per task: record count and the mean of each metric (inf PSNRs stay inf: an exact region)."""
    table = {}
    for task in TASK_NAMES:
        rows = [r for r in records if r["task"] == task]
        if not rows:
            continue
        entry = {"records": len(rows)}
        for metric in ("psnr", "ssim", "lpips", "iou"):
            values = [r[metric] for r in rows if r.get(metric) is not None and not np.isnan(r[metric])]
            entry[metric] = None if not values else round(float(np.mean(values)), 4)
        table[task] = entry
    return table


def evaluate_paper(bundle: str, data: str | Path, limit: int | None = None, seed: int = 0,
                   steps: int | None = None, lpips_weights: str | Path | None = None, progress: str = "auto") -> dict:
    """The report for test records in `data` (a .jsonl file or a folder holding one)."""
    data = Path(data)
    files = [data] if data.suffix == ".jsonl" else sorted(data.glob("*.jsonl"))
    if not files:
        raise BadInput(f"{data}: no .jsonl test file")
    records = []
    for path in files:
        found, problems = read_jsonl(path)
        if problems:
            raise BadInput(f"{problems[0][0]}: {problems[0][1]}")
        records += [r for r in found if r.is_test]
    records = records[:limit] if limit else records
    if not records:
        raise BadInput(f"{data}: no test records (input_path, prompt, edit_type)")
    metric = Lpips(lpips_weights) if lpips_weights else None
    loaded = load_bundle(bundle, device="auto")
    results = []
    with Progress(len(records), "eval", progress) as bar:
        for record in records:
            results.append(evaluate_record(loaded, record, seed, steps, metric))
            bar.advance(1, f"psnr {results[-1]['psnr']:.1f}")
    notes = [] if metric else ["LPIPS skipped: no local weights given (--lpips-weights FOLDER); nothing is "
                               "downloaded"]
    return {"bundle": str(loaded.path), "data": str(data), "seed": seed, "metrics": "paper",
            "table": summarise(results), "records": results, "notes": notes}


def format_markdown(report: dict) -> str:
    """The table in the paper's shape (IS, a VLM judgement, is not computed here)."""
    fmt = lambda v, digits: "n/a" if v is None else ("inf" if v == float("inf") else f"{v:.{digits}f}")
    lines = ["| task | method | PSNR | SSIM | LPIPS | IS | matte IoU | records |", "|---|---|---|---|---|---|---|---|"]
    for task, row in report["table"].items():
        lines.append(f"| {TASK_NAMES[task]} | {report['bundle']} | {fmt(row['psnr'], 1)} | {fmt(row['ssim'], 3)} | "
                     f"{fmt(row['lpips'], 3)} | n/a | {fmt(row['iou'], 3)} | {row['records']} |")
    return "\n".join(lines + [f"\n{note}" for note in report["notes"]])


def to_json(report: dict) -> str:
    """JSON with inf/nan as strings (JSON has no such numbers)."""
    def clean(value):
        if isinstance(value, float) and not np.isfinite(value):
            return str(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(report), indent=2) + "\n"
