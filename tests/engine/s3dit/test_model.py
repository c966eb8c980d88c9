"""The S3-DiT network: shapes per preset, parameter counts, fidelity to diffusers' Z-Image."""

from __future__ import annotations

import pytest
import torch

from engine.s3dit.diffusers_weights import convert_diffusers_state_dict
from engine.s3dit.model import (
    CPU_PRESETS,
    Condition,
    S3DiT,
    S3DiT_models,
    S3DiTConfig,
    build_model,
)


def random_condition(n: int, dim: int, lens: list[int], seed: int = 0) -> Condition:
    g = torch.Generator().manual_seed(seed)
    cap = torch.randn(n, max(lens), dim, generator=g)
    for i, length in enumerate(lens):
        cap[i, length:] = 0
    return Condition(cap, torch.tensor(lens))


@pytest.mark.parametrize("preset", CPU_PRESETS)
def test_forward_and_backward_shapes(preset):
    torch.manual_seed(0)
    model = build_model(preset)
    x = torch.randn(2, 3, 32, 24)  # not square: rows and columns must not be swapped
    cond = random_condition(2, model.config.cap_feat_dim, [3, 40])
    out = model(x, torch.rand(2), cond)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    # Zero-initialised output layer: the untrained model predicts exactly zero velocity.
    assert out.abs().max() == 0
    out.sum().backward()
    assert model.final_layer.linear.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("preset", CPU_PRESETS)
def test_image_to_image_rows_take_a_reference(preset):
    torch.manual_seed(0)
    model = build_model(preset)
    with torch.no_grad():  # leave zero-init so the output depends on the inputs
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    x, ref = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    cond = random_condition(2, model.config.cap_feat_dim, [5, 9])
    t = torch.rand(2)
    plain = model(x, t, cond)
    with_ref = model(x, t, Condition(cond.cap, cond.cap_lens, ref))
    assert with_ref.shape == x.shape
    assert not torch.allclose(plain, with_ref)


def test_padding_beyond_a_caption_does_not_change_its_output():
    """Batch padding is masked: a sample's output is the same alone or next to a longer caption."""
    torch.manual_seed(0)
    model = build_model("S3DiT-T/2")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x, t = torch.randn(2, 3, 16, 16), torch.rand(2)
    cond = random_condition(2, 384, [4, 70])
    both = model(x, t, cond)
    alone = model(x[:1], t[:1], Condition(cond.cap[:1, :4], cond.cap_lens[:1]))
    torch.testing.assert_close(both[:1], alone, atol=1e-5, rtol=1e-5)


def test_reference_size_is_the_released_6_15b_model():
    """Counted on the meta device: no memory is allocated."""
    with torch.device("meta"):
        model = build_model("S3DiT-6B/2")
    n = sum(p.numel() for p in model.parameters())
    assert n == 6_154_908_736  # the released transformer's count (diffusers' model at its defaults)
    cfg = model.config
    assert (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.dim // cfg.n_heads) == (30, 3840, 30, 128)
    assert model.layers[0].ffn.w2.in_features == 10240


def test_presets_grow_in_size():
    counts = []
    for name in [n for n in S3DiT_models if n.endswith("/2")]:
        with torch.device("meta"):
            counts.append(sum(p.numel() for p in build_model(name).parameters()))
    assert counts == sorted(counts)
    assert counts[0] < 5_000_000  # the smallest trains on a CPU


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown preset"):
        build_model("S3DiT-XXL/2")


def test_equal_outputs_to_diffusers_zimage_with_ragged_captions():
    """Fidelity: diffusers' ZImageTransformer2DModel at the same small config, its weights copied
    into ours, gives the same output (float32)."""
    from diffusers import ZImageTransformer2DModel

    torch.manual_seed(0)
    theirs = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=4,
        dim=128,
        n_layers=3,
        n_refiner_layers=2,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=48,
        axes_dims=[16, 24, 24],
        axes_lens=[1024, 512, 512],
    ).eval()
    with torch.no_grad():  # random weights everywhere, gates and pad tokens included
        for p in theirs.parameters():
            p.normal_(0, 0.1)
    ours = S3DiT(
        S3DiTConfig(dim=128, n_layers=3, n_heads=2, in_channels=4, cap_feat_dim=48, axes_dims=(16, 24, 24))
    )
    ours.load_state_dict(convert_diffusers_state_dict(theirs.state_dict()), strict=True)
    ours.eval()

    lens = [5, 37, 64, 1]  # under, over, exactly a multiple of 32, and a single token
    x = torch.randn(len(lens), 4, 16, 12)  # 48 patches: the image is padded too
    t = torch.rand(len(lens))
    cond = random_condition(len(lens), 48, lens, seed=1)
    with torch.no_grad():
        expected = theirs(
            [xi[:, None] for xi in x],  # diffusers takes (C, F, H, W) per sample
            t,
            [cond.cap[i, :n] for i, n in enumerate(lens)],
            return_dict=False,
        )[0]
        expected = torch.stack([e[:, 0] for e in expected])
        got = ours(x, t, cond)
    assert expected.abs().max() > 1  # a real signal, not zeros
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = build_model("S3DiT-T/2")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    x, t, cond = torch.randn(2, 3, 16, 16), torch.rand(2), random_condition(2, 384, [3, 8])
    model(x, t, cond).square().mean().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.gradient_checkpointing = True
    model(x, t, cond).square().mean().backward()
    for a, p in zip(plain, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)
