"""The dashboard's routes over real HTTP on a copy of the curated workspace: the static page, the
explorer's /v1/samples (counts checked against the tables, read here with pyarrow), sample detail,
thumbnails (made once, cached in the workspace, reused), concept search and gaps, manifest weights.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from api.main import create_app
from api.thumbnails import THUMB_DIR, THUMB_SIDE, thumbnail_rel
from engine.workspace import Workspace
from tests.api.conftest import assert_error, auth, serve, service_settings
from tests.curated import copy_workspace

UNKNOWN_ID = "0" * 32  # well formed, no such sample


@pytest.fixture(scope="module")
def dash_ws(request, tmp_path_factory) -> Workspace:
    """A copy of the curated workspace (the tests write thumbnails and manifests into it).
    ZCURATE_TEST_CURATED_WORKSPACE names a curated workspace to copy instead (to iterate faster)."""
    source = os.environ.get("ZCURATE_TEST_CURATED_WORKSPACE")
    ws = Workspace(source) if source and os.path.isdir(source) else request.getfixturevalue("curated_ws")
    copy = copy_workspace(ws, str(tmp_path_factory.mktemp("dashboard") / "ws"))
    shutil.rmtree(copy.path(THUMB_DIR), ignore_errors=True)  # every thumbnail made by these tests
    return copy


@pytest.fixture(scope="module")
def dash_url(dash_ws, key_file) -> Iterator[str]:
    os.environ.pop("ZCURATE_API_KEYS", None)  # only the keys the tests give
    with serve(create_app(dash_ws.root, service_settings(key_file))) as url:
        yield url


@pytest.fixture(scope="module")
def dash(dash_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=dash_url, headers=auth("reader"), timeout=60) as c:
        yield c


# --- the expected answers, from the Parquet tables with pyarrow (no DuckDB, no API code) ----------


def by_id(ws: Workspace, table: str, columns: list[str]) -> dict[str, dict]:
    return {r["sample_id"]: r for r in ws.read_table(table, ["sample_id", *columns]).to_pylist()}


@pytest.fixture(scope="module")
def rows(dash_ws) -> dict[str, dict]:
    """sample_id -> every column the explorer filters on, for the usable samples."""
    ws = dash_ws
    samples = by_id(ws, "samples", ["status", "caption"])
    signals = by_id(ws, "signals", ["width", "height", "blur"])
    clip = by_id(ws, "embeddings", ["clip_score"])
    nsfw = by_id(ws, "safety", ["nsfw_score"])
    ocr = by_id(ws, "ocr", ["ocr_text", "text_area_ratio"])
    dedup = by_id(ws, "dedup", ["community_id"])
    sizes: dict[str, int] = {}
    for r in dedup.values():
        sizes[r["community_id"]] = sizes.get(r["community_id"], 0) + 1
    out = {}
    for sid, s in samples.items():
        if s["status"] != "ok" or sid not in signals:
            continue
        community = dedup.get(sid, {}).get("community_id")
        out[sid] = {
            **s,
            **signals[sid],
            "clip_score": clip.get(sid, {}).get("clip_score"),
            "nsfw_score": nsfw.get(sid, {}).get("nsfw_score"),
            "ocr_text": ocr.get(sid, {}).get("ocr_text"),
            "text_area_ratio": ocr.get(sid, {}).get("text_area_ratio"),
            "community_id": community,
            "community_size": sizes.get(community, 0),
        }
    return out


def subtree_ids(ws: Workspace, synset: str) -> set[str]:
    concepts = ws.read_table("concepts", ["concept_id", "synset"]).to_pylist()
    concept_id = next(c["concept_id"] for c in concepts if c["synset"] == synset)
    below = {
        a["concept_id"]
        for a in ws.read_table("concept_ancestors", ["concept_id", "ancestor_id"]).to_pylist()
        if a["ancestor_id"] == concept_id
    }
    return {
        t["sample_id"]
        for t in ws.read_table("tags", ["sample_id", "concept_id"]).to_pylist()
        if t["concept_id"] in below
    }


def matching(rows: dict[str, dict], ws: Workspace, params: dict) -> set[str]:
    """The sample ids a filter should give, computed row by row."""
    keep = set()
    tagged = subtree_ids(ws, params["concept"]) if "concept" in params else None
    for sid, r in rows.items():
        ok = True
        for key, value in params.items():
            column, _, bound = key.rpartition("_")
            if bound in ("min", "max"):
                x = r[column]
                ok &= x is not None and (x >= value if bound == "min" else x <= value)
            elif key == "has_text":
                ok &= r["ocr_text"] is not None and (r["ocr_text"] != "") == (value == "true")
            elif key == "community":
                ok &= r["community_id"] == value
            elif key == "near_duplicate":
                ok &= (r["community_size"] > 1) == (value == "true")
            elif key == "concept":
                ok &= sid in tagged
            elif key == "caption":
                ok &= value.lower() in (r["caption"] or "").lower()
        if ok:
            keep.add(sid)
    return keep


def fetch_all(dash: httpx.Client, params: dict) -> tuple[int, list[dict]]:
    """(total, every card) for a filter, page by page."""
    cards, offset = [], 0
    while True:
        page = dash.get("/v1/samples", params={**params, "limit": 50, "offset": offset})
        assert page.status_code == 200, page.text
        body = page.json()
        cards += body["samples"]
        offset += 50
        if offset >= body["total"]:
            return body["total"], cards


# --- tests ----------------------------------------------------------------------------------------


def test_the_page_loads_without_a_key_and_holds_no_data(dash_url):
    with httpx.Client(base_url=dash_url, timeout=30) as anon:
        page = anon.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert (
            'src="/dashboard/app.js"' in page.text
            and "http://" not in page.text
            and "https://" not in page.text
        )
        for name, kind in (
            ("app.js", "text/javascript"),
            ("chart.js", "text/javascript"),
            ("style.css", "text/css"),
        ):
            asset = anon.get(f"/dashboard/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind), name
            assert "https://" not in asset.text, name  # nothing from a CDN
        for bad in ("/dashboard/missing.js", "/dashboard/..%2Fmain.py", "/dashboard/index.py"):
            assert anon.get(bad).status_code in (404, 422), bad


@pytest.mark.parametrize(
    "path",
    [
        "/v1/samples",
        f"/v1/samples/{UNKNOWN_ID}",
        f"/v1/thumbnails/{UNKNOWN_ID}",
        "/v1/communities",
        "/v1/concepts?q=dog",
        "/v1/concepts/gaps",
        "/v1/manifests/0123456789abcdef/weights",
    ],
)
def test_every_new_data_route_needs_a_key(dash_url, path):
    with httpx.Client(base_url=dash_url, timeout=30) as anon:
        assert_error(anon.get(path), 401, "unauthorized")
        assert_error(anon.get(path, headers={"Authorization": "Bearer not-a-key"}), 401, "unauthorized")


def test_no_filter_lists_every_usable_sample(dash, rows):
    total, cards = fetch_all(dash, {})
    assert total == len(rows) == len(cards) and {c["sample_id"] for c in cards} == set(rows)
    for card in cards:
        r = rows[card["sample_id"]]
        assert card["caption"] == r["caption"] and card["width"] == r["width"]
        assert card["clip_score"] == pytest.approx(r["clip_score"])
        assert card["has_text"] == (None if r["ocr_text"] is None else r["ocr_text"] != "")


def filter_cases(rows: dict[str, dict], ws: Workspace) -> list[dict]:
    """Filters over values taken from the data (so each selects some samples, not all)."""
    clip = sorted(r["clip_score"] for r in rows.values() if r["clip_score"] is not None)
    nsfw = sorted(r["nsfw_score"] for r in rows.values() if r["nsfw_score"] is not None)
    blur = sorted(r["blur"] for r in rows.values())
    communities = sorted({(r["community_size"], r["community_id"]) for r in rows.values()})
    tags = ws.read_table("tags", ["sample_id", "concept_id"]).to_pylist()
    concepts = {
        c["concept_id"]: c["synset"] for c in ws.read_table("concepts", ["concept_id", "synset"]).to_pylist()
    }
    counts: dict[int, int] = {}
    for t in tags:
        counts[t["concept_id"]] = counts.get(t["concept_id"], 0) + 1
    top_concept = concepts[max(counts, key=lambda c: (counts[c], -c))]
    return [
        {"clip_score_min": clip[len(clip) // 2]},
        {"clip_score_min": clip[len(clip) // 4], "clip_score_max": clip[3 * len(clip) // 4]},
        {"has_text": "true"},
        {"has_text": "false", "nsfw_score_max": nsfw[len(nsfw) // 2]},
        {"blur_min": blur[len(blur) // 3], "width_min": 200, "height_max": 1000},
        {"concept": top_concept},
        {"concept": "entity.n.01", "has_text": "true"},
        {"community": communities[-1][1]},
        {"near_duplicate": "true"},
        {"near_duplicate": "false", "caption": "the"},
    ]


def test_filters_give_the_counts_of_the_tables(dash, dash_ws, rows):
    for params in filter_cases(rows, dash_ws):
        expected = matching(rows, dash_ws, params)
        total, cards = fetch_all(dash, params)
        assert 0 < total < len(rows) or params.get("near_duplicate") == "false", (params, total)
        assert total == len(expected) and {c["sample_id"] for c in cards} == expected, params


def test_sorting_and_pages(dash, rows):
    body = dash.get("/v1/samples", params={"sort": "-clip_score", "limit": 500}).json()
    scores = [c["clip_score"] for c in body["samples"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == len(rows)
    pages = [
        dash.get("/v1/samples", params={"limit": 7, "offset": o}).json()["samples"] for o in range(0, 21, 7)
    ]
    ids = [c["sample_id"] for page in pages for c in page]
    assert ids == sorted(rows)[:21]
    past = dash.get("/v1/samples", params={"offset": 10_000}).json()
    assert past["total"] == len(rows) and past["samples"] == []


def test_a_sample_in_full(dash, dash_ws, rows):
    with_text = sorted(sid for sid, r in rows.items() if r["ocr_text"])
    assert with_text, "the curated workspace has images with text"
    sid = with_text[0]
    body = dash.get(f"/v1/samples/{sid}").json()
    assert body["sample"]["caption"] == rows[sid]["caption"] and body["sample"]["status"] == "ok"
    assert body["signals"]["ocr_text"] == rows[sid]["ocr_text"] and "ocr_lines" not in body["signals"]
    assert body["dedup"]["community_id"] == rows[sid]["community_id"]
    assert body["dedup"]["community_size"] == rows[sid]["community_size"]
    tags = [
        t
        for t in dash_ws.read_table("tags", ["sample_id", "concept_id"]).to_pylist()
        if t["sample_id"] == sid
    ]
    assert sorted(t["concept_id"] for t in body["tags"]) == sorted(t["concept_id"] for t in tags)


def test_a_thumbnail_is_made_once_and_kept_in_the_workspace(dash, dash_ws, rows):
    sid = max(rows, key=lambda s: rows[s]["width"] * rows[s]["height"])  # the biggest image: it is scaled
    path = dash_ws.path(thumbnail_rel(sid))
    assert not os.path.exists(path)
    first = dash.get(f"/v1/thumbnails/{sid}")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert os.path.isfile(path) and path.startswith(dash_ws.path(THUMB_DIR, sid[:2]))
    with open(path, "rb") as f:
        assert f.read() == first.content
    image = Image.open(io.BytesIO(first.content))
    w, h = rows[sid]["width"], rows[sid]["height"]
    assert max(image.size) == min(THUMB_SIDE, max(w, h))
    assert image.size[0] / image.size[1] == pytest.approx(w / h, rel=0.02)
    stamp = os.stat(path).st_mtime_ns
    again = dash.get(f"/v1/thumbnails/{sid}")
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    assert os.stat(path).st_mtime_ns == stamp  # served from the cache, not made again
    assert "max-age" in again.headers["cache-control"]
    current = dash.get(f"/v1/thumbnails/{sid}", headers={"If-None-Match": first.headers["etag"]})
    assert current.status_code == 304 and current.content == b""
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.endswith(".tmp")]  # no half-written file


@pytest.mark.parametrize(
    "path, status",
    [
        (f"/v1/samples/{UNKNOWN_ID}", 404),
        (f"/v1/thumbnails/{UNKNOWN_ID}", 404),
        ("/v1/samples/not-an-id", 422),
        ("/v1/thumbnails/ABC", 422),
        ("/v1/samples?concept=no_such.n.01", 404),
        ("/v1/samples?concept=99999999999999999999999", 404),
        ("/v1/samples?limit=0", 422),
        ("/v1/samples?limit=100000", 422),
        ("/v1/samples?offset=-1", 422),
        ("/v1/samples?clip_score_min=abc", 422),
        ("/v1/samples?clip_score_min=nan", 422),
        ("/v1/samples?sort=caption", 422),
        ("/v1/samples?community=xyz", 422),
        ("/v1/samples?has_text=perhaps", 422),
        ("/v1/samples?concept=dog;drop", 422),
        ("/v1/communities?limit=-1", 422),
        ("/v1/concepts?q=", 422),
        ("/v1/concepts?q=%20", 422),
        ("/v1/concepts/gaps?depth=-1", 422),
        ("/v1/manifests/0123456789abcdef/weights", 404),
        ("/v1/manifests/xyz/weights", 422),
    ],
)
def test_bad_ids_and_parameters(dash, path, status):
    assert_error(dash.get(path), status)


def test_concept_search_and_gaps(dash, dash_ws):
    found = dash.get("/v1/concepts", params={"q": "Dog", "limit": 50}).json()
    names = {
        c["concept_id"]: c
        for c in dash_ws.read_table("concepts", ["concept_id", "synset", "lemmas"]).to_pylist()
    }
    assert found[0]["synset"] == "dog.n.01" and len(found) == 50
    for r in found:
        c = names[r["concept_id"]]
        assert "dog" in c["synset"] or any("dog" in lemma.lower() for lemma in c["lemmas"] or []), c
    gaps = dash.get("/v1/concepts/gaps", params={"depth": 6, "top": 5}).json()
    depth6 = [
        c for c in dash_ws.read_table("concepts", ["concept_id", "depth"]).to_pylist() if c["depth"] == 6
    ]
    assert gaps["concepts"] == len(depth6) and len(gaps["over"]) == len(gaps["under"]) == 5
    over = [g["ratio"] for g in gaps["over"]]
    under = [g["ratio"] for g in gaps["under"]]
    assert over == sorted(over, reverse=True) and under == sorted(under) and over[0] > 1 > under[0]


def test_communities_match_the_dedup_table(dash, rows):
    body = dash.get("/v1/communities", params={"limit": 100}).json()
    sizes = {r["community_id"]: r["community_size"] for r in rows.values() if r["community_size"] > 1}
    assert body["communities"] == len(sizes) and body["samples"] == sum(sizes.values())
    assert {c["community_id"]: c["n_samples"] for c in body["largest"]} == sizes


def test_manifest_weights_histogram(dash_url, dash_ws):
    with httpx.Client(base_url=dash_url, headers=auth("writer"), timeout=120) as writer:
        manifest = writer.post("/v1/manifests", json={"stage": "sft"}).json()
        for _ in range(600):
            status = writer.get(f"/v1/manifests/{manifest['id']}").json()
            if status["status"] in ("ready", "failed"):
                break
            time.sleep(0.2)
        assert status["status"] == "ready", status
        weights = writer.get(f"/v1/manifests/{manifest['id']}/weights").json()
    table = pq.read_table(dash_ws.path("manifests", "sft", f"{manifest['id']}.parquet"), columns=["weight"])
    w = table["weight"].to_numpy()
    assert weights["count"] == sum(weights["counts"]) == len(w) and len(weights["edges"]) == 21
    assert weights["edges"][0] == pytest.approx(w.min()) and weights["edges"][-1] == pytest.approx(w.max())
    edges = weights["edges"]
    for i, n in enumerate(weights["counts"]):
        upper = (w <= edges[i + 1] + 1e-9) if i == len(edges) - 2 else (w < edges[i + 1] - 1e-9)
        assert n == int(np.sum((w >= edges[i] - 1e-9) & upper)), i
