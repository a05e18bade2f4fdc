"""VAEs: video in [-1, 1] <-> normalised latents, behind one small interface.

- `WanVAE`: diffusers `AutoencoderKLWan` (the real Wan2.1 VAE, stride 4x8x8, z_dim 16), loaded from a local
  folder, latents normalised per channel with the config's `latents_mean` / `latents_std`. Float32 on every
  device and untiled, as Wan2.1 and diffusers' WanPipeline run it; tiled only for frames larger than Wan's
  largest size (1280x720) or after running out of GPU memory, since tiles blend at their overlaps and could
  leave faint seams in a layer composited over an untouched plate.
- `PatchVAE`: a parameter-free, lossless pixel-unshuffle "VAE" (stride 1xPxP, z_dim 3*P*P). The embedded demo
  model uses it because a demo must train in minutes on a CPU: there is no VAE to train or download, the
  latent grid stays small, and decoding is exact, so every error in the demo's output is the transformer's.

The alpha matte goes through the same RGB VAE as three equal channels and comes back as the mean of the three
decoded channels, clamped to [0, 1] (`encode_matte` / `decode_matte`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from diffusers.utils import logging as diffusers_logging
from safetensors import SafetensorError

from vera.errors import BadInput


class VideoVAE:
    """The interface the pipeline and training code use. Subclasses set the three strides/sizes below."""

    z_dim: int
    temporal_stride: int
    spatial_stride: int

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(latent frames, latent height, latent width) for a video of frames x height x width."""
        if (frames - 1) % self.temporal_stride:
            raise BadInput(f"frame count {frames} must be {self.temporal_stride}k+1 for this VAE")
        if height % self.spatial_stride or width % self.spatial_stride:
            raise BadInput(f"frame size {width}x{height} must be a multiple of {self.spatial_stride}")
        return ((frames - 1) // self.temporal_stride + 1, height // self.spatial_stride,
                width // self.spatial_stride)

    def encode(self, video: torch.Tensor) -> torch.Tensor:  # (B,3,F,H,W) in [-1,1] -> (B,z,f,h,w)
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:  # (B,z,f,h,w) -> (B,3,F,H,W) in [-1,1]
        raise NotImplementedError

    def to(self, device=None, dtype=None) -> "VideoVAE":
        return self


class PatchVAE(VideoVAE):
    """Pixel-unshuffle each frame into patch x patch blocks: exact, no parameters, no temporal compression."""

    def __init__(self, patch: int = 4):
        if int(patch) < 1:
            raise BadInput(f"PatchVAE patch size must be at least 1, got {patch}")
        self.patch = int(patch)
        self.z_dim = 3 * self.patch * self.patch
        self.temporal_stride = 1
        self.spatial_stride = self.patch

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = video.shape
        self.latent_shape(f, h, w)  # checks the size
        frames = video.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        z = F.pixel_unshuffle(frames, self.patch)
        return z.reshape(b, f, self.z_dim, h // self.patch, w // self.patch).permute(0, 2, 1, 3, 4)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        b, z, f, h, w = latents.shape
        if z != self.z_dim:
            raise ValueError(f"PatchVAE({self.patch}) decodes {self.z_dim} channels, got {z}")
        frames = latents.permute(0, 2, 1, 3, 4).reshape(b * f, z, h, w)
        video = F.pixel_shuffle(frames, self.patch)
        return video.reshape(b, f, 3, h * self.patch, w * self.patch).permute(0, 2, 1, 3, 4)


TILING = ("auto", "always", "never")
# Wan2.1's largest generation size; Wan's own code decodes it untiled, in float32.
UNTILED_MAX_PIXELS = 1280 * 720


class WanVAE(VideoVAE):
    """diffusers `AutoencoderKLWan` with per-channel latent normalisation; float32, untiled unless too large.

    tiling: "auto" tiles frames above `max_untiled_pixels` and retries a call in tiles when the untiled one runs
    out of GPU memory; "always" / "never" force it. Tiles are diffusers' (`enable_tiling`: 256 px, stride 192).
    """

    def __init__(self, model, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 tiling: str = "auto", max_untiled_pixels: int = UNTILED_MAX_PIXELS):
        if tiling not in TILING:
            raise BadInput(f"VAE tiling must be one of {', '.join(TILING)}, got {tiling!r}")
        device = torch.device(device)
        self.model = model.to(device=device).eval()
        if next(self.model.parameters()).dtype != dtype:
            self.model.to(dtype=dtype)
        self.model.requires_grad_(False)
        self.tiling, self.max_untiled_pixels = tiling, int(max_untiled_pixels)
        cfg = self.model.config
        self.z_dim = int(cfg.z_dim)
        self.temporal_stride = int(cfg.scale_factor_temporal or 4)
        self.spatial_stride = int(cfg.scale_factor_spatial or 8)
        self.device, self.dtype = device, dtype
        shape = (1, self.z_dim, 1, 1, 1)
        self._mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(shape).to(device)
        self._std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(shape).to(device)

    @classmethod
    def from_folder(cls, folder: str | Path, device="cpu", dtype=torch.float32, **options) -> "WanVAE":
        """Load from a local diffusers folder (config.json + safetensors). Never touches the network."""
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise BadInput(f"{folder}: not a diffusers AutoencoderKLWan folder (no config.json)")

        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # its loading notes (accelerate, ...) are not ours to print
        try:
            model = AutoencoderKLWan.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                     torch_dtype=dtype)
        except (OSError, ValueError, TypeError, SafetensorError) as exc:  # unreadable config, damaged weights
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # the machine said no (permissions, full disk...): vera.cli maps it
            raise BadInput(f"{folder}: not a loadable Wan VAE ({str(exc).splitlines()[0][:200]})") from None
        finally:
            diffusers_logging.set_verbosity(verbosity)
        return cls(model, device=device, dtype=dtype, **options)

    @classmethod
    def from_config(cls, config: dict, seed: int = 0, device="cpu", dtype=torch.float32, **options) -> "WanVAE":
        """A randomly initialised VAE from a config dict (tests, and bundles made from scratch)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoencoderKLWan(**config)
        return cls(model, device=device, dtype=dtype, **options)

    def save(self, folder: str | Path) -> None:
        self.model.save_pretrained(folder, safe_serialization=True)

    def _tiled(self, height: int, width: int) -> bool:
        return self.tiling == "always" or (self.tiling == "auto" and height * width > self.max_untiled_pixels)

    def _run(self, call, x: torch.Tensor, height: int, width: int):
        """call(x) with diffusers' tiling on or off by the rule; "auto" retries in tiles on a GPU OOM."""
        tiled = self._tiled(height, width)
        self.model.enable_tiling() if tiled else self.model.disable_tiling()
        try:
            return call(x)
        except torch.OutOfMemoryError as exc:
            if tiled or self.tiling != "auto":
                raise
            print(f"vera: warning: VAE out of memory untiled at {width}x{height} ({exc}); retrying in tiles",
                  file=sys.stderr)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.model.enable_tiling()
            return call(x)

    def to(self, device=None, dtype=None) -> "WanVAE":
        """Move the VAE (and its latent statistics) to `device` / cast it to `dtype` (memory tier `parts`)."""
        if device is not None:
            self.device = torch.device(device)
            self.model.to(device=self.device)
            self._mean, self._std = self._mean.to(self.device), self._std.to(self.device)
        if dtype is not None:
            self.dtype = dtype
            self.model.to(dtype=dtype)
        return self

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        height, width = video.shape[-2:]
        self.latent_shape(*video.shape[2:])
        dist = self._run(self.model.encode, video.to(self.device, self.dtype), height, width).latent_dist
        # the posterior mode: encoding a plate is deterministic
        z = dist.mode().float()
        return (z - self._mean) / self._std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.device, torch.float32) * self._std + self._mean
        height, width = (n * self.spatial_stride for n in latents.shape[-2:])
        return self._run(self.model.decode, z.to(self.dtype), height, width).sample.float()


