"""The Vera network: three Wan2.1 DiTs (edit, alpha, composite) joined by one joint self-attention.

Read top to bottom:
  * helpers: the sinusoidal time embedding, 3D RoPE, float32 "islands" for norms and modulation;
  * `WanBlock`: one stream's parameters for one layer, split at the self-attention so the MoT can attend jointly;
  * `JointAttention`: softmax attention over the tokens of all streams at once, by the kernel vera.model.attention
    chose (no parameters; sequence parallelism swaps it for an all-to-all version from outside, see
    vera.parallel);
  * `JointBlock`: layer i of all three streams as ONE module: every stream makes its q/k/v, the three token sets
    are attended once, and every stream finishes the layer with its own output projection, cross-attention, FFN;
  * `WanStream`: the rest of one Wan2.1 T2V parameter set (patch embedding, time/text embedders, head);
  * `VeraMoT`: embed every stream, run the joint blocks, one head per stream;
  * `pack_mask`: a user mask packed onto the latent grid (the conditioning's last channels).

Parameters are organised by layer (`blocks.0.edit.self_attn.q.weight`), so that FSDP, activation checkpointing,
offloading and step caching can each take one joint layer as their unit. Checkpoint files are written
stream-first (`edit.blocks.0.self_attn.q.weight` = the stream name + Wan2.1's original key, so one stream of a
file is a Wan2.1 checkpoint under a prefix; `file_state_dict`), and `load_state_dict` accepts both layouts.

Precision (Wan2.1's bf16 recipe): weights may be bf16, but the residual stream stays float32 between and
inside blocks; each Linear gets its input cast to the weight dtype, and its output is added back in float32.
Norms, modulation, RoPE angles and the time embedding are float32 islands, as in Wan2.1 and diffusers.
Numerics otherwise follow diffusers' `WanTransformer3DModel` (same RoPE frequencies and pairing), which the
parity test checks.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from vera.model.attention import CPU_DEFAULT, attend
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


def rms_norm_fp32(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """RMSNorm computed in float32 (as Wan2.1's WanRMSNorm), returned in x's dtype; Identity passes x through."""
    if not isinstance(norm, nn.RMSNorm):
        return x
    return F.rms_norm(x.float(), norm.normalized_shape, norm.weight.float(), norm.eps).type_as(x)


def compute_dtype(layer: nn.Linear) -> torch.dtype:
    """The dtype a Linear's input is cast to: its weight's, except for a storage-only float8 weight (cast up to
    bf16 by a hook when the layer runs, as diffusers' layerwise casting does), which computes in bf16."""
    dtype = layer.weight.dtype
    return torch.bfloat16 if dtype.itemsize == 1 else dtype


class SelfAttention(nn.Module):
    """Wan2.1 self-attention projections. The attention itself is done jointly by JointAttention."""

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
        """(B, L, dim) -> q, k, v each (B, L, heads, head_dim) (the attention dispatcher's layout), RoPE applied
        to q and k."""
        x = x.to(compute_dtype(self.q))
        q = rms_norm_fp32(self.q(x), self.norm_q).unflatten(2, (self.num_heads, -1))
        k = rms_norm_fp32(self.k(x), self.norm_k).unflatten(2, (self.num_heads, -1))
        v = self.v(x).unflatten(2, (self.num_heads, -1))
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


class CrossAttention(SelfAttention):
    """Wan2.1 text cross-attention: queries from the video tokens, keys/values from the embedded prompt.
    The same projections and norms as self-attention (as in Wan2.1), attended to the text without RoPE."""

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        dtype = compute_dtype(self.q)
        x, context = x.to(dtype), context.to(dtype)
        q = rms_norm_fp32(self.q(x), self.norm_q).unflatten(2, (self.num_heads, -1)).transpose(1, 2)
        k = rms_norm_fp32(self.k(context), self.norm_k).unflatten(2, (self.num_heads, -1)).transpose(1, 2)
        v = self.v(context).unflatten(2, (self.num_heads, -1)).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.o(out.transpose(1, 2).flatten(2).type_as(q))


class WanBlock(nn.Module):
    """One stream's parameters for one layer (Wan2.1 names: norm3 is the cross-attention's affine LayerNorm).

    The layer runs in two halves around the joint attention: `attention_input` (modulated norm -> q, k, v) and
    `finish` (output projection + gated residual, cross-attention, modulated FFN). The residual stream `x` is
    float32 throughout; only the Linears' inputs take the weights' dtype (Wan2.1's bf16 recipe).
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
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def modulation_terms(self, e0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, 6, dim) float32 time projection -> six (B, 1, dim) float32 terms."""
        return (self.modulation.float() + e0).chunk(6, dim=1)

    def attention_input(self, x, mod, cos, sin):
        shift, scale = mod[0], mod[1]
        return self.self_attn.qkv(layer_norm_fp32(x, None, self.eps) * (1 + scale) + shift, cos, sin)

    def finish(self, x, attn_out, mod, context):
        """attn_out: this stream's share of the joint attention, (B, L, heads, head_dim). Returns float32."""
        gate, c_shift, c_scale, c_gate = mod[2], mod[3], mod[4], mod[5]
        o = self.self_attn.o
        x = x + o(attn_out.flatten(2).to(compute_dtype(o))).float() * gate
        normed = x if self.norm3 is None else layer_norm_fp32(x, self.norm3, self.eps)
        x = x + self.cross_attn(normed, context).float()
        normed = layer_norm_fp32(x, None, self.eps) * (1 + c_scale) + c_shift
        return x + self.ffn(normed.to(compute_dtype(self.ffn[0]))).float() * c_gate


class JointAttention(nn.Module):
    """Softmax attention over the tokens of all streams at once (no mask, so the fast kernels apply), through
    diffusers' attention dispatcher with the kernel `kernel` (vera.model.attention.use_kernel sets it; `native`,
    PyTorch's SDPA, until then).

    No parameters: vera.parallel swaps it for a sequence-parallel (all-to-all) version from outside the network.
    `isolate=True` attends each stream to its own tokens only (each stream is then exactly a Wan2.1 DiT).
    """

    def __init__(self):
        super().__init__()
        self.kernel = CPU_DEFAULT

    def forward(self, q: list, k: list, v: list, isolate: bool = False) -> list:
        """q, k, v: one (B, L_stream, heads, head_dim) tensor per stream -> one output of that shape per stream."""
        if isolate:
            return [attend(*qkv, self.kernel) for qkv in zip(q, k, v)]
        joint = attend(torch.cat(q, dim=1), torch.cat(k, dim=1), torch.cat(v, dim=1), self.kernel)
        return list(joint.split([part.shape[1] for part in q], dim=1))


class JointBlock(nn.Module):
    """Layer i of every stream, as one module: own q/k/v, ONE joint attention, own output projection,
    cross-attention and FFN. The unit that sharding, activation checkpointing, offloading and caching act on."""

    def __init__(self, cfg: VeraConfig):
        super().__init__()
        for name in STREAMS:  # registered by name: keys read `blocks.0.edit.self_attn.q.weight`
            self.add_module(name, WanBlock(cfg))
        self.attention = JointAttention()

    def forward(self, x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor, isolate_streams: bool = False) -> torch.Tensor:
        """x: (B, streams, L, dim) float32 residual streams; e0: (B, streams, 6, dim) float32 time projections;
        context: (B, streams, Lt, dim) each stream's embedded prompt; cos/sin: RoPE angles of the L tokens."""
        blocks = [getattr(self, name) for name in STREAMS]
        mods = [block.modulation_terms(e0[:, i]) for i, block in enumerate(blocks)]
        q, k, v = zip(*(block.attention_input(x[:, i], mods[i], cos, sin) for i, block in enumerate(blocks)))
        shares = self.attention(list(q), list(k), list(v), isolate_streams)
        return torch.stack([block.finish(x[:, i], shares[i], mods[i], context[:, i])
                            for i, block in enumerate(blocks)], dim=1)


class Head(nn.Module):
    """Final modulated norm and projection to patches of output channels."""

    def __init__(self, cfg: VeraConfig):
        super().__init__()
        self.eps = cfg.eps
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation.float() + e.unsqueeze(1)).chunk(2, dim=1)
        normed = layer_norm_fp32(x, None, self.eps) * (1 + scale) + shift
        return self.head(normed.to(compute_dtype(self.head)))


class WanStream(nn.Module):
    """One stream's Wan2.1 T2V parameters outside the blocks, with `cfg.in_dim` input channels (Wan's 16 +
    conditioning). Its blocks live in VeraMoT.blocks (one JointBlock per depth holds every stream's block)."""

    def __init__(self, cfg: VeraConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(cfg.dim, cfg.dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 6 * cfg.dim))
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
        """-> tokens (B, L, dim) f32, time embedding e (B, dim) f32, time projection e0 (B, 6, dim) f32,
        text (B, Lt, dim) in the weights' dtype."""
        dtype = compute_dtype(self.text_embedding[0])
        tokens = self.patch_embedding(x.to(dtype)).flatten(2).transpose(1, 2).float()
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
    """Mixture-of-Transformers: one WanStream per stream in STREAMS and one JointBlock per layer.

    forward(x (B, 3, in_dim, F, H, W), t (B,) in [0, 1000), context (B, L, text_dim)) -> (B, 3, out_dim, F, H, W).
    All streams see the same prompt and share the same 3D positions (their pixels are aligned).
    `isolate_streams=True` attends each stream to itself only: each stream is then exactly a Wan2.1 DiT.
    """

    def __init__(self, cfg: VeraConfig):
        super().__init__()
        self.cfg = cfg
        for name in STREAMS:  # registered by name so parameter keys read `edit.patch_embedding...`
            self.add_module(name, WanStream(cfg))
        self.blocks = nn.ModuleList(JointBlock(cfg) for _ in range(cfg.num_layers))
        self.gradient_checkpointing = False
        self.register_load_state_dict_pre_hook(_accept_stream_first_keys)

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

        tokens, e, e0, text = zip(*(stream.embed(x[:, i], t, context) for i, stream in enumerate(self.streams)))
        tokens, e0, text = torch.stack(tokens, dim=1), torch.stack(e0, dim=1), torch.stack(text, dim=1)
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, e0, text, cos, sin, isolate_streams, use_reentrant=False)
            else:
                tokens = block(tokens, e0, text, cos, sin, isolate_streams)

        out = [stream.unpatchify(stream.head(tokens[:, i], e[i]), grid) for i, stream in enumerate(self.streams)]
        return torch.stack(out, dim=1)


