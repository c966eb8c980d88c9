"""S3-DiT: Z-Image's Scalable Single-Stream Diffusion Transformer (arXiv 2511.22699, section 4.1).

Read top to bottom: helpers, the timestep embedder, 3-axis RoPE, the block, the final layer, the
model, then the preset table. The structure follows the released code (Tongyi-MAI/Z-Image
``src/zimage/transformer.py``; diffusers ``ZImageTransformer2DModel``): image patch tokens and
caption tokens each pass two refiner blocks (the image refiner modulated by the timestep, the
caption refiner not), then one sequence ``[image, caption]`` goes through the shared blocks.

Differences from the released code, none of which change the function it computes (a test copies
diffusers' weights into this model with ``engine.s3dit.diffusers_weights`` and compares outputs):
the batch is one tensor rather than a list of per-sample tensors (every image of a batch has the
same size: the loader groups by bucket), the pad/mask logic is written once
(:func:`caption_layout`), q/k/v and the two SwiGLU input projections are fused into one matmul
each, and RoPE is applied with real cos/sin tables.

Image-to-image ("omni") rows add a clean reference image: its tokens follow the target's, share
its (h, w) RoPE coordinates one step further on the first axis, and are modulated with the
embedding of t = 1 (clean) rather than the sample's t, as the released omni code does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

ADALN_DIM = 256  # width of the shared timestep vector ("low-rank down-projection"), as released
T_MLP_DIM = 1024  # hidden width of the timestep MLP, as released
FREQ_DIM = 256  # sinusoidal timestep features, as in DiT and the released code
SEQ_MULTIPLE = 32  # each modality's token count is padded to a multiple of 32 with a learned token


# --- helpers ------------------------------------------------------------------------------------


def modulate(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN without shift: the released model only scales (no shift term)."""
    return x * (1 + scale)


class RMSNorm(nn.Module):
    """RMSNorm with a learned gain, computed in float32 (as the released code does)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype) * self.weight.to(x.dtype)


def pad_length(n: torch.Tensor | int) -> torch.Tensor | int:
    """n rounded up to a multiple of SEQ_MULTIPLE: the token count after learned-pad padding."""
    return (n + SEQ_MULTIPLE - 1) // SEQ_MULTIPLE * SEQ_MULTIPLE


def caption_layout(cap_lens: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The caption part of the sequence, once for every place that needs it.

    Each caption of ``cap_lens[i]`` tokens is padded with the learned pad token up to a multiple
    of 32 (``padded[i]`` tokens); beyond that, up to the batch's ``length``, positions are batch
    padding that attention ignores.

    Returns:
        is_pad: (N, length) bool, positions filled with the learned pad token.
        valid: (N, length) bool, positions attention may read (real or learned pad).
        padded: (N,) long, the padded caption length (the image's first RoPE coordinate - 1).
    """
    j = torch.arange(length, device=cap_lens.device)[None]  # (1, length)
    padded = pad_length(cap_lens)  # (N,)
    return (j >= cap_lens[:, None]) & (j < padded[:, None]), j < padded[:, None], padded


# --- timestep embedder --------------------------------------------------------------------------


class TimestepEmbedder(nn.Module):
    """t in [0, 1] (0 noise, 1 data) -> sinusoidal features of 1000 t -> MLP -> (N, 256)."""

    def __init__(self, out_dim: int, t_scale: float = 1000.0):
        super().__init__()
        self.t_scale = t_scale  # the released model was trained on t * 1000
        self.mlp = nn.Sequential(nn.Linear(FREQ_DIM, T_MLP_DIM), nn.SiLU(), nn.Linear(T_MLP_DIM, out_dim))

    @staticmethod
    def timestep_features(t: torch.Tensor, dim: int = FREQ_DIM, max_period: float = 10000.0) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
        )
        args = t[:, None].float() * freqs[None]  # (N, half)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, dim): cos first, as released

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.timestep_features(t * self.t_scale).to(self.mlp[0].weight.dtype))


# --- 3-axis RoPE ----------------------------------------------------------------------------------