def encode_matte(vae: VideoVAE, matte: torch.Tensor) -> torch.Tensor:
    """Matte (B,1,F,H,W) in [0,1] -> latents, as a grey RGB video in [-1,1] (three equal channels)."""
    return vae.encode((matte * 2.0 - 1.0).expand(-1, 3, -1, -1, -1))


def decode_matte(vae: VideoVAE, latents: torch.Tensor) -> torch.Tensor:
    """Latents -> matte (B,1,F,H,W): the mean of the three decoded channels, mapped to [0,1] and clamped."""
    rgb = vae.decode(latents)
    return ((rgb.mean(dim=1, keepdim=True) + 1.0) * 0.5).clamp(0.0, 1.0)


def build_vae(spec: dict, base: str | Path, device="cpu") -> VideoVAE:
    """The VAE a bundle names: {"type": "patch", "patch": P} or {"type": "wan", "path": folder-in-bundle,
    "tiling": "auto" (default) | "always" | "never"}. A Wan VAE is float32 whatever the transformer runs in."""
    kind = spec.get("type")
    if kind == "patch":
        return PatchVAE(int(spec.get("patch", 4)))
    if kind == "wan":
        path = Path(spec.get("path", "vae"))
        return WanVAE.from_folder(path if path.is_absolute() else Path(base) / path, device=device,
                                  tiling=spec.get("tiling", "auto"))
    raise BadInput(f"{base}: unknown VAE type {kind!r} (expected 'wan' or 'patch')")
