"""Between plate resolution and model resolution.

`Fit` places the plate inside the model frame with its aspect kept (letterbox / pillarbox padding recorded,
so it can be undone). `rebuild_layer` turns the model's edit RGB and alpha back into a full-resolution,
premultiplied layer:

1. crop the padding away, resample the edit RGB to plate size (bicubic, limited per pixel to the range of the
   2x2 model pixels around it, so the resampler's overshoot adds no colour the model did not make);
2. upsample the matte edge-aware with the full-resolution plate as guide: the fast guided filter
   (He & Sun 2015, after He, Sun & Tang 2010): the local linear model alpha ~ A . I + b is fitted at model
   resolution against the downsampled plate, A and b are smooth, so they are upsampled bilinearly and applied
   to the full-resolution plate I: edges land where the plate's edges are, not on the model's pixel grid;
3. clip to [0, 1], multiply by the garbage matte, and set alpha below `threshold` to exactly 0;
4. premultiply; RGB is exactly 0 wherever alpha is 0 (so edit-over-plate leaves those pixels bit for bit).

Speed (4096x2160 is the target): the coefficients are exactly 0 wherever the model's matte is 0 around a
pixel, so the full-resolution work (guide, coefficients, RGB resampling, premultiplication) runs only over
the rectangle where the layer can be non-zero; the rest of the frame is exactly 0 without being computed.
Resampling is torch (`interpolate` when shrinking, `grid_sample` over that rectangle when enlarging, same
pixel-centre convention); the box means are `avg_pool2d` normalised at the borders. benchmarks/io_bench.py
measures it (docs/performance.md).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch

DEFAULT_THRESHOLD = 1.0 / 255.0
GUIDE_RADIUS = 2          # box radius of the guided filter, in model pixels
GUIDE_EPS = 1e-3          # regularisation: larger -> smoother matte, less edge snapping (guide is in [0, 1])


def resize(image: np.ndarray, width: int, height: int, mode: str = "bilinear") -> np.ndarray:
    """Resample (h, w) or (h, w, C) float32 to (height, width[, C]); antialiased when shrinking."""
    squeeze = image.ndim == 2
    src = image[..., None] if squeeze else image
    if src.shape[:2] == (height, width):
        return np.asarray(image, dtype=np.float32)
    shrinking = height < src.shape[0] or width < src.shape[1]
    tensor = torch.from_numpy(np.ascontiguousarray(src, dtype=np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        out = torch.nn.functional.interpolate(tensor, size=(height, width), mode=mode, align_corners=False,
                                              antialias=shrinking and mode in ("bilinear", "bicubic"))
    out = out[0].permute(1, 2, 0).contiguous().numpy()
    return out[..., 0] if squeeze else out


@dataclass(frozen=True)
class Fit:
    """The plate scaled (aspect kept) into the model frame, centred; the rest is padding."""

    plate_w: int
    plate_h: int
    model_w: int
    model_h: int
    content_w: int
    content_h: int
    pad_left: int
    pad_top: int

    @classmethod
    def compute(cls, plate_w: int, plate_h: int, model_w: int, model_h: int) -> "Fit":
        if min(plate_w, plate_h, model_w, model_h) <= 0:
            raise ValueError("sizes must be positive")
        scale = min(model_w / plate_w, model_h / plate_h)
        content_w = min(model_w, max(1, round(plate_w * scale)))
        content_h = min(model_h, max(1, round(plate_h * scale)))
        return cls(plate_w, plate_h, model_w, model_h, content_w, content_h,
                   (model_w - content_w) // 2, (model_h - content_h) // 2)

    @property
    def pad_right(self) -> int:
        return self.model_w - self.content_w - self.pad_left

    @property
    def pad_bottom(self) -> int:
        return self.model_h - self.content_h - self.pad_top

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Fit":
        return cls(**{k: int(d[k]) for k in cls.__dataclass_fields__})

    def to_model(self, image: np.ndarray, pad_value: float = 0.0) -> np.ndarray:
        """Plate-size (H, W[, C]) -> model-size: resampled into the content box, padding filled with `pad_value`."""
        self._check(image, self.plate_w, self.plate_h, "plate")
        small = resize(image, self.content_w, self.content_h)
        out = np.full((self.model_h, self.model_w) + image.shape[2:], pad_value, dtype=np.float32)
        out[self.pad_top:self.pad_top + self.content_h, self.pad_left:self.pad_left + self.content_w] = small
        return out

    def crop(self, image: np.ndarray) -> np.ndarray:
        """Model-size -> the content box (padding removed), still at model resolution."""
        self._check(image, self.model_w, self.model_h, "model")
        return image[self.pad_top:self.pad_top + self.content_h, self.pad_left:self.pad_left + self.content_w]

    def to_plate(self, image: np.ndarray, mode: str = "bicubic") -> np.ndarray:
        """Model-size -> plate-size: padding removed, content resampled to the plate's size."""
        return resize(self.crop(image), self.plate_w, self.plate_h, mode=mode)

    @staticmethod
    def _check(image, w, h, what):
        if image.shape[:2] != (h, w):
            raise ValueError(f"expected a {what}-size image of {w}x{h}, got {image.shape[1]}x{image.shape[0]}")


