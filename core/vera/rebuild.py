"""Between plate resolution and model resolution.

`Fit` places the plate inside the model frame with its aspect kept (letterbox / pillarbox padding recorded,
so it can be undone). `rebuild_layer` turns the model's edit RGB and alpha back into a full-resolution,
premultiplied layer:

1. crop the padding away, resample the edit RGB to plate size (bicubic);
2. upsample the matte edge-aware with the full-resolution plate as guide: the fast guided filter
   (He & Sun 2015, after He, Sun & Tang 2010): the local linear model alpha ~ A . I + b is fitted at model
   resolution against the downsampled plate, A and b are smooth, so they are upsampled bilinearly and applied
   to the full-resolution plate I: edges land where the plate's edges are, not on the model's pixel grid;
3. clip to [0, 1], multiply by the garbage matte, and set alpha below `threshold` to exactly 0;
4. premultiply; RGB is exactly 0 wherever alpha is 0 (so edit-over-plate leaves those pixels bit for bit).

Resampling and the box means use torch (multi-threaded; the box is avg_pool2d normalised at the borders).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_THRESHOLD = 1.0 / 255.0
GUIDE_RADIUS = 2          # box radius of the guided filter, in model pixels
GUIDE_EPS = 1e-3          # regularisation: larger -> smoother matte, less edge snapping (guide is in [0, 1])


def resize(image: np.ndarray, width: int, height: int, mode: str = "bilinear") -> np.ndarray:
    """Resample (h, w) or (h, w, C) float32 to (height, width[, C]); antialiased when shrinking."""
    import torch

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
    import torch

    t = torch.as_tensor(x)
    batch = t[None] if t.ndim == 3 else t[None, None]
    out = torch.nn.functional.avg_pool2d(batch, 2 * r + 1, stride=1, padding=r, count_include_pad=False)
    return out[0] if t.ndim == 3 else out[0, 0]


def guided_coefficients(guide, p, r: int = GUIDE_RADIUS, eps: float = GUIDE_EPS):
    """Colour guided filter (He et al.) coefficients for guide (3, h, w) and input p (h, w): box-averaged
    A (3, h, w) and b (h, w), so the filtered p is sum_c A_c * I_c + b."""
    import torch

    guide = torch.as_tensor(guide, dtype=torch.float32)
    p = torch.as_tensor(p, dtype=torch.float32)
    h, w = p.shape
    mean_i = box_mean(guide, r)
    mean_p = box_mean(p, r)
    cov_ip = box_mean(guide * p, r) - mean_i * mean_p
    # Per-pixel 3x3 covariance of the guide's channels (+ eps on the diagonal), solved in float64.
    pairs = torch.stack([guide[i] * guide[j] for i in range(3) for j in range(3)])
    mean_i9 = torch.stack([mean_i[i] * mean_i[j] for i in range(3) for j in range(3)])
    sigma = (box_mean(pairs, r) - mean_i9).permute(1, 2, 0).reshape(h, w, 3, 3).double()
    sigma = sigma + eps * torch.eye(3, dtype=torch.float64)
    a = torch.linalg.solve(sigma, cov_ip.permute(1, 2, 0).double()[..., None])[..., 0]
    a = a.permute(2, 0, 1).float().contiguous()
    b = mean_p - (a * mean_i).sum(0)
    return box_mean(a, r), box_mean(b, r)


def guide_image(plate_rgb):
    """The plate as a guide in [0, 1): negatives cut, superwhites compressed (x / (1 + x)), so scene-linear and
    display-referred plates give edges of comparable strength for one eps. numpy or torch in, same out."""
    import torch

    x = torch.as_tensor(plate_rgb[..., :3]).clamp(min=0.0)
    g = x.div_(x + 1.0)
    return g.numpy() if isinstance(plate_rgb, np.ndarray) else g


def upsample_matte(alpha_content: np.ndarray, plate_rgb: np.ndarray, r: int = GUIDE_RADIUS,
                   eps: float = GUIDE_EPS) -> np.ndarray:
    """Alpha at model resolution (content box only) -> (H, W) float32 at plate resolution, edges following the
    plate. The full-resolution work is a handful of multi-threaded torch passes (this is the hot path)."""
    import torch

    H, W = plate_rgb.shape[:2]
    h, w = alpha_content.shape
    with torch.no_grad():
        guide_full = guide_image(torch.from_numpy(np.ascontiguousarray(plate_rgb[..., :3], dtype=np.float32)))
        guide_low = torch.from_numpy(resize(guide_full.numpy(), w, h).transpose(2, 0, 1).copy())
        a, b = guided_coefficients(guide_low, torch.from_numpy(alpha_content.astype(np.float32)), r, eps)
        low = torch.cat([a, b[None]])[None]
        coeffs = torch.nn.functional.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)[0]
        q = coeffs[3]
        for c in range(3):
            q.addcmul_(coeffs[c], guide_full[..., c])
    return q.numpy()


# ----------------------------------------------------------------------------------------------- the layer

def finish_matte(alpha: np.ndarray, threshold: float = DEFAULT_THRESHOLD, garbage: np.ndarray | None = None):
    """Clip to [0, 1], multiply by the garbage matte, and zero everything below `threshold` (exactly 0). In place."""
    import torch

    t = torch.from_numpy(alpha)
    t.clamp_(0.0, 1.0)
    if garbage is not None:
        if garbage.shape != alpha.shape:
            raise ValueError(f"garbage matte is {garbage.shape}, the layer is {alpha.shape}")
        t.mul_(torch.from_numpy(np.asarray(garbage, dtype=np.float32)).clamp(0.0, 1.0))
    t.masked_fill_(~(t >= threshold), 0.0)  # the negation also catches NaN
    return alpha


def premultiply(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(H, W, 4) float32: rgb * alpha and alpha, with RGB exactly +0 where alpha is 0 (even if rgb is inf/NaN).
    `rgb` may be (H, W, 3) or planar (3, H, W)."""
    import torch

    h, w = alpha.shape
    out = torch.empty((h, w, 4), dtype=torch.float32)
    a = torch.from_numpy(alpha)
    planar = torch.as_tensor(rgb)
    planar = planar if planar.shape[0] == 3 and planar.shape[1:] == (h, w) else planar[..., :3].permute(2, 0, 1)
    torch.mul(planar, a, out=out.permute(2, 0, 1)[:3])
    out[..., 3] = a
    out[..., :3].masked_fill_((a == 0)[..., None], 0.0)
    return out.numpy()


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
    import torch

    # Non-finite model output would survive premultiplication where alpha > 0: clean it at model size (cheap).
    edit = np.nan_to_num(np.asarray(edit_rgb_model, dtype=np.float32)[..., :3], nan=0.0, posinf=0.0, neginf=0.0)
    alpha_small = np.nan_to_num(np.asarray(alpha_model, dtype=np.float32), nan=0.0)
    alpha = upsample_matte(fit.crop(alpha_small), plate_rgb_full)
    alpha = finish_matte(alpha, threshold, garbage)
    content = torch.from_numpy(np.ascontiguousarray(fit.crop(edit).transpose(2, 0, 1)))
    with torch.no_grad():
        rgb = torch.nn.functional.interpolate(content[None], size=(fit.plate_h, fit.plate_w), mode="bicubic",
                                              align_corners=False)[0]
    return premultiply(rgb, alpha)
