"""The Vera network: three Wan2.1 DiTs (edit, alpha, composite) joined by one joint self-attention.

Read top to bottom:
  * helpers: the sinusoidal time embedding, 3D RoPE, float32 "islands" for norms and modulation;
  * `WanBlock`: one stream's parameters for one layer, split at the self-attention so the MoT can attend jointly;
  * `WanStream`: one full Wan2.1 T2V parameter set (patch embedding, time/text embedders, blocks, head);
  * `VeraMoT`: the three streams; per layer every stream makes its q/k/v, the three token sets are attended ONCE,
    split back, and every stream finishes the layer with its own output projection, cross-attention and FFN.
  * `pack_mask`: a user mask packed onto the latent grid (the conditioning's last channels).

Parameter names inside a stream are Wan2.1's original ones (`blocks.0.self_attn.q.weight`, `head.modulation`,
...) with the stream name in front (`edit.blocks.0.self_attn.q.weight`), so a Wan2.1 checkpoint maps on by
prefixing (vera.model.checkpoint also converts diffusers' names). Numerics follow diffusers'
`WanTransformer3DModel` (same RoPE frequencies and pairing, same float32 islands), which the parity test checks.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from vera.model.configs import STREAMS, VeraConfig

# ----------------------------------------------------------------------------------------------------- helpers


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) float32 [cos | sin] features (diffusers' Timesteps, flip_sin_to_cos, shift 0)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    angles = t[:, None].float() * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """How the head dim is shared between time, height and width (Wan2.1)."""
    h_dim = w_dim = 2 * (head_dim // 6)
    return head_dim - h_dim - w_dim, h_dim, w_dim


def rope_cos_sin(head_dim: int, grid: tuple[int, int, int], device, theta: float = 10000.0):
    """cos/sin of the 3D RoPE angles for a (frames, height, width) token grid: each (L, head_dim // 2) float32.

    The angles are computed in float64 and rounded once (as diffusers does), so they match it exactly.
    """
    angle_dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64  # MPS has no float64
    angles = []
    for axis, (part, size) in enumerate(zip(rope_split(head_dim), grid)):
        inv_freq = 1.0 / theta ** (torch.arange(0, part, 2, dtype=angle_dtype, device=device) / part)
        axis_angles = torch.outer(torch.arange(size, dtype=angle_dtype, device=device), inv_freq)
        shape = [1, 1, 1, part // 2]
        shape[axis] = size
        angles.append(axis_angles.view(shape).expand(*grid, part // 2))
    angles = torch.cat(angles, dim=-1).reshape(-1, head_dim // 2)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, L, heads, head_dim) by the angles; consecutive channels (2i, 2i+1) form the rotated pairs."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    rotated = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    return rotated.type_as(x)


def layer_norm_fp32(x: torch.Tensor, norm: nn.LayerNorm | None, eps: float) -> torch.Tensor:
    """LayerNorm computed in float32 whatever the model dtype (Wan keeps norms in float32); returns float32."""
    weight = bias = None
    if norm is not None:
        weight, bias = norm.weight.float(), norm.bias.float()
    return F.layer_norm(x.float(), (x.shape[-1],), weight, bias, eps)


def linear_fp32(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """A Linear evaluated in float32 (the time embedding is a float32 island in Wan, even in bf16 models)."""
    return F.linear(x.float(), layer.weight.float(), None if layer.bias is None else layer.bias.float())


# ------------------------------------------------------------------------------------------------------ layers


class SelfAttention(nn.Module):
    """Wan2.1 self-attention projections. The attention itself is done jointly by VeraMoT."""

    def __init__(self, cfg: VeraConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.q = nn.Linear(cfg.dim, cfg.dim)
        self.k = nn.Linear(cfg.dim, cfg.dim)
        self.v = nn.Linear(cfg.dim, cfg.dim)
        self.o = nn.Linear(cfg.dim, cfg.dim)
        # RMSNorm across the whole width (all heads together), as Wan2.1.
        self.norm_q = nn.RMSNorm(cfg.dim, eps=cfg.eps) if cfg.qk_norm else nn.Identity()
        self.norm_k = nn.RMSNorm(cfg.dim, eps=cfg.eps) if cfg.qk_norm else nn.Identity()

    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """(B, L, dim) -> q, k, v each (B, heads, L, head_dim), RoPE applied to q and k."""
        q = self.norm_q(self.q(x)).unflatten(2, (self.num_heads, -1))
        k = self.norm_k(self.k(x)).unflatten(2, (self.num_heads, -1))
        v = self.v(x).unflatten(2, (self.num_heads, -1))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


class CrossAttention(SelfAttention):
    """Wan2.1 text cross-attention: queries from the video tokens, keys/values from the embedded prompt.
    The same projections and norms as self-attention (as in Wan2.1), attended to the text without RoPE."""

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self.norm_q(self.q(x)).unflatten(2, (self.num_heads, -1)).transpose(1, 2)
        k = self.norm_k(self.k(context)).unflatten(2, (self.num_heads, -1)).transpose(1, 2)
        v = self.v(context).unflatten(2, (self.num_heads, -1)).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.o(out.transpose(1, 2).flatten(2).type_as(q))


class WanBlock(nn.Module):
    """One stream's parameters for one layer (Wan2.1 names: norm3 is the cross-attention's affine LayerNorm).

    The layer runs in two halves around the joint attention: `attention_input` (modulated norm -> q, k, v) and
    `finish` (output projection + gated residual, cross-attention, modulated FFN).
    """

    def __init__(self, cfg: VeraConfig):
        super().__init__()
        self.eps = cfg.eps
        self.self_attn = SelfAttention(cfg)
        self.norm3 = nn.LayerNorm(cfg.dim, eps=cfg.eps) if cfg.cross_attn_norm else None
        self.cross_attn = CrossAttention(cfg)
        self.ffn = nn.Sequential(nn.Linear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(cfg.ffn_dim, cfg.dim))
        # Learned per-layer offsets added to the shared time projection: shift/scale/gate for attention and FFN.
        self.modulation = nn.Parameter(torch.randn(1, 6, cfg.dim) / cfg.dim**0.5)

    def modulation_terms(self, e0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, 6, dim) float32 time projection -> six (B, 1, dim) float32 terms."""
        return (self.modulation.float() + e0).chunk(6, dim=1)

    def attention_input(self, x, mod, cos, sin):
        shift, scale = mod[0], mod[1]
        normed = (layer_norm_fp32(x, None, self.eps) * (1 + scale) + shift).type_as(x)
        return self.self_attn.qkv(normed, cos, sin)

    def finish(self, x, attn_out, mod, context):
        """attn_out: this stream's share of the joint attention, (B, heads, L, head_dim)."""
        gate, c_shift, c_scale, c_gate = mod[2], mod[3], mod[4], mod[5]
        attn_out = self.self_attn.o(attn_out.transpose(1, 2).flatten(2).type_as(x))
        x = (x.float() + attn_out * gate).type_as(x)
        normed = x if self.norm3 is None else layer_norm_fp32(x, self.norm3, self.eps).type_as(x)
        x = x + self.cross_attn(normed, context)
        normed = (layer_norm_fp32(x, None, self.eps) * (1 + c_scale) + c_shift).type_as(x)
        return (x.float() + self.ffn(normed).float() * c_gate).type_as(x)