class RopeEmbedder(nn.Module):
    """Rotary embedding over three axes: (sequence, height, width) positions -> cos/sin tables.

    Each axis a gets ``axes_dims[a]`` channels of every head (they sum to the head width), with
    frequencies theta^(-2k/d) as in the released code (theta = 256). Pairs of adjacent channels
    (2k, 2k+1) rotate together, as the released complex multiplication does.
    """

    def __init__(self, axes_dims: tuple[int, ...], axes_lens: tuple[int, ...], theta: float):
        super().__init__()
        self.axes_dims, self.axes_lens = tuple(axes_dims), tuple(axes_lens)
        for a, (d, n) in enumerate(zip(axes_dims, axes_lens, strict=True)):
            freqs = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
            angles = torch.outer(torch.arange(n, dtype=torch.float64), freqs).float()  # (n, d/2)
            self.register_buffer(f"angles_{a}", angles, persistent=False)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (N, S, 3) integer positions -> cos, sin (N, S, 1, head_dim/2), float32."""
        angles = torch.cat(
            [getattr(self, f"angles_{a}")[ids[..., a]] for a in range(len(self.axes_dims))], -1
        )
        return angles.cos()[:, :, None], angles.sin()[:, :, None]


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate adjacent channel pairs of x (N, S, H, D) by the angles in rope, in float32."""
    cos, sin = rope  # (N, S, 1, D/2)
    x2 = x.float().unflatten(-1, (-1, 2))  # (N, S, H, D/2, 2)
    x0, x1 = x2[..., 0], x2[..., 1]  # (N, S, H, D/2)
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)  # (N, S, H, D/2, 2)
    return out.flatten(-2).type_as(x)  # (N, S, H, D)


# --- block ----------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention with QK-RMSNorm then RoPE; no biases."""

    def __init__(self, dim: int, n_heads: int, eps: float):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = RMSNorm(dim // n_heads, eps)
        self.k_norm = RMSNorm(dim // n_heads, eps)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, rope) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.n_heads, -1)).unbind(2)  # each (N, S, H, D)
        q, k = apply_rope(self.q_norm(q), rope), apply_rope(self.k_norm(k), rope)  # (N, S, H, D)
        mask = None if mask is None else mask[:, None, None, :]  # (N, 1, 1, S): keys to read
        x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask)
        return self.out(x.transpose(1, 2).flatten(2))  # (N, S, dim)


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x) with w1 and w3 fused into one matmul; no biases."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w13 = nn.Linear(dim, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(a) * b)


class S3DiTBlock(nn.Module):
    """Sandwich-norm block: x += tanh(g1) * N(Attn(N(x) * (1 + s1))); x += tanh(g2) * N(FFN(N(x) * (1 + s2))).

    With ``modulated=False`` (the caption refiner) there is no scale and no gate.
    """

    def __init__(self, dim: int, n_heads: int, eps: float, modulated: bool = True):
        super().__init__()
        self.attn_norm1, self.attn_norm2 = RMSNorm(dim, eps), RMSNorm(dim, eps)
        self.ffn_norm1, self.ffn_norm2 = RMSNorm(dim, eps), RMSNorm(dim, eps)
        self.attn = Attention(dim, n_heads, eps)
        self.ffn = SwiGLU(dim, int(dim / 3 * 8))  # 8/3 width keeps SwiGLU's cost equal to a 4x MLP
        # Per-layer up-projection of the shared 256-d timestep vector to (s1, g1, s2, g2).
        self.adaLN_modulation = nn.Linear(min(dim, ADALN_DIM), 4 * dim) if modulated else None

    def forward(self, x, mask, rope, c=None, clean=None):
        """x (N, S, dim); mask (N, S) bool or None; c (N, K, 256) with K = 1, or K = 2 (noisy,
        clean) and ``clean`` (N, S, 1) bool picking the second row for reference tokens."""
        if self.adaLN_modulation is None:
            x = x + self.attn_norm2(self.attn(self.attn_norm1(x), mask, rope))
            return x + self.ffn_norm2(self.ffn(self.ffn_norm1(x)))
        mod = self.adaLN_modulation(c)  # (N, K, 4 dim)
        if clean is not None:
            mod = torch.where(clean, mod[:, 1:2], mod[:, 0:1])  # (N, S, 4 dim)
        s1, g1, s2, g2 = mod.chunk(4, dim=-1)  # each (N, 1 or S, dim)
        x = x + g1.tanh() * self.attn_norm2(self.attn(modulate(self.attn_norm1(x), s1), mask, rope))
        return x + g2.tanh() * self.ffn_norm2(self.ffn(modulate(self.ffn_norm1(x), s2)))


