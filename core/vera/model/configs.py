"""Named Vera configurations, as plain data.

A Vera model is three Wan2.1 DiTs (one per stream) joined by joint self-attention; a configuration describes
ONE stream (they are identical in shape). The Wan sizes are from the Wan2.1 release (docs/model.md);
`in_dim` adds the conditioning channels (source latents + packed user mask) to Wan's 16 latent channels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pydantic import TypeAdapter

from vera.errors import BadInput
from vera.schemas import check

# The three streams, in the order they are stacked on dim 1 of the model's input and output.
STREAMS = ("edit", "alpha", "composite")


@dataclass(frozen=True)
class VeraConfig:
    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    z_dim: int = 16            # latent channels of the VAE (Wan: 16)
    mask_channels: int = 4     # the user mask packed to the latent grid: one channel per frame of a latent frame
    text_dim: int = 4096       # text-encoder width (umT5-xxl: 4096)
    freq_dim: int = 256        # sinusoidal time-embedding width
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    cross_attn_norm: bool = True
    qk_norm: bool = True
    text_len: int = 512        # prompt length the text encoder pads to (umT5 in Wan: 512)

    # how from_dict validates a JSON config (pydantic, via vera.schemas.check): exact types, finite numbers.
    # A plain dict (pydantic's ConfigDict is a TypedDict) so importing the configs does not import pydantic.
    __pydantic_config__ = {"strict": True, "allow_inf_nan": False}

    def __post_init__(self):
        # JSON gives lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        sizes = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.type in ("int", int)}
        sizes.update({f"patch_size[{i}]": p for i, p in enumerate(self.patch_size)})
        for name, value in sizes.items():
            if value < 1:
                raise BadInput(f"config: field {name}: must be at least 1, got {value}")
        if not self.eps > 0:
            raise BadInput(f"config: field eps: must be greater than 0, got {self.eps}")
        if self.dim % self.num_heads:
            raise BadInput(f"config: dim {self.dim} is not divisible by num_heads {self.num_heads}")
        head_dim = self.dim // self.num_heads
        # RoPE splits the head dim into t/h/w parts of rotated pairs, so every part must be even and non-empty.
        if head_dim % 2 or head_dim < 6:
            raise BadInput(f"config: head dim {head_dim} must be even and at least 6 for 3D RoPE")

    @property
    def in_dim(self) -> int:
        """Noisy latent + source-video latent + packed mask."""
        return 2 * self.z_dim + self.mask_channels

    @property
    def out_dim(self) -> int:
        return self.z_dim

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def streams(self) -> tuple[str, ...]:
        return STREAMS

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["patch_size"] = list(self.patch_size)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "VeraConfig":
        if not isinstance(data, dict):
            raise BadInput(f"config: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        # Derived values may be present in a written config (for people reading it); they are recomputed.
        derived = {"in_dim", "out_dim", "head_dim", "streams", "name"}
        unknown = sorted(set(data) - names - derived)
        if unknown:
            raise BadInput(f"config: unknown field(s) {', '.join(unknown)}")

        # Types checked by pydantic (strict: no "192" for 192, no NaN), then __post_init__ checks the values.
        cfg = check(TypeAdapter(cls), {k: v for k, v in data.items() if k in names}, "config")
        for key in ("in_dim", "out_dim"):
            if key in data and data[key] != getattr(cfg, key):
                raise BadInput(f"config: {key} {data[key]} does not match the other fields ({getattr(cfg, key)})")
        return cfg


CONFIGS: dict[str, VeraConfig] = {
    # Wan2.1 T2V 1.3B per stream.
    "vera-1.3b": VeraConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
    # Wan2.1 T2V 14B per stream.
    "vera-14b": VeraConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
    # Tests: runs in milliseconds on a CPU; Wan's latent layout, a tiny text width.
    "vera-tiny": VeraConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=2, text_dim=32, freq_dim=32, text_len=16),
    # The embedded demo model: small enough to run a shot on a laptop CPU.
    "vera-demo": VeraConfig(dim=128, ffn_dim=256, num_heads=4, num_layers=4, text_dim=64, freq_dim=64,
                            text_len=32),
}


def get_config(name: str) -> VeraConfig:
    """The named configuration; BadInput naming the choices if it does not exist."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise BadInput(f"unknown model config {name!r}; choose one of: {', '.join(CONFIGS)}") from None