# ----------------------------------------------------------------------------------------------- guided filter

def box_mean(x, r: int):
    """Mean over a (2r+1)^2 box, normalised by the pixels inside the image at the borders (the guided filter's
    box). torch (C, h, w) or (h, w) in, same shape out."""
    t = torch.as_tensor(x)
    batch = t[None] if t.ndim == 3 else t[None, None]
    out = torch.nn.functional.avg_pool2d(batch, 2 * r + 1, stride=1, padding=r, count_include_pad=False)
    return out[0] if t.ndim == 3 else out[0, 0]


def guided_coefficients(guide, p, r: int = GUIDE_RADIUS, eps: float = GUIDE_EPS):
    """Colour guided filter (He et al.) coefficients for guide (3, h, w) and input p (h, w): box-averaged
    A (3, h, w) and b (h, w), so the filtered p is sum_c A_c * I_c + b."""
    guide = torch.as_tensor(guide, dtype=torch.float32)
    p = torch.as_tensor(p, dtype=torch.float32)
    mean_i = box_mean(guide, r)
    mean_p = box_mean(p, r)
    cov_ip = (box_mean(guide * p, r) - mean_i * mean_p).double()
    # The guide's per-pixel 3x3 covariance (symmetric: six planes), + eps on the diagonal, inverted in closed
    # form by cofactors in float64 (a batched LAPACK solve is ~20x slower for 3x3 systems).
    pairs = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
    second = box_mean(torch.stack([guide[i] * guide[j] for i, j in pairs]), r).double()
    mi = mean_i.double()
    rr, rg, rb, gg, gb, bb = (second[k] - mi[i] * mi[j] for k, (i, j) in enumerate(pairs))
    rr, gg, bb = rr + eps, gg + eps, bb + eps
    c_rr, c_rg, c_rb = gg * bb - gb * gb, rb * gb - rg * bb, rg * gb - rb * gg
    c_gg, c_gb, c_bb = rr * bb - rb * rb, rg * rb - rr * gb, rr * gg - rg * rg
    det = rr * c_rr + rg * c_rg + rb * c_rb
    cr, cg, cb = cov_ip
    a = torch.stack([c_rr * cr + c_rg * cg + c_rb * cb,
                     c_rg * cr + c_gg * cg + c_gb * cb,
                     c_rb * cr + c_gb * cg + c_bb * cb]) / det
    a = a.float()
    b = mean_p - (a * mean_i).sum(0)
    return box_mean(a, r), box_mean(b, r)


def guide_image(plate_rgb):
    """The plate as a planar (3, H, W) torch guide in [0, 1): negatives cut, superwhites compressed
    (x / (1 + x)), so scene-linear and display-referred plates give edges of comparable strength for one eps.
    Takes (H, W, >=3) numpy/torch (any strides)."""
    x = torch.as_tensor(plate_rgb)[..., :3]
    g = torch.empty((3,) + tuple(x.shape[:2]), dtype=torch.float32)
    torch.clamp(x.permute(2, 0, 1), min=0.0, out=g)
    return torch.div(g, g + 1.0, out=g)


