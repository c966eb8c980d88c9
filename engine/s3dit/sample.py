"""Images from a trained checkpoint (DiT's ``sample.py``): load it, then run the Euler sampler.

:func:`load_for_sampling` rebuilds what ``engine.s3dit.train`` saved in a checkpoint (the model's
config and EMA or raw weights, the text encoder, the latents); :func:`sample_images` draws images
for prompts with classifier-free guidance, the same images for the same seed.
"""

from __future__ import annotations

import torch

from engine.s3dit.conditioning import TextEncoder, TextEncoderConfig, load_latents, pad_captions
from engine.s3dit.flow import RectifiedFlow
from engine.s3dit.model import Condition, S3DiT, S3DiTConfig


def load_for_sampling(path: str, device: str = "cpu", use_ema: bool = True) -> dict:
    """A trained checkpoint's model (EMA weights by default), text encoder, latents and flow."""
    ckpt = torch.load(path, map_location=device, weights_only=False)
    model = S3DiT(
        S3DiTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["model_config"].items()})
    )
    model.load_state_dict(ckpt["ema" if use_ema else "model"])
    model = model.to(device).eval()
    text = ckpt["text_encoder"]
    encoder = TextEncoder(TextEncoderConfig(text["path"], text["layer"]), "cpu")
    latents = load_latents(ckpt["latents"].get("path"), device)
    flow = RectifiedFlow(model, encoder.encode([""])[0], patch_size=model.config.patch_size)
    return {
        "model": model,
        "encoder": encoder,
        "latents": latents,
        "flow": flow,
        "image_size": ckpt["image_size"],
    }


@torch.no_grad()
def sample_images(
    loaded: dict, prompts: list[str], steps: int, cfg: float, seed: int, height: int, width: int
) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] for the prompts; same seed, same images."""
    latents, flow, device = loaded["latents"], loaded["flow"], next(loaded["model"].parameters()).device
    cap, cap_lens = pad_captions(loaded["encoder"].encode(prompts))
    shape = (len(prompts), latents.channels, height // latents.factor, width // latents.factor)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)
    x = flow.sample(noise, Condition(cap.to(device), cap_lens.to(device)), steps, cfg)
    return latents.decode(x).cpu()
