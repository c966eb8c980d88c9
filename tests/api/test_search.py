"""GET /v1/search (text->image) and POST /v1/search (image->image) against the real FAISS index."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.catalog import run_sql
from engine.workspace import Workspace
from tests.api.conftest import assert_error


@pytest.fixture(scope="module")
def samples(workspace) -> list[dict]:
    sql = "SELECT sample_id, caption, uri FROM samples WHERE status = 'ok' ORDER BY sample_id"
    return run_sql(Workspace(workspace), sql).to_pylist()


def test_text_search_finds_a_sample_by_its_caption(client, samples):
    # the caption of one sample, as the query: its own image is among the best few
    wanted = samples[3]
    response = client.get("/v1/search", params={"text": wanted["caption"], "k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["target"] == "image" and [h["rank"] for h in body["hits"]] == [1, 2, 3, 4, 5]
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True)
    by_id = {s["sample_id"]: s for s in samples}
    for hit in body["hits"]:  # every hit carries its sample's caption and uri
        assert hit["caption"] == by_id[hit["sample_id"]]["caption"] and hit["uri"]


def test_text_to_text_search_puts_the_caption_first(client, samples):
    wanted = samples[5]
    body = client.get("/v1/search", params={"text": wanted["caption"], "k": 3, "target": "text"}).json()
    assert body["target"] == "text" and body["hits"][0]["caption"] == wanted["caption"]
    assert body["hits"][0]["score"] == pytest.approx(1.0, abs=0.01)


def test_image_search_puts_the_same_image_first(client, samples):
    wanted = samples[7]
    with open(wanted["uri"], "rb") as f:
        data = f.read()
    response = client.post("/v1/search", params={"k": 4}, content=data, headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert hits[0]["sample_id"] == wanted["sample_id"] and hits[0]["score"] > 0.99
    assert len(hits) == 4


def test_k_larger_than_the_index_returns_every_vector(client, samples):
    body = client.get("/v1/search", params={"text": "a picture", "k": 100}).json()
    assert len(body["hits"]) == len(samples)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"text": ""},
        {"text": "   "},
        {"text": "x" * 1001},
        {"text": "cat", "k": 0},
        {"text": "cat", "k": -1},
        {"text": "cat", "k": 101},  # above the service's max_k
        {"text": "cat", "k": 10**30},
        {"text": "cat", "k": "many"},
        {"text": "cat", "target": "audio"},
        {"text": "cat", "target": "../index"},
    ],
)
def test_bad_text_queries_are_422(client, params):
    assert_error(client.get("/v1/search", params=params), 422, "invalid_request")


def png_bytes(size: tuple[int, int], mode: str = "RGB", noise: bool = False) -> bytes:
    out = io.BytesIO()
    if noise:
        pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(out, format="PNG")
    else:
        Image.new(mode, size).save(out, format="PNG")
    return out.getvalue()


def test_bad_images_are_4xx(client):
    for data, code in (
        (b"", "invalid_request"),
        (b"GIF89a but not really", "invalid_image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "invalid_image"),
        (png_bytes((64, 64), noise=True)[:4000], "invalid_image"),  # truncated
        (np.random.default_rng(0).bytes(4096), "invalid_image"),
    ):
        response = client.post(
            "/v1/search", content=data, headers={"Content-Type": "application/octet-stream"}
        )
        assert_error(response, 422, code)


def test_a_decompression_bomb_is_refused_before_decoding(client):
    bomb = png_bytes((10_000, 6_000), mode="1")  # 60 MP of 1-bit pixels: ~70 kB compressed
    assert len(bomb) < 4 << 20
    error = assert_error(client.post("/v1/search", content=bomb), 422, "invalid_image")
    assert "decompression_bomb" in error["message"]


def test_an_upload_over_the_limit_is_413(client):
    big = b"\x89PNG" + b"\x00" * (4 << 20)  # the tests' max_upload_bytes is 4 MiB
    assert_error(client.post("/v1/search", content=big), 413, "too_large")

    def chunks():  # no Content-Length: counted while it streams
        for _ in range(5):
            yield b"\x00" * (1 << 20)

    assert_error(client.post("/v1/search", content=chunks()), 413, "too_large")


def test_models_lists_the_active_model_and_refuses_unknown_ones(client, anon):
    listed = client.get("/v1/models")
    assert listed.status_code == 200, listed.text
    body = listed.json()
    (model,) = body["models"]
    assert body["active"] == model["key"] and model["active"] and model["dim"] == 256
    assert model["samples"] > 0 and model["model_id"].startswith("EffLite0-MiniLM-L6@")
    assert_error(client.put("/v1/models/active", json={"model": "no-such-model"}), 404, "not_found")
    assert_error(anon.get("/v1/models"), 401)
    found = client.get("/v1/search", params={"text": "a bird", "k": 3}).json()
    assert found["model_id"] == model["model_id"]