# ----------------------------------------------------------------------------------------- checkpoint keys

# Files hold stream-first keys (`edit.blocks.3.ffn.0.weight`: a stream of a file is a Wan2.1 checkpoint under a
# prefix); the module is organised by layer (`blocks.3.edit.ffn.0.weight`). Only block keys differ.
_STREAM_FIRST = re.compile(rf"^({'|'.join(STREAMS)})\.blocks\.(\d+)\.")
_BLOCK_FIRST = re.compile(rf"^blocks\.(\d+)\.({'|'.join(STREAMS)})\.")


def block_first_key(key: str) -> str:
    """`edit.blocks.3.x` (file) -> `blocks.3.edit.x` (module); other keys unchanged."""
    match = _STREAM_FIRST.match(key)
    return f"blocks.{match[2]}.{match[1]}.{key[match.end():]}" if match else key


def stream_first_key(key: str) -> str:
    """`blocks.3.edit.x` (module) -> `edit.blocks.3.x` (file); other keys unchanged."""
    match = _BLOCK_FIRST.match(key)
    return f"{match[2]}.blocks.{match[1]}.{key[match.end():]}" if match else key


def file_state_dict(model: VeraMoT) -> dict:
    """The model's tensors under the checkpoint file's (stream-first) key names."""
    return {stream_first_key(k): v for k, v in model.state_dict().items()}


def _accept_stream_first_keys(module, state_dict, prefix, *_):
    """load_state_dict pre-hook: a stream-first (file) state dict loads as well as a block-first one."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        renamed = prefix + block_first_key(key[len(prefix):])
        if renamed != key:
            state_dict[renamed] = state_dict.pop(key)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def stream_parameter_count(model: VeraMoT, name: str) -> int:
    """Parameters of one stream: its embedders and head plus its block at every depth."""
    return count_parameters(getattr(model, name)) + sum(count_parameters(getattr(b, name)) for b in model.blocks)


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
