"""The CLIP embedder: one open_clip model behind a small interface (paper section 2.2).

An :class:`Embedder` has ``encode_images``, ``encode_texts``, ``preprocess``, ``tokenizer``,
``embed_dim`` and ``model_id`` (the string stored with every embedding); vectors are float32 and
L2-normalised, so a dot product is a cosine. ``engine.vectors.model_specs.load_embedder`` makes one
from a spec (the embedded default, ``engine.vectors.default_embedder``, or any open_clip model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from engine import schema
from engine.profiling.image_batch import batch_images


class EmbedderError(ValueError):
    """A model spec that cannot be loaded; the message is one line meant for the user."""


@dataclass
class Embedder:
    """An open_clip model ready for inference, with its preprocessing and tokenizer.

    Vectors come back as float32 numpy arrays of shape (n, embed_dim), L2-normalised, so a dot
    product is a cosine similarity.
    """

    model: object  # open_clip CLIP / CustomTextCLIP in eval mode, towers frozen
    preprocess: Callable  # PIL image -> (3, H, W) float tensor
    tokenizer: Callable  # list[str] -> (n, context_length) int tensor
    embed_dim: int
    model_id: str  # recorded with every embedding: architecture @ weights # content hash
    device: str = "cpu"
    text_pad_id: int | None = None  # Hugging Face text towers mask padding, so it can be trimmed

    def preprocess_images(self, images: list) -> object:
        """PIL images -> one (n, 3, H, W) tensor in channels_last (the model's input)."""
        import torch

        if not images:
            size = self.model.visual.image_size
            h, w = (size, size) if isinstance(size, int) else size
            return torch.zeros((0, 3, h, w))
        return torch.stack([self.preprocess(im) for im in images])

    def start_image_forward(self, pixels):
        """Start the forward of a preprocessed (n, 3, H, W) batch; returns the vectors as a tensor
        on the device. On CUDA the call returns at once (kernels queue), so the caller can
        preprocess the next batch while this one runs; ``vectors_of`` on the result waits for it."""
        import torch

        on_cuda = self.device.startswith("cuda")
        if on_cuda:  # pinned host memory: the copy to the GPU does not block the CPU
            pixels = pixels.pin_memory()
        pixels = pixels.to(self.device, non_blocking=on_cuda).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.device):
            return self.model.encode_image(pixels, normalize=True)

    def encode_image_tensors(self, pixels) -> np.ndarray:
        """A preprocessed (n, 3, H, W) batch -> (n, embed_dim) unit vectors."""
        if pixels.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return vectors_of(self.start_image_forward(pixels))

    def encode_images(self, images: list) -> np.ndarray:
        """PIL images (any size, RGB) -> (n, embed_dim) float32 unit vectors."""
        return self.encode_image_tensors(self.preprocess_images(images))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Captions or queries -> (n, embed_dim) float32 unit vectors (cut at the context length)."""
        import torch

        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        tokens = self.tokenizer(list(texts))
        if self.text_pad_id is not None:  # trailing padding is masked out: drop the all-padding columns
            tokens = tokens[:, : max(1, int((tokens != self.text_pad_id).sum(dim=1).max()))]
        tokens = tokens.to(self.device)
        with torch.inference_mode(), autocast(self.device):
            x = self.model.encode_text(tokens, normalize=True)
        return vectors_of(x)


def autocast(device: str):
    """bf16 autocast on CUDA (fp16 where the card has no bf16); nothing on the CPU, where float32
    is both faster here and what the committed figures were measured with."""
    import contextlib

    import torch

    if not device.startswith("cuda"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def vectors_of(x) -> np.ndarray:
    """A (n, d) tensor of unit vectors (any device, any float type) -> float32 numpy, renormalised
    after a half-precision forward so a dot product stays a cosine."""
    import torch

    out = x.float().cpu().numpy()
    if x.dtype in (torch.float16, torch.bfloat16) and len(out):
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


IMAGE_BATCH = 32  # images per forward: ~20 MB of pixels; larger batches gained nothing on 2 cores
GPU_IMAGE_BATCH = 256  # on CUDA: large enough to keep a ViT-L-14 busy in bf16, small enough that
# eight actors sharing a GPU (engine.devices.GPUS_PER_ACTOR) fit a 24 GB card

TEXT_BATCH = 64  # captions per text forward, sorted by length so that each batch trims its padding


def encode_captions(
    encode: Callable[[list[str]], Sequence], captions: list[str], batch_size: int = TEXT_BATCH
) -> list:
    """``encode`` applied to many captions in batches of similar length; results in their order.

    Captions of similar length go together, so each batch trims its padding (less work); the order
    and the batches depend on the captions alone, so the results are the same on every run. Used
    for the embedder's caption vectors and the trainer's caption features.

    Args:
        encode: a batch of captions -> one result per caption (a vector, a feature tensor).
    """
    order = sorted(range(len(captions)), key=lambda i: (len(captions[i]), i))
    results: list = [None] * len(captions)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        for i, value in zip(rows, encode([captions[i] for i in rows]), strict=True):
            results[i] = value
    return results


def embed_batch(embedder: Embedder, batch: pa.Table, image_batch: int = IMAGE_BATCH) -> pa.Table:
    """The ``embeddings`` rows of a batch (``schema.IMAGE_BATCH`` in, ``schema.embeddings_schema``
    out), one per row in order.

    Each distinct image is embedded once (forwards of ``image_batch`` images), each row's caption
    once, and ``clip_score`` is their cosine in float32 before the float16 cast. An image that fails
    to preprocess gets a null ``image_vec`` and ``clip_score``; nothing raises for one image.
    """
    import torch

    images, image_of_row = batch_images(batch)
    dim = embedder.embed_dim
    image_vecs = np.full((len(images), dim), np.nan, dtype=np.float32)  # NaN: not embedded
    pixels, rows = [], []  # preprocessed images waiting for a forward (at most image_batch of them)
    running = None  # (rows, vectors) of the forward in flight: on CUDA it runs while we preprocess
    for i, image in enumerate(images):
        try:
            pixels.append(embedder.preprocess(image))
            rows.append(i)
        except Exception:  # one degenerate image must not fail the shard
            pass
        if len(pixels) == image_batch or (i == len(images) - 1 and pixels):
            if running is not None:
                image_vecs[running[0]] = vectors_of(running[1])
            running = (rows, embedder.start_image_forward(torch.stack(pixels)))
            pixels, rows = [], []
    if running is not None:
        image_vecs[running[0]] = vectors_of(running[1])
    captions = batch["caption"].to_pylist()
    text_vecs = np.zeros((0, dim), np.float32)
    if captions:
        text_vecs = np.stack(encode_captions(embedder.encode_texts, captions)).astype(np.float32)
    image_vec, clip_score = [], []
    for image, text_vec in zip(image_of_row.tolist(), text_vecs, strict=True):
        failed = np.isnan(image_vecs[image, 0])
        image_vec.append(None if failed else image_vecs[image].astype(np.float16))
        clip_score.append(None if failed else float(image_vecs[image] @ text_vec))
    vector = pa.list_(pa.float16(), dim)
    return pa.table(
        {
            "sample_id": batch["sample_id"],
            "image_id": batch["image_id"],
            "model_id": pa.array([embedder.model_id] * batch.num_rows, pa.string()),
            "image_vec": pa.array(image_vec, vector),
            "text_vec": pa.array(list(text_vecs.astype(np.float16)), vector),
            "clip_score": pa.array(clip_score, pa.float32()),
        },
        schema=schema.embeddings_schema(dim),
    )


def vectors(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed-size-list vector column -> (n, d) float32 (rows must not be null)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(array), -1)