@contextmanager
def _torch_threads(n: int):
    """Run a block on n intra-op threads. The model-resolution work is many small ops; on a busy machine,
    waking a second thread for each costs more than the op itself."""
    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if old != n:
            torch.set_num_threads(old)


def _sampling_rows(support_lo: int, support_hi: int, n_low: int, n_full: int) -> tuple[int, int]:
    """[start, stop) of the full-resolution rows whose bilinear sample (align_corners=False) reads any
    low-resolution row in [support_lo, support_hi]: outside them the upsampled value is exactly 0."""
    src = np.maximum((np.arange(n_full) + 0.5) * (n_low / n_full) - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_low - 1)
    hit = np.flatnonzero((i1 >= support_lo) & (i0 <= support_hi))
    return int(hit[0]), int(hit[-1]) + 1


def _sample(low, full_h: int, full_w: int, roi, mode: str):
    """`low` (C, h, w) resampled to the full-resolution grid (full_h, full_w), only over `roi`
    (y0, y1, x0, x1): the same pixel-centre mapping as interpolate(align_corners=False), evaluated by
    grid_sample so that a sub-rectangle costs only its own pixels."""
    y0, y1, x0, x1 = roi
    ys = (torch.arange(y0, y1, dtype=torch.float32) * 2 + 1) / full_h - 1
    xs = (torch.arange(x0, x1, dtype=torch.float32) * 2 + 1) / full_w - 1
    grid = torch.empty((1, y1 - y0, x1 - x0, 2), dtype=torch.float32)
    grid[..., 0] = xs[None, :]
    grid[..., 1] = ys[:, None]
    return torch.nn.functional.grid_sample(low[None], grid, mode=mode, padding_mode="border",
                                           align_corners=False)[0]


_STRIP_ROWS = 32  # the limit runs in strips of rows on one thread, so its bounds stay in cache


def _sample_without_overshoot(low, full_h: int, full_w: int, roi):
    """Bicubic resampling of `low` (C, h, w) over roi, limited per pixel to the range of the 2x2 source pixels
    around its sample point (the footprint bilinear interpolation reads; same pixel-centre mapping as
    `_sample`, the border repeating as padding_mode="border" does).

    Bicubic's negative lobes overshoot at edges (values below the darkest or above the brightest neighbour,
    e.g. negative colour next to black); the limit removes what the resampler invented and keeps every value
    the source holds (scene-linear values above 1 included).
    """
    def first_taps(start, stop, n_low, n_full):
        src = np.clip((np.arange(start, stop) + 0.5) * (n_low / n_full) - 0.5, 0.0, n_low - 1)
        return torch.from_numpy(np.floor(src).astype(np.int64))

    out = _sample(low, full_h, full_w, roi, "bicubic")
    # Min and max of each 2x2 block at low resolution (last row/column repeated), then one lookup per pixel.
    padded = torch.nn.functional.pad(low[None], (0, 1, 0, 1), mode="replicate")[0]
    corners = (padded[:, :-1, :-1], padded[:, 1:, :-1], padded[:, :-1, 1:], padded[:, 1:, 1:])
    bounds = torch.cat([torch.minimum(torch.minimum(corners[0], corners[1]), torch.minimum(corners[2], corners[3])),
                        torch.maximum(torch.maximum(corners[0], corners[1]), torch.maximum(corners[2], corners[3]))])
    y0, y1, x0, x1 = roi
    rows = first_taps(y0, y1, low.shape[1], full_h)
    cols = first_taps(x0, x1, low.shape[2], full_w)
    c = len(low)
    with _torch_threads(1):  # memory-bound small steps: a second thread costs more than it gives
        for top in range(0, y1 - y0, _STRIP_ROWS):
            strip = bounds[:, rows[top:top + _STRIP_ROWS]][:, :, cols]
            part = out[:, top:top + _STRIP_ROWS]
            torch.clamp(part, min=strip[:c], max=strip[c:], out=part)
    return out