class FinalLayer(nn.Module):
    """LayerNorm (no affine) scaled by 1 + Linear(SiLU(c)), then a linear map to patch pixels."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(min(dim, ADALN_DIM), dim))
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.linear(modulate(self.norm(x), self.adaLN_modulation(c)[:, None]))


# --- the model ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3DiTConfig:
    """An S3-DiT architecture. The defaults are the released 6.15B model's."""

    dim: int = 3840
    n_layers: int = 30
    n_heads: int = 30
    n_refiner_layers: int = 2  # per modality
    patch_size: int = 2
    in_channels: int = 16  # FLUX VAE latents; 3 for pixel space
    cap_feat_dim: int = 2560  # Qwen3-4B hidden size; 384 for MiniLM-L6
    axes_dims: tuple[int, int, int] = (32, 48, 48)  # RoPE channels per axis; sums to head width
    axes_lens: tuple[int, int, int] = (1024, 512, 512)  # largest position per axis
    rope_theta: float = 256.0
    norm_eps: float = 1e-5

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Condition:
    """What the model is conditioned on besides the timestep."""

    cap: torch.Tensor  # (N, L, cap_feat_dim) caption features, zero beyond each caption's length
    cap_lens: torch.Tensor  # (N,) long, tokens per caption (>= 1)
    ref: torch.Tensor | None = None  # (N, C, H, W) clean reference image (image-to-image rows)

    def to(self, device) -> Condition:
        ref = None if self.ref is None else self.ref.to(device)
        return Condition(self.cap.to(device), self.cap_lens.to(device), ref)