class Head(nn.Module):
    """Final modulated norm and projection to patches of output channels."""

    def __init__(self, cfg: VeraConfig):
        super().__init__()
        self.eps = cfg.eps
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation.float() + e.unsqueeze(1)).chunk(2, dim=1)
        return self.head((layer_norm_fp32(x, None, self.eps) * (1 + scale) + shift).type_as(x))


class WanStream(nn.Module):
    """A complete Wan2.1 T2V parameter set, with `cfg.in_dim` input channels (Wan's 16 + conditioning)."""

    def __init__(self, cfg: VeraConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(cfg.dim, cfg.dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 6 * cfg.dim))
        self.blocks = nn.ModuleList(WanBlock(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Wan2.1's initialisation, then the conditioning input channels set to zero.

        Zero conditioning weights make a stream initialised from Wan2.1 compute exactly Wan2.1 T2V until training
        teaches it to read the source. (Wan zero-initialises the head too; we keep it random so that a randomly
        initialised test model is a non-trivial function. Real models always load weights.)
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        nn.init.zeros_(self.patch_embedding.bias)
        for seq in (self.text_embedding, self.time_embedding):
            for module in seq:
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=0.02)
        zero_conditioning_channels(self.patch_embedding.weight, self.cfg.z_dim)

    def embed(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor):
        """-> tokens (B, L, dim), time embedding e (B, dim) f32, time projection e0 (B, 6, dim) f32, text (B, Lt, dim)."""
        dtype = self.patch_embedding.weight.dtype
        tokens = self.patch_embedding(x.to(dtype)).flatten(2).transpose(1, 2).contiguous()
        e = linear_fp32(self.time_embedding[2], F.silu(linear_fp32(self.time_embedding[0],
                                                                   sinusoidal_embedding(t, self.cfg.freq_dim))))
        e0 = linear_fp32(self.time_projection[1], F.silu(e)).unflatten(1, (6, -1))
        text = self.text_embedding(context.to(dtype))
        return tokens, e, e0, text

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(B, L, out_dim * prod(patch)) -> (B, out_dim, F, H, W)."""
        pt, ph, pw = self.cfg.patch_size
        f, h, w = grid
        x = x.reshape(x.shape[0], f, h, w, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)


def zero_conditioning_channels(patch_weight: torch.Tensor, z_dim: int) -> None:
    """Zero the patch-embedding weights that read the conditioning (all input channels after the noisy latent)."""
    with torch.no_grad():
        patch_weight[:, z_dim:].zero_()


# --------------------------------------------------------------------------------------------------------- MoT


class VeraMoT(nn.Module):
    """Mixture-of-Transformers: one WanStream per stream in STREAMS, joint self-attention in every layer.

    forward(x (B, 3, in_dim, F, H, W), t (B,) in [0, 1000), context (B, L, text_dim)) -> (B, 3, out_dim, F, H, W).
    All streams see the same prompt and share the same 3D positions (their pixels are aligned).
    `isolate_streams=True` masks the joint attention block-diagonally: each stream is then exactly a Wan2.1 DiT.
    """

    def __init__(self, cfg: VeraConfig):
        super().__init__()
        self.cfg = cfg
        for name in STREAMS:  # registered by name so parameter keys read `edit.blocks.0...`
            self.add_module(name, WanStream(cfg))
        self.gradient_checkpointing = False

    @property
    def streams(self) -> list[WanStream]:
        return [getattr(self, name) for name in STREAMS]

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                isolate_streams: bool = False) -> torch.Tensor:
        cfg = self.cfg
        if x.ndim != 6 or x.shape[1] != len(STREAMS) or x.shape[2] != cfg.in_dim:
            raise ValueError(f"VeraMoT: x must be (B, {len(STREAMS)}, {cfg.in_dim}, F, H, W), got {tuple(x.shape)}")
        frames, height, width = x.shape[3:]
        if any(size % p for size, p in zip((frames, height, width), cfg.patch_size)):
            raise ValueError(f"VeraMoT: latent size {(frames, height, width)} is not a multiple of the patch "
                             f"{cfg.patch_size}")
        grid = tuple(size // p for size, p in zip((frames, height, width), cfg.patch_size))
        cos, sin = rope_cos_sin(cfg.head_dim, grid, x.device)
        t = t.reshape(-1).to(x.device)
        if t.numel() == 1 and x.shape[0] > 1:
            t = t.expand(x.shape[0])

        embedded = [stream.embed(x[:, i], t, context) for i, stream in enumerate(self.streams)]
        tokens = [item[0] for item in embedded]
        num_tokens = tokens[0].shape[1]
        mask = None
        if isolate_streams:
            block = torch.ones(num_tokens, num_tokens, dtype=torch.bool, device=x.device)
            mask = torch.block_diag(*[block] * len(STREAMS))

        for layer in range(cfg.num_layers):
            args = (layer, cos, sin, mask, embedded)
            if self.gradient_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(self._layer, *tokens, *args, use_reentrant=False)
            else:
                tokens = self._layer(*tokens, *args)

        out = [stream.unpatchify(stream.head(tok, item[1]), grid)
               for stream, tok, item in zip(self.streams, tokens, embedded)]
        return torch.stack(out, dim=1)

    def _layer(self, *inputs):
        """One layer of all streams: own q/k/v, ONE joint attention, own output projection, cross-attn, FFN."""
        count = len(STREAMS)
        tokens, (layer, cos, sin, mask, embedded) = inputs[:count], inputs[count:]
        blocks = [stream.blocks[layer] for stream in self.streams]
        mods = [block.modulation_terms(item[2]) for block, item in zip(blocks, embedded)]
        qkv = [block.attention_input(tok, mod, cos, sin) for block, tok, mod in zip(blocks, tokens, mods)]
        q, k, v = (torch.cat(parts, dim=2) for parts in zip(*qkv))  # concatenated along the token axis
        joint = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        shares = joint.split([tok.shape[1] for tok in tokens], dim=2)
        return tuple(block.finish(tok, share, mod, item[3])
                     for block, tok, share, mod, item in zip(blocks, tokens, shares, mods, embedded))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_on_meta(cfg: VeraConfig) -> VeraMoT:
    """The model's structure without memory (for counting parameters, or for loading weights with assign=True)."""
    with torch.device("meta"):
        return VeraMoT(cfg)


# -------------------------------------------------------------------------------------------- conditioning


def pack_mask(mask: torch.Tensor, temporal_stride=4, spatial_stride: int = 8, *, latent_shape=None) -> torch.Tensor:
    """Pack a per-frame mask onto the latent grid: (B, 1, F, H, W) in [0, 1] -> (B, temporal_stride, F_lat, h, w).

    Each latent frame covers `temporal_stride` video frames, which become its channels; the first latent frame
    covers only frame 0 (causal VAE), so frame 0 is repeated to fill its group (as Wan2.1 I2V packs its mask).
    Spatially each latent cell gets the mean mask over its pixels ("area"), so partial coverage stays visible.
    The latent size may be given instead of the strides: `pack_mask(mask, latent.shape)` or `latent_shape=`
    (the temporal stride then follows from the frame counts; for a one-frame clip pass `temporal_stride` too).
    """
    if isinstance(temporal_stride, (tuple, list, torch.Size)):
        latent_shape, temporal_stride = temporal_stride, 4
    if mask.ndim != 5 or mask.shape[1] != 1:
        raise ValueError(f"pack_mask: mask must be (B, 1, F, H, W), got {tuple(mask.shape)}")
    batch, _, frames, height, width = mask.shape
    if latent_shape is not None:
        latent_frames, latent_h, latent_w = (int(s) for s in tuple(latent_shape)[-3:])
        if latent_frames > 1:
            temporal_stride = (frames - 1) // (latent_frames - 1)
    else:
        latent_frames = (frames - 1) // temporal_stride + 1
        latent_h, latent_w = height // spatial_stride, width // spatial_stride
    if (frames - 1) % temporal_stride or (frames - 1) // temporal_stride + 1 != latent_frames:
        raise ValueError(f"pack_mask: {frames} frames do not make {latent_frames} latent frames of "
                         f"{temporal_stride} (frame counts must be {temporal_stride}k+1)")
    mask = mask.float()
    grouped = torch.cat([mask[:, :, :1].expand(-1, -1, temporal_stride, -1, -1), mask[:, :, 1:]], dim=2)
    grouped = grouped.reshape(batch, latent_frames, temporal_stride, height, width).transpose(1, 2)
    small = F.interpolate(grouped.flatten(1, 2), size=(latent_h, latent_w), mode="area")
    return small.unflatten(1, (temporal_stride, latent_frames))