def _matte_in_roi(alpha_content, plate_rgb, r: int, eps: float):
    """(alpha over roi, roi) at plate resolution; roi = (y0, y1, x0, x1) bounds everything that can be non-zero
    (the guided filter's coefficients are exactly 0 where the model's matte is 0 around a pixel), or None."""
    H, W = plate_rgb.shape[:2]
    h, w = alpha_content.shape
    plate = torch.as_tensor(plate_rgb)[..., :3]
    # Model-resolution guide: the plate shrunk (antialiased), then compressed like the full-resolution one.
    small = torch.nn.functional.interpolate(plate.permute(2, 0, 1)[None], size=(h, w),
                                            mode="bilinear", align_corners=False, antialias=True)[0]
    with _torch_threads(1):
        a, b = guided_coefficients(guide_image(small.permute(1, 2, 0)),
                                   torch.as_tensor(np.asarray(alpha_content, dtype=np.float32)), r, eps)
        coeffs = torch.cat([a, b[None]])
        support = (coeffs != 0).any(0)
        rows, cols = torch.nonzero(support.any(1)).flatten(), torch.nonzero(support.any(0)).flatten()
    if len(rows) == 0:
        return None, None
    roi = (*_sampling_rows(int(rows[0]), int(rows[-1]), h, H), *_sampling_rows(int(cols[0]), int(cols[-1]), w, W))
    y0, y1, x0, x1 = roi
    c = _sample(coeffs, H, W, roi, "bilinear")
    guide = guide_image(plate[y0:y1, x0:x1])
    q = c[3]
    for k in range(3):
        q.addcmul_(c[k], guide[k])
    return q, roi


def upsample_matte(alpha_content: np.ndarray, plate_rgb: np.ndarray, r: int = GUIDE_RADIUS,
                   eps: float = GUIDE_EPS) -> np.ndarray:
    """Alpha at model resolution (content box only) -> (H, W) float32 at plate resolution, edges following
    the plate (fast guided filter; not yet clipped or thresholded)."""
    H, W = plate_rgb.shape[:2]
    out = np.zeros((H, W), np.float32)
    with torch.no_grad():
        q, roi = _matte_in_roi(alpha_content, plate_rgb, r, eps)
    if roi is not None:
        out[roi[0]:roi[1], roi[2]:roi[3]] = q.numpy()
    return out


# ----------------------------------------------------------------------------------------------- the layer

def finish_matte(alpha: np.ndarray, threshold: float = DEFAULT_THRESHOLD, garbage: np.ndarray | None = None):
    """Clip to [0, 1], multiply by the garbage matte, and zero everything below `threshold` (exactly 0). In place."""
    t = torch.from_numpy(alpha)
    t.clamp_(0.0, 1.0)
    if garbage is not None:
        if garbage.shape != alpha.shape:
            raise ValueError(f"garbage matte is {garbage.shape}, the layer is {alpha.shape}")
        t.mul_(torch.from_numpy(np.asarray(garbage, dtype=np.float32)).clamp(0.0, 1.0))
    t.masked_fill_(~(t >= threshold), 0.0)  # the negation also catches NaN
    return alpha


def _premultiply_into(planes, rgb, alpha) -> None:
    """planes (4, h, w) <- rgb (3, h, w) * alpha, alpha; RGB exactly +0 where alpha is 0 (rgb must be finite)."""
    torch.mul(rgb, alpha, out=planes[:3])
    planes[3] = alpha
    # rgb * 0 is 0 for finite rgb, but -0.0 for negative rgb; adding +0.0 turns -0.0 into +0.0 (IEEE 754)
    # and leaves every other value alone: one pass instead of a masked fill.
    planes[:3].add_(0.0)


def premultiply(rgb, alpha: np.ndarray) -> np.ndarray:
    """(H, W, 4) float32: rgb * alpha and alpha, with RGB exactly +0 where alpha is 0 (even if rgb is inf/NaN).
    `rgb` may be (H, W, 3) or planar (3, H, W). The result is a planar array seen as (H, W, 4) (each channel
    is contiguous), which is what the EXR writer wants, so no interleaving pass is spent."""
    h, w = alpha.shape
    planes = torch.empty((4, h, w), dtype=torch.float32)
    src = torch.as_tensor(rgb)
    src = src if src.shape == (3, h, w) else src[..., :3].permute(2, 0, 1)
    _premultiply_into(planes, torch.nan_to_num(src, nan=0.0, posinf=0.0, neginf=0.0),
                      torch.from_numpy(np.asarray(alpha, dtype=np.float32)))
    return planes.numpy().transpose(1, 2, 0)


