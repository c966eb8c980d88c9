"""Flow matching for the S3-DiT: the training loss and the Euler sampler (minRF's ``rf.py`` shape).

Convention (the released Z-Image code's): x0 is noise, x1 is data, ``x_t = t x1 + (1 - t) x0``
and the model predicts the velocity ``x1 - x0``; t = 0 is pure noise, t = 1 is the image. The
network knows nothing about noise: :class:`RectifiedFlow` wraps any ``model(x, t, cond)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from engine.s3dit.model import Condition

# FLUX's resolution-dependent shift (Z-Image's scheduler uses the same constants): the log-shift
# mu grows linearly from 0.5 at 256 image tokens to 1.15 at 4096, so larger images spend more
# steps at high noise, where their global structure is decided.
BASE_SEQ_LEN, MAX_SEQ_LEN = 256, 4096
BASE_SHIFT, MAX_SHIFT = 0.5, 1.15


def shift_mu(seq_len: int) -> float:
    """The log time-shift for an image of ``seq_len`` tokens (FLUX's ``calculate_shift``)."""
    slope = (MAX_SHIFT - BASE_SHIFT) / (MAX_SEQ_LEN - BASE_SEQ_LEN)
    return BASE_SHIFT + slope * (seq_len - BASE_SEQ_LEN)


def shift_sigma(sigma: torch.Tensor, mu: float) -> torch.Tensor:
    """Move noise levels sigma = 1 - t towards noise: e^mu s / (1 + (e^mu - 1) s)."""
    return math.exp(mu) * sigma / (1 + (math.exp(mu) - 1) * sigma)


def drop_captions(cond: Condition, null_cap: torch.Tensor, drop: torch.Tensor) -> Condition:
    """Replace the captions where ``drop`` (N,) is true by the empty caption's features (L0, D)."""
    if not bool(drop.any()):
        return cond
    length = max(cond.cap.shape[1], null_cap.shape[0])
    cap = F.pad(cond.cap, (0, 0, 0, length - cond.cap.shape[1]))  # (N, L, D)
    null = F.pad(null_cap, (0, 0, 0, length - null_cap.shape[0])).to(cap)  # (L, D)
    cap = torch.where(drop[:, None, None], null, cap)  # (N, L, D)
    cap_lens = torch.where(drop, torch.full_like(cond.cap_lens, null_cap.shape[0]), cond.cap_lens)  # (N,)
    return Condition(cap, cap_lens, cond.ref)


class RectifiedFlow:
    """Flow-matching loss and Euler sampling around a velocity model.

    Args:
        model: ``model(x, t, cond) -> velocity``, same shape as x.
        null_cap: (L0, D) caption features of the empty caption: dropped captions and the
            unconditional branch of classifier-free guidance use it.
        cap_dropout: probability of training a sample on the empty caption (10%, as common for
            CFG since Imagen and SD; the paper does not publish its rate).
        logit_mean, logit_std: t is sampled as sigmoid(N(mean, std)), SD3's logit-normal; with
            mean 0 and std 1 the middle noise levels, the hardest to predict, get the most weight.
        patch_size: converts image size to token count for the resolution-dependent shift.
    """

    def __init__(
        self,
        model,
        null_cap: torch.Tensor,
        cap_dropout: float = 0.1,
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        patch_size: int = 2,
    ):
        self.model = model
        self.null_cap = null_cap
        self.cap_dropout = cap_dropout
        self.logit_mean, self.logit_std = logit_mean, logit_std
        self.patch_size = patch_size

    def seq_len(self, x: torch.Tensor) -> int:
        return (x.shape[-2] // self.patch_size) * (x.shape[-1] // self.patch_size)

    def sample_t(self, n: int, seq_len: int, generator: torch.Generator | None, device) -> torch.Tensor:
        """(n,) training timesteps: logit-normal noise level, shifted for the resolution."""
        z = torch.randn(n, generator=generator, device=generator.device if generator else "cpu")
        sigma = torch.sigmoid(self.logit_mean + self.logit_std * z)  # (n,) noise level
        return (1 - shift_sigma(sigma, shift_mu(seq_len))).to(device)  # (n,) t = 1 - sigma

    def loss(
        self, x1: torch.Tensor, cond: Condition, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow-matching MSE on a batch of data x1 (N, C, H, W).

        Returns:
            The mean loss (a scalar to backpropagate) and the per-sample loss (N,), detached.
        """
        n, gen_device = x1.shape[0], generator.device if generator else "cpu"
        t = self.sample_t(n, self.seq_len(x1), generator, x1.device)  # (N,)
        x0 = torch.randn(x1.shape, generator=generator, device=gen_device).to(x1)  # (N, C, H, W) noise
        drop = torch.rand(n, generator=generator, device=gen_device).to(x1.device) < self.cap_dropout
        cond = drop_captions(cond, self.null_cap.to(x1.device), drop)
        tb = t[:, None, None, None]
        xt = tb * x1 + (1 - tb) * x0  # (N, C, H, W)
        pred = self.model(xt, t, cond)  # (N, C, H, W)
        per_sample = ((pred.float() - (x1 - x0).float()) ** 2).mean(dim=(1, 2, 3))  # (N,)
        return per_sample.mean(), per_sample.detach()

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, cond: Condition, steps: int = 8, cfg: float = 4.0) -> torch.Tensor:
        """Euler integration from noise (t = 0) to data (t = 1) with classifier-free guidance.

        Guidance as released: ``v = v_cond + cfg * (v_cond - v_uncond)``; cfg = 0 turns it off.
        The noise schedule is uniform in sigma, then shifted for the resolution.
        """
        n = noise.shape[0]
        sigmas = shift_sigma(
            torch.linspace(1, 0, steps + 1, dtype=torch.float64), shift_mu(self.seq_len(noise))
        )
        uncond = drop_captions(
            cond, self.null_cap.to(noise.device), torch.ones(n, dtype=torch.bool, device=noise.device)
        )
        x = noise
        for i in range(steps):
            t = torch.full((n,), float(1 - sigmas[i]), device=noise.device, dtype=noise.dtype)  # (N,)
            v = self.model(x, t, cond)  # (N, C, H, W)
            if cfg != 0:
                v = v + cfg * (v - self.model(x, t, uncond))
            x = x + float(sigmas[i] - sigmas[i + 1]) * v  # dt = t_next - t = sigma_i - sigma_next
        return x
