"""Flow matching: the loss's convention, the timestep shift, caption dropout, the sampler."""

from __future__ import annotations

import torch

from engine.s3dit.flow import RectifiedFlow, drop_captions, shift_mu, shift_sigma
from engine.s3dit.model import Condition


class Oracle(torch.nn.Module):
    """Knows the data point x1: its exact velocity at x_t is (x1 - x_t) / (1 - t)."""

    def __init__(self, x1):
        super().__init__()
        self.x1 = x1

    def forward(self, x, t, cond):
        return (self.x1 - x) / (1 - t[:, None, None, None]).clamp_min(1e-6)


def test_an_exact_velocity_has_zero_loss_and_the_sampler_lands_on_the_data():
    x1 = torch.randn(3, 3, 8, 8)
    cond = Condition(torch.randn(3, 4, 16), torch.tensor([4, 2, 3]))
    null = torch.zeros(2, 16)

    class Velocity(torch.nn.Module):  # x_t = t x1 + (1-t) x0  =>  target x1 - x0
        def forward(self, x, t, cond):
            x0 = (x - t[:, None, None, None] * x1) / (1 - t[:, None, None, None])
            return x1 - x0

    flow = RectifiedFlow(Velocity(), null, cap_dropout=0.0)
    loss, per_sample = flow.loss(x1, cond, torch.Generator().manual_seed(0))
    assert per_sample.shape == (3,)
    assert float(loss) < 1e-8
    out = RectifiedFlow(Oracle(x1), null).sample(torch.randn(3, 3, 8, 8), cond, steps=8, cfg=0.0)
    torch.testing.assert_close(out, x1, atol=1e-4, rtol=1e-4)


def test_resolution_shift_moves_larger_images_towards_noise():
    assert shift_mu(256) == 0.5 and abs(shift_mu(4096) - 1.15) < 1e-12
    sigma = torch.tensor([0.25, 0.5, 0.75])
    small, large = shift_sigma(sigma, shift_mu(256)), shift_sigma(sigma, shift_mu(4096))
    assert (large > small).all() and (small > sigma).all()
    assert shift_sigma(torch.tensor([0.0, 1.0]), 1.0).tolist() == [0.0, 1.0]


def test_logit_normal_timesteps_are_in_range_and_seeded():
    flow = RectifiedFlow(None, torch.zeros(1, 4))
    a = flow.sample_t(1000, 64, torch.Generator().manual_seed(1), "cpu")
    b = flow.sample_t(1000, 64, torch.Generator().manual_seed(1), "cpu")
    assert torch.equal(a, b) and (a > 0).all() and (a < 1).all()
    assert 0.3 < float(a.median()) < 0.6  # logit-normal centred, slightly shifted towards noise


def test_caption_dropout_swaps_in_the_empty_caption():
    cond = Condition(torch.ones(3, 5, 4), torch.tensor([5, 3, 1]))
    null = torch.full((2, 4), 7.0)
    out = drop_captions(cond, null, torch.tensor([False, True, False]))
    assert out.cap_lens.tolist() == [5, 2, 1]
    assert torch.equal(out.cap[1, :2], null) and out.cap[1, 2:].abs().sum() == 0
    assert torch.equal(out.cap[0], cond.cap[0])