def rebuild_layer(edit_rgb_model: np.ndarray, alpha_model: np.ndarray, plate_rgb_full: np.ndarray, fit: Fit,
                  threshold: float = DEFAULT_THRESHOLD, garbage: np.ndarray | None = None) -> np.ndarray:
    """The model's output at model resolution -> (H, W, 4) premultiplied float32 at plate resolution.

    edit_rgb_model: (model_h, model_w, 3) unpremultiplied edit RGB, already in the plate's colour space
                    (`vera.colour.from_model`), padding included.
    alpha_model:    (model_h, model_w) matte in [0, 1], padding included.
    plate_rgb_full: (H, W, >=3) the plate frame over its display window, in its own colour space: the guide.
    garbage:        optional (H, W) user mask in [0, 1]: alpha is multiplied by it.
    """
    if plate_rgb_full.shape[:2] != (fit.plate_h, fit.plate_w):
        raise ValueError(f"plate is {plate_rgb_full.shape[1]}x{plate_rgb_full.shape[0]}, "
                         f"fit expects {fit.plate_w}x{fit.plate_h}")
    if garbage is not None and garbage.shape != (fit.plate_h, fit.plate_w):
        raise ValueError(f"garbage matte is {garbage.shape}, the plate is {(fit.plate_h, fit.plate_w)}")

    H, W = fit.plate_h, fit.plate_w
    # np.zeros maps zero pages lazily: the untouched part of the frame costs no memory traffic until written.
    planes = torch.from_numpy(np.zeros((4, H, W), dtype=np.float32))
    # Non-finite model output would survive premultiplication where alpha > 0: clean it at model size (cheap).
    edit = np.nan_to_num(fit.crop(np.asarray(edit_rgb_model, dtype=np.float32)[..., :3]), nan=0.0, posinf=0.0,
                         neginf=0.0)
    alpha_small = np.nan_to_num(fit.crop(np.asarray(alpha_model, dtype=np.float32)), nan=0.0)
    with torch.no_grad():
        q, roi = _matte_in_roi(alpha_small, np.asarray(plate_rgb_full, dtype=np.float32), GUIDE_RADIUS, GUIDE_EPS)
        if roi is not None:  # everything outside roi stays exactly 0
            y0, y1, x0, x1 = roi
            alpha = finish_matte(q.numpy(), threshold, None if garbage is None else garbage[y0:y1, x0:x1])
            rgb = _sample_without_overshoot(torch.from_numpy(np.ascontiguousarray(edit.transpose(2, 0, 1))), H, W,
                                            roi)
            _premultiply_into(planes[:, y0:y1, x0:x1], rgb, q)  # q is alpha (finished in place); rgb is finite
    return planes.numpy().transpose(1, 2, 0)


def cross_fade(terms, threshold: float) -> np.ndarray:
    """One frame's premultiplied RGBA (H, W, 4) float32 from its windows' layers, `terms` = [(weight, rgba)].

    The weighted sum fades one window's alpha towards the other's, so a pixel one window drew faintly can end
    below the threshold: the threshold (vera.rebuild.finish_matte) is applied again, and colour is cleared
    wherever alpha is now 0. The garbage matte needs no second pass: each window's alpha is already at most
    the garbage matte, and so is their weighted mean (weights are >= 0 and sum to 1).
    """
    blended = None
    for weight, rgba in terms:
        term = np.float32(weight) * np.asarray(rgba, dtype=np.float32)
        blended = term if blended is None else blended + term
    alpha = np.ascontiguousarray(blended[..., 3])
    finish_matte(alpha, threshold)
    blended[..., 3] = alpha
    blended[alpha == 0] = 0.0
    return blended
