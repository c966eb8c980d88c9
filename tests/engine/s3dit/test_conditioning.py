"""Caption features (embedded MiniLM, any local HF model) and latents (pixels, a diffusers VAE)."""

from __future__ import annotations

import torch

from engine.s3dit.conditioning import (
    PixelLatents,
    TextEncoder,
    TextEncoderConfig,
    VaeLatents,
    minilm_path,
    pad_captions,
)


def test_the_embedded_minilm_gives_token_features_per_caption():
    encoder = TextEncoder()
    feats = encoder.encode(["a red apple", "", "a long caption about a cat sitting on a striped mat"])
    assert encoder.dim == 384
    assert [f.shape[0] for f in feats] == [5, 2, 14]  # [CLS] tokens [SEP]; padding removed
    assert all(f.shape[1] == 384 and torch.isfinite(f).all() for f in feats)
    # The same caption alone or in a batch: the same features (padding does not leak in).
    alone = encoder.encode(["a red apple"])[0]
    torch.testing.assert_close(alone, feats[0], atol=1e-5, rtol=1e-5)
    cap, lens = pad_captions(feats)
    assert cap.shape == (3, 14, 384) and lens.tolist() == [5, 2, 14] and cap[1, 2:].abs().sum() == 0


def test_a_local_causal_model_by_path_gives_its_penultimate_layer(tmp_path):
    """Any HF causal LM from a folder (the paper: Qwen3-4B, penultimate layer); a tiny random
    Qwen3 with the MiniLM tokenizer stands in for the 8 GB one."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

    tokenizer = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    config = Qwen3Config(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
    )
    torch.manual_seed(0)
    Qwen3Model(config).save_pretrained(tmp_path / "qwen")
    tokenizer.save_pretrained(tmp_path / "qwen")
    penultimate = TextEncoder(TextEncoderConfig(str(tmp_path / "qwen"), layer=-2))
    last = TextEncoder(TextEncoderConfig(str(tmp_path / "qwen"), layer=-1))
    a, b = penultimate.encode(["a small dog"])[0], last.encode(["a small dog"])[0]
    assert penultimate.dim == 64 and a.shape == b.shape == (5, 64)
    assert not torch.allclose(a, b)


def test_pixel_latents_are_the_image():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    latents = PixelLatents()
    assert torch.equal(latents.encode(x), x) and torch.equal(latents.decode(x), x)


def test_a_diffusers_vae_from_a_folder(tmp_path):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=32,
        scaling_factor=0.3611,
        shift_factor=0.1159,  # FLUX's values
    ).save_pretrained(tmp_path / "vae")
    vae = VaeLatents(str(tmp_path / "vae"))
    assert (vae.channels, vae.factor) == (4, 2)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = vae.encode(x)
    assert z.shape == (2, 4, 8, 8)
    assert torch.equal(z, vae.encode(x))  # the posterior mean: deterministic
    assert vae.decode(z).shape == x.shape