class S3DiT(nn.Module):
    def __init__(self, config: S3DiTConfig):
        super().__init__()
        cfg = self.config = config
        assert cfg.dim % cfg.n_heads == 0 and cfg.dim // cfg.n_heads == sum(cfg.axes_dims)
        self.gradient_checkpointing = False
        p, c, d = cfg.patch_size, cfg.in_channels, cfg.dim
        self.t_embedder = TimestepEmbedder(min(d, ADALN_DIM))
        self.x_embedder = nn.Linear(p * p * c, d)
        self.cap_embedder = nn.Sequential(
            RMSNorm(cfg.cap_feat_dim, cfg.norm_eps), nn.Linear(cfg.cap_feat_dim, d)
        )
        self.x_pad_token = nn.Parameter(torch.zeros(d))
        self.cap_pad_token = nn.Parameter(torch.zeros(d))
        self.rope = RopeEmbedder(cfg.axes_dims, cfg.axes_lens, cfg.rope_theta)
        self.noise_refiner = nn.ModuleList(
            S3DiTBlock(d, cfg.n_heads, cfg.norm_eps) for _ in range(cfg.n_refiner_layers)
        )
        self.context_refiner = nn.ModuleList(
            S3DiTBlock(d, cfg.n_heads, cfg.norm_eps, modulated=False) for _ in range(cfg.n_refiner_layers)
        )
        self.layers = nn.ModuleList(S3DiTBlock(d, cfg.n_heads, cfg.norm_eps) for _ in range(cfg.n_layers))
        self.final_layer = FinalLayer(d, p * p * c)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        def basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(basic_init)
        # Patch embedding like a conv (DiT): xavier over the flattened patch.
        nn.init.xavier_uniform_(self.x_embedder.weight)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        nn.init.normal_(self.x_pad_token, std=0.02)
        nn.init.normal_(self.cap_pad_token, std=0.02)
        # Zero-initialised adaLN (scale 0, gate tanh(0) = 0): every modulated block starts as the
        # identity, and the output starts at zero (DiT's adaLN-Zero; the paper's zero-init gates).
        for block in [*self.noise_refiner, *self.layers]:
            nn.init.zeros_(block.adaLN_modulation.weight)
            nn.init.zeros_(block.adaLN_modulation.bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    # --- patches --------------------------------------------------------------------------------

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, H/p * W/p, p*p*C), channels last within a patch, as released."""
        p = self.config.patch_size
        x = x.unflatten(2, (-1, p)).unflatten(4, (-1, p))  # (N, C, h, p, w, p)
        return x.permute(0, 2, 4, 3, 5, 1).flatten(3).flatten(1, 2)  # (N, h*w, p*p*C)

    def unpatchify(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(N, h*w, p*p*C) -> (N, C, h*p, w*p)."""
        p, c = self.config.patch_size, self.config.in_channels
        x = x.unflatten(1, (h, w)).unflatten(3, (p, p, c))  # (N, h, w, p, p, C)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(x.shape[0], c, h * p, w * p)

    def embed_image(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Patchify, embed, and pad to a multiple of 32 with the learned pad token."""
        tokens = self.x_embedder(self.patchify(x))  # (N, T, dim)
        n_pad = pad_length(tokens.shape[1]) - tokens.shape[1]
        pad = self.x_pad_token.to(tokens.dtype).expand(tokens.shape[0], n_pad, -1)  # (N, n_pad, dim)
        return torch.cat([tokens, pad], dim=1), tokens.shape[1]  # (N, T_pad, dim), T

    def image_positions(self, first: torch.Tensor, h: int, w: int, length: int) -> torch.Tensor:
        """RoPE ids of one image: (first, row, col) per patch; (0, 0, 0) for the pad tokens."""
        rows, cols = torch.meshgrid(
            torch.arange(h, device=first.device), torch.arange(w, device=first.device), indexing="ij"
        )
        ids = torch.zeros(first.shape[0], length, 3, dtype=torch.long, device=first.device)  # (N, T_pad, 3)
        ids[:, : h * w, 0] = first[:, None]
        ids[:, : h * w, 1] = rows.flatten()
        ids[:, : h * w, 2] = cols.flatten()
        return ids

    def run(self, block, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    # --- forward --------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Predict the velocity x1 - x0 at x_t.

        Args:
            x: (N, C, H, W) noisy image x_t; H and W divisible by the patch size.
            t: (N,) in [0, 1]; 0 is pure noise, 1 is data.
            cond: caption features (and an optional clean reference image).
        """
        n, _, height, width = x.shape
        h, w = height // self.config.patch_size, width // self.config.patch_size
        c = self.t_embedder(t)  # (N, 256)

        # Caption: embed, learned pad to a multiple of 32, refine without modulation.
        cap_len = pad_length(int(cond.cap_lens.max()))
        cap = self.cap_embedder(cond.cap[:, :cap_len])  # (N, L', dim); L' = min(L, cap_len)
        cap = F.pad(cap, (0, 0, 0, cap_len - cap.shape[1]))  # (N, L, dim) with L = cap_len
        is_pad, cap_valid, cap_padded = caption_layout(cond.cap_lens, cap_len)  # (N, L), (N, L), (N,)
        cap = torch.where(is_pad[..., None], self.cap_pad_token.to(cap.dtype), cap)  # (N, L, dim)
        cap_ids = torch.zeros(n, cap_len, 3, dtype=torch.long, device=x.device)  # (N, L, 3)
        cap_ids[..., 0] = torch.arange(1, cap_len + 1, device=x.device)  # token i at (1 + i, 0, 0)
        cap_rope = self.rope(cap_ids)
        cap_mask = None if bool(cap_valid.all()) else cap_valid
        for block in self.context_refiner:
            cap = self.run(block, cap, cap_mask, cap_rope)  # (N, L, dim)

        # Image (and reference): embed, learned pad, refine under timestep modulation.
        img, n_img = self.embed_image(x)  # (N, T, dim), T = padded token count
        img_ids = self.image_positions(cap_padded + 1, h, w, img.shape[1])  # (N, T, 3)
        c_tok, clean = c[:, None], None  # (N, 1, 256)
        if cond.ref is not None:
            ref, _ = self.embed_image(cond.ref)  # (N, T, dim)
            ref_ids = self.image_positions(cap_padded + 2, h, w, ref.shape[1])  # one step on axis 0
            img, img_ids = torch.cat([img, ref], 1), torch.cat([img_ids, ref_ids], 1)  # (N, 2T, ...)
            c_tok = torch.stack([c, self.t_embedder(torch.ones_like(t))], 1)  # (N, 2, 256): noisy, clean
            clean = (torch.arange(img.shape[1], device=x.device) >= ref.shape[1])[None, :, None]  # (1, 2T, 1)
        img_rope = self.rope(img_ids)
        for block in self.noise_refiner:
            img = self.run(block, img, None, img_rope, c_tok, clean)  # (N, T or 2T, dim)

        # One stream: [image, caption] through the shared blocks, batch padding masked.
        seq = torch.cat([img, cap], dim=1)  # (N, S, dim)
        rope = tuple(torch.cat([a, b], 1) for a, b in zip(img_rope, cap_rope, strict=True))
        mask = None if cap_mask is None else F.pad(cap_mask, (img.shape[1], 0), value=True)  # (N, S)
        if clean is not None:
            clean = F.pad(clean, (0, 0, 0, cap_len), value=False)  # captions use the noisy t
        for block in self.layers:
            seq = self.run(block, seq, mask, rope, c_tok, clean)  # (N, S, dim)

        out = self.final_layer(seq[:, :n_img], c)  # (N, h*w, p*p*C): target image tokens only
        return self.unpatchify(out, h, w)  # (N, C, H, W)


# --- presets ----------------------------------------------------------------------------------------

# Head width 64 for the small presets (RoPE axes 16 + 24 + 24), 128 from B up (32 + 48 + 48, as
# released). Pixel-space defaults (3 channels, MiniLM-L6's 384-d features) for the CPU-sized ones;
# the 6B preset is the released configuration (FLUX VAE's 16 channels, Qwen3-4B's 2560).
_SMALL = {"in_channels": 3, "cap_feat_dim": 384, "axes_dims": (16, 24, 24)}
S3DiT_models: dict[str, S3DiTConfig] = {
    "S3DiT-T/2": S3DiTConfig(dim=128, n_layers=2, n_heads=2, **_SMALL),  # 1.9M parameters: CI-sized
    "S3DiT-XS/2": S3DiTConfig(dim=256, n_layers=4, n_heads=4, **_SMALL),  # 8.6M: trains on 2 CPU cores
    "S3DiT-S/2": S3DiTConfig(dim=384, n_layers=8, n_heads=6, **_SMALL),  # 26M
    "S3DiT-B/2": S3DiTConfig(dim=768, n_layers=12, n_heads=6, axes_dims=(32, 48, 48), in_channels=16),
    "S3DiT-L/2": S3DiTConfig(dim=1536, n_layers=24, n_heads=12, axes_dims=(32, 48, 48), in_channels=16),
    "S3DiT-6B/2": S3DiTConfig(),  # the released Z-Image size: 6.15B parameters
}
# Patch 4 in pixel space: a 32 px image is 64 tokens instead of 256, so CPU runs (tests, the demo)
# take minutes, not hours. Like DiT's /4 and /8 variants: same weights shapes but the patch embed.
S3DiT_models["S3DiT-T/4"] = replace(S3DiT_models["S3DiT-T/2"], patch_size=4)
S3DiT_models["S3DiT-XS/4"] = replace(S3DiT_models["S3DiT-XS/2"], patch_size=4)
CPU_PRESETS = ("S3DiT-T/4", "S3DiT-T/2", "S3DiT-XS/4", "S3DiT-XS/2", "S3DiT-S/2")  # seconds per step on a CPU


def list_presets() -> list[str]:
    return list(S3DiT_models)


def build_model(preset: str, in_channels: int | None = None, cap_feat_dim: int | None = None) -> S3DiT:
    """An S3-DiT from a preset name, with the latent channels and caption width of this setup."""
    if preset not in S3DiT_models:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(S3DiT_models)}")
    cfg = S3DiT_models[preset]
    cfg = replace(
        cfg,
        in_channels=cfg.in_channels if in_channels is None else in_channels,
        cap_feat_dim=cfg.cap_feat_dim if cap_feat_dim is None else cap_feat_dim,
    )
    return S3DiT(cfg)
