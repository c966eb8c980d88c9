"""Held-out validation loss: flow-matching loss on a fixed set, at fixed timesteps, with fixed noise.

The loss a trainer logs moves with the batch drawn, the timesteps sampled and the noise; none of
that says whether the model got better. Here every term is fixed: the validation manifest's images
(read once, as its buckets say), ``timesteps`` evenly spaced noise levels ``t_k = (k + 1/2) / K``
(no resolution shift, so runs at different sizes stay comparable), and one noise tensor per image
and timestep drawn from :data:`VALIDATION_SEED`, independent of the training seed. Two models (two
arms of an experiment, two checkpoints of a run) are therefore scored on exactly the same terms
(SD3's scaling study used such a loss and found it tracks human preference and GenEval).

Besides ``val_loss`` (true captions) the set is scored with a wrong caption per image (another row's
caption, a fixed derangement): ``val_gap = val_loss_wrong_caption - val_loss`` is what the caption
is worth to the model. A model that ignores the text has a gap of 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from engine.curation.manifest import ManifestError
from engine.profiling.ingest import Reject, read_sample_image
from engine.s3dit.conditioning import PixelLatents, TextEncoder, VaeLatents, pad_captions
from engine.s3dit.data import read_manifest, resize_crop, to_tensor
from engine.s3dit.model import Condition
from engine.vectors.embedder import encode_captions

VALIDATION_SEED = 20_251_127  # the noise of every validation term; the same for every run
DEFAULT_TIMESTEPS = 5
EVAL_BATCH = 64  # images per forward pass


@dataclass
class BucketSet:
    """The validation images of one bucket: latents, caption features and fixed noise."""

    x1: torch.Tensor  # (N, C, h, w) latents of the images
    noise: torch.Tensor  # (K, N, C, h, w): one noise tensor per timestep and image
    true_caps: list[torch.Tensor]  # per image, (L, D) features of its caption
    wrong_caps: list[torch.Tensor]  # per image, (L, D) features of another row's caption


@dataclass
class ValidationSet:
    """A fixed validation set; :func:`validation_loss` scores a model on it."""

    buckets: list[BucketSet]
    timesteps: torch.Tensor  # (K,) t in (0, 1): 0 is noise, 1 the image
    images: int  # images read
    unreadable: list[str]  # sample_ids whose image could not be read (left out)


def wrong_caption_order(captions: list[str]) -> list[int]:
    """For each row, the index of a row whose caption differs (the next such row, cyclically).

    Raises:
        ManifestError: every row has the same caption (no wrong caption exists).
    """
    n = len(captions)
    order = []
    for i, caption in enumerate(captions):
        j = next((k % n for k in range(i + 1, i + n) if captions[k % n] != caption), None)
        if j is None:
            raise ManifestError("the validation manifest needs at least two different captions")
        order.append(j)
    return order


def load_validation(
    location: str | pa.Table,
    encoder: TextEncoder,
    latents: PixelLatents | VaeLatents,
    timesteps: int = DEFAULT_TIMESTEPS,
    name: str | None = None,
) -> ValidationSet:
    """Read a validation manifest (``schema.MANIFEST_REQUIRED`` columns; weights are ignored), or
    take its rows as a table (``engine.s3dit.holdout.held_out_rows``; ``name`` says where from).

    Rows are taken in ``sample_id`` order, so the set and its noise do not depend on the file's
    row order. Raises ManifestError when the manifest is unreadable or no image can be read.
    """
    if isinstance(location, str):
        name, location = name or location, read_manifest(location)
    table = location.sort_by("sample_id")
    rows = table.select(["sample_id", "uri", "caption", "bucket_h", "bucket_w"]).to_pylist()
    images, kept, unreadable = [], [], []
    for row in rows:
        try:
            images.append(
                to_tensor(resize_crop(read_sample_image(row["uri"]), row["bucket_h"], row["bucket_w"]))
            )
            kept.append(row)
        except Reject:
            unreadable.append(row["sample_id"])
    if len(kept) < 2:
        raise ManifestError(f"validation set ({name}): fewer than two readable images")
    captions = [r["caption"] or "" for r in kept]
    wrong = wrong_caption_order(captions)
    distinct = sorted(set(captions))
    features = dict(zip(distinct, encode_captions(encoder.encode, distinct), strict=True))  # batched
    generator = torch.Generator().manual_seed(VALIDATION_SEED)
    buckets = []
    for size in sorted({(r["bucket_h"], r["bucket_w"]) for r in kept}):
        idx = [i for i, r in enumerate(kept) if (r["bucket_h"], r["bucket_w"]) == size]
        x1 = latents.encode(torch.stack([images[i] for i in idx])).cpu()
        noise = torch.randn((timesteps, *x1.shape), generator=generator)
        true_caps = [features[captions[i]] for i in idx]
        wrong_caps = [features[captions[wrong[i]]] for i in idx]
        buckets.append(BucketSet(x1, noise, true_caps, wrong_caps))
    steps = torch.tensor([(k + 0.5) / timesteps for k in range(timesteps)], dtype=torch.float32)
    return ValidationSet(buckets, steps, len(kept), unreadable)


@torch.no_grad()
def bucket_losses(model, bucket: BucketSet, t: float, noise: torch.Tensor, caps: list[torch.Tensor]):
    """(N,) flow-matching loss of each image of a bucket at noise level ``t``."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, bucket.x1.shape[0], EVAL_BATCH):
        x1 = bucket.x1[start : start + EVAL_BATCH].to(device)
        x0 = noise[start : start + EVAL_BATCH].to(device)
        cap, cap_lens = pad_captions(caps[start : start + EVAL_BATCH])
        cond = Condition(cap.to(device), cap_lens.to(device))
        tt = torch.full((x1.shape[0],), t, device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pred = model(t * x1 + (1 - t) * x0, tt, cond)
        out.append(((pred.float() - (x1 - x0).float()) ** 2).mean(dim=(1, 2, 3)).cpu())
    return torch.cat(out)


def validation_loss(model, vset: ValidationSet) -> dict:
    """Score ``model`` on the set: the mean loss over every (image, timestep) with the true and
    with the wrong captions, their gap, and the true-caption loss per timestep."""
    was_training = model.training
    model.eval()
    try:
        per_t_true, per_t_wrong = [], []
        for k, t in enumerate(vset.timesteps.tolist()):
            true = torch.cat([bucket_losses(model, b, t, b.noise[k], b.true_caps) for b in vset.buckets])
            wrong = torch.cat([bucket_losses(model, b, t, b.noise[k], b.wrong_caps) for b in vset.buckets])
            per_t_true.append(float(true.double().mean()))
            per_t_wrong.append(float(wrong.double().mean()))
    finally:
        model.train(was_training)
    loss, wrong_loss = float(np.mean(per_t_true)), float(np.mean(per_t_wrong))
    return {
        "val_loss": loss,
        "val_loss_wrong_caption": wrong_loss,
        "val_gap": wrong_loss - loss,
        "val_loss_by_t": dict(zip((round(t, 4) for t in vset.timesteps.tolist()), per_t_true, strict=True)),
    }
