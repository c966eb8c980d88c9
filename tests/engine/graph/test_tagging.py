"""Tagging on real captions: openclipart titles/keywords and hand-written captions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from engine import schema
from engine.catalog import refresh_catalog, run_sql
from engine.graph.concept_graph import GraphConfig, ancestor_distances, load_graph, prune_graph
from engine.graph.concept_index import calibrate_threshold, unseen_precision
from engine.graph.concept_queries import concept_neighbourhood, representation_gaps, subtree_samples
from engine.graph.matching import build_matcher, normalize_tokens
from engine.graph.tagging import tag_workspace, tags_up_to_date
from engine.graph.zero_shot import caption_half
from engine.profiling.openclipart_source import OPENCLIPART_ROOT, openclipart_caption
from engine.workspace import Workspace


@pytest.fixture(scope="module")
def graph():
    return load_graph()


@pytest.fixture(scope="module")
def matcher(graph):
    return build_matcher(graph, prune_graph(graph, GraphConfig()).kept)


def tags_of(matcher, graph, text: str) -> list[str]:
    return [graph.nodes[m.concept_id]["synset"] for m in matcher.match(text)]


def openclipart(path: str) -> str:
    return openclipart_caption(Path(OPENCLIPART_ROOT, "svg", path).read_bytes())


def test_normalisation_is_the_same_for_captions_and_lemmas():
    assert normalize_tokens("Children's T-Shirt, ICE_cream!") == ["children", "t", "shirt", "ice", "cream"]
    assert normalize_tokens("jack-o'-lantern") == ["jack", "o", "lantern"]


def test_a_rainbow_lorikeet_rolls_up_to_parrot_and_bird(matcher, graph):
    (match,) = matcher.match("A rainbow lorikeet.")
    assert graph.nodes[match.concept_id]["synset"] == "rainbow_lorikeet.n.01"  # the longest match
    up = {graph.nodes[a]["synset"] for a in ancestor_distances(graph, [match.concept_id])[match.concept_id]}
    assert {"lorikeet.n.01", "parrot.n.01", "bird.n.01"} <= up
    assert tags_of(matcher, graph, "a lorikeet on a branch")[0] == "lorikeet.n.01"


def test_a_river_bank_is_not_a_financial_institution(matcher, graph):
    (bank, river) = matcher.match("a bank of the river")
    assert graph.nodes[bank.concept_id]["synset"] == "bank.n.01"  # sloping land beside water
    up = {graph.nodes[a]["synset"] for a in ancestor_distances(graph, [bank.concept_id])[bank.concept_id]}
    assert "financial_institution.n.01" not in up and "depository_financial_institution.n.01" not in up
    assert graph.nodes[river.concept_id]["synset"] == "river.n.01"
    assert bank.score < 1.0  # ambiguous lemma: the score is the chosen sense's share


def test_context_picks_the_sense(matcher, graph):
    assert tags_of(matcher, graph, "crane: construction, machine")[0] == "crane.n.04"  # the machine
    assert tags_of(matcher, graph, "crane: bird, water")[0] == "crane.n.05"  # the bird
    assert tags_of(matcher, graph, "a computer mouse next to the keyboard")[0] == "mouse.n.04"


def test_plurals_irregular_forms_and_multiword_lemmas(matcher, graph):
    assert tags_of(matcher, graph, "two mice and three wolves") == ["mouse.n.01", "wolf.n.01"]
    assert tags_of(matcher, graph, "Ice cream cones") == ["ice-cream_cone.n.01"]
    assert tags_of(matcher, graph, "baseball bats") == ["baseball_bat.n.01"]
    assert tags_of(matcher, graph, "butterflies") == ["butterfly.n.01"]


def test_function_words_and_abbreviations_never_tag(matcher, graph):
    assert tags_of(matcher, graph, "it is in a can, who will do it") == []
    assert tags_of(matcher, graph, "AZ-lizard: lizard, reptile, animal") == [
        "lizard.n.01",
        "lizard.n.01",
        "reptile.n.01",
        "animal.n.01",
    ]


def test_an_upload_identifier_is_not_the_food_it_spells(matcher, graph):
    # openclipart writes "hash(0x...)" per upload: an identifier, not a dish of chopped meat
    assert tags_of(matcher, graph, "Lemon: fruit, hash(0x8a3ecd4), lemon") == [
        "lemon.n.01",
        "fruit.n.01",
        "lemon.n.01",
    ]
    assert "hash.n.01" in tags_of(matcher, graph, "hash and eggs for breakfast")  # the dish stays
    assert "duck.n.01" in tags_of(matcher, graph, "Duck (Yellow): cartoon, duck")  # words in brackets too


@pytest.mark.parametrize("caption", ["一只彩虹吸蜜鹦鹉", "河岸上的银行", "虹色のインコ", "무지개 앵무새", ""])
def test_cjk_and_empty_captions_do_not_crash(matcher, caption):
    assert matcher.match(caption) == []
    assert matcher.unmatched_terms(caption) == []


def test_openclipart_titles_and_keywords(matcher, graph):
    assert tags_of(matcher, graph, openclipart("animals/bat_orlando_karam_.svg")) == [
        "bat.n.01",  # the animal, not the club: "mammal" is in its context
        "mammal.n.01",
        "animal.n.01",
    ]
    baby_tux = tags_of(matcher, graph, openclipart("animals/birds/baby-tux_alex_kuehne_01.svg"))
    assert {"penguin.n.01", "bird.n.01", "animal.n.01"} <= set(baby_tux)
    pie = tags_of(matcher, graph, openclipart("food/desserts/pie_apple.svg"))
    assert pie[0] == "apple_pie.n.01" and {"dessert.n.01", "food.n.01"} <= set(pie)


# --- a workspace of real captions ------------------------------------------------------------------


def write_caption_workspace(
    root: str, captions: list[str], shard_size: int = 64, source: str = "test"
) -> Workspace:
    """A workspace whose samples are the given captions (no images: tagging reads captions only);
    another ``source`` adds shards of its own to the workspace."""
    ws = Workspace(root).create()
    for start in range(0, len(captions), shard_size):
        shard_id = f"table-{source}-{start // shard_size:05d}"
        rows = []
        for i, caption in enumerate(captions[start : start + shard_size]):
            key = f"{start + i}:{caption}" if source == "test" else f"{source}:{start + i}:{caption}"
            sample_id = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
            rows.append(
                {
                    "sample_id": sample_id,
                    "image_id": sample_id,
                    "source": source,
                    "source_kind": "table",
                    "shard_id": shard_id,
                    "row_index": i,
                    "ref": str(start + i),
                    "uri": f"/nowhere/{start + i}.png",
                    "caption": caption,
                    "status": schema.STATUS_OK,
                    "warnings": [],
                }
            )
        ws.write_shard("samples", shard_id, pa.Table.from_pylist(rows, schema=schema.SAMPLES))
    return ws


def openclipart_captions(n: int) -> list[str]:
    paths = sorted(Path(OPENCLIPART_ROOT, "svg").rglob("*.svg"))[:n]
    return [openclipart_caption(p.read_bytes()) for p in paths]


HAND_WRITTEN = [
    "A rainbow lorikeet.",
    "a lorikeet eating nectar",
    "a bank of the river",
    "一只猫在桌子上",
    "",
] + [f"a zorblax robot number {i} next to a dog" for i in range(6)]


def write_ocr_shard(ws: Workspace) -> None:
    """An ``ocr`` shard for the first samples shard (as the OCR stage writes it)."""
    shard_id = ws.list_shards("samples")[0]
    samples = ws.read_shard("samples", shard_id)
    texts = [None] * samples.num_rows
    texts[0], texts[1] = "COFFEE SHOP", "一二三"
    rows = [
        {"sample_id": s, "image_id": i, "ocr_text": t}
        for s, i, t in zip(
            samples["sample_id"].to_pylist(), samples["image_id"].to_pylist(), texts, strict=True
        )
    ]
    ws.write_shard("ocr", shard_id, pa.Table.from_pylist(rows, schema=schema.OCR))


def make_tagged_workspace(root: str) -> tuple[Workspace, object]:
    ws = write_caption_workspace(root, openclipart_captions(300) + HAND_WRITTEN)
    write_ocr_shard(ws)
    assert not tags_up_to_date(ws)
    summary = tag_workspace(ws, progress=False)
    assert tags_up_to_date(ws)
    refresh_catalog(ws)
    return ws, summary


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    return make_tagged_workspace(str(tmp_path_factory.mktemp("tagws") / "ws"))


def test_tag_workspace_writes_tags_and_the_graph_views(tagged):
    ws, summary = tagged
    assert summary.samples == 311 and summary.tagged_samples > 250 and summary.tags > 900
    assert set(ws.list_shards("tags")) == set(ws.list_shards("samples"))
    lorikeet = run_sql(
        ws,
        "SELECT c.synset, n.n_direct, n.n_rollup FROM concept_counts n JOIN concepts c USING (concept_id) "
        "WHERE c.synset IN ('lorikeet.n.01', 'parrot.n.01', 'bird.n.01') ORDER BY c.synset",
    ).to_pylist()
    by = {r["synset"]: r for r in lorikeet}
    assert by["lorikeet.n.01"]["n_rollup"] >= 2  # rainbow_lorikeet and lorikeet both count
    assert by["parrot.n.01"]["n_rollup"] >= by["lorikeet.n.01"]["n_rollup"]
    assert by["bird.n.01"]["n_rollup"] >= by["parrot.n.01"]["n_rollup"] + by["bird.n.01"]["n_direct"] - 1
    # the views named in the issue exist with their columns
    for view, columns in {
        "concepts": {"concept_id", "synset", "lemmas", "gloss", "depth", "source"},
        "concept_edges": {"parent_id", "child_id", "kind"},
        "concept_ancestors": {"concept_id", "ancestor_id", "distance"},
        "tags": {"sample_id", "concept_id", "source", "score"},
        "concept_counts": {"concept_id", "n_direct", "n_rollup", "idf"},
    }.items():
        assert columns <= set(run_sql(ws, f"SELECT * FROM {view} LIMIT 0").column_names), view
    # no financial bank, nothing for the CJK caption
    banks = run_sql(
        ws,
        "SELECT c.synset FROM tags t JOIN samples s USING (sample_id) JOIN concepts c USING (concept_id) "
        "WHERE s.caption = 'a bank of the river'",
    ).column("synset")
    assert sorted(banks.to_pylist()) == ["bank.n.01", "river.n.01"]
    cjk = run_sql(
        ws, "SELECT count(*) AS n FROM tags JOIN samples USING (sample_id) WHERE caption LIKE '一%'"
    )
    assert cjk.to_pylist() == [{"n": 0}]


def test_rarity_and_coverage_views(tagged):
    ws, _ = tagged
    rare = run_sql(ws, "SELECT min(bm25) AS lo, max(bm25) AS hi, count(*) AS n FROM tag_rarity").to_pylist()[
        0
    ]
    assert rare["n"] > 0 and 0 < rare["lo"] < rare["hi"]
    # a concept seen once is rarer than one seen often
    rows = run_sql(
        ws, "SELECT synset, idf FROM concept_counts WHERE synset IN ('animal.n.01', 'lorikeet.n.01')"
    ).to_pylist()
    idf = {r["synset"]: r["idf"] for r in rows}
    assert idf["lorikeet.n.01"] > idf["animal.n.01"]
    coverage = run_sql(ws, "SELECT * FROM concept_coverage ORDER BY depth").to_pylist()
    assert coverage[0] == {
        "depth": 0,
        "concepts": 1,
        "with_1": 1,
        "with_10": 1,
        "with_100": 1,
        "with_1000": 0,
    }
    assert all(r["with_1"] >= r["with_10"] >= r["with_100"] for r in coverage)


def test_caption_words_wordnet_lacks_become_concepts(tagged):
    ws, summary = tagged
    assert "zorblax.x.01" in summary.mined
    row = run_sql(
        ws,
        "SELECT c.concept_id, c.source, p.synset AS parent FROM concepts c "
        "JOIN concept_edges e ON e.child_id = c.concept_id JOIN concepts p ON p.concept_id = e.parent_id "
        "WHERE c.synset = 'zorblax.x.01'",
    ).to_pylist()
    assert row and row[0]["source"] == "caption" and row[0]["concept_id"] >= 2**40
    assert row[0]["parent"] in {"robot.n.01", "dog.n.01"}  # what it co-occurs with in every caption
    n = run_sql(ws, "SELECT n_direct FROM concept_counts WHERE synset = 'zorblax.x.01'").to_pylist()
    assert n == [{"n_direct": 6}]


def test_queries_neighbourhood_subtree_and_gaps(tagged):
    ws, _ = tagged
    around = concept_neighbourhood(ws, "lorikeet.n.01")
    assert around["concept"]["n_rollup"] >= 2
    assert [p["synset"] for p in around["parents"]] == ["lory.n.01"]
    assert "rainbow_lorikeet.n.01" in {c["synset"] for c in around["children"]}
    birds = subtree_samples(ws, "parrot.n.01", limit=None).to_pylist()
    assert {r["caption"] for r in birds} >= {"A rainbow lorikeet.", "a lorikeet eating nectar"}
    gaps = representation_gaps(ws, {"bird.n.01": 1, "lorikeet.n.01": 1, "cat.n.01": 2})
    ratios = {r["synset"]: r["ratio"] for r in gaps.to_pylist()}
    assert ratios["bird.n.01"] > ratios["cat.n.01"]
    assert gaps.column("synset").to_pylist()[0] == "bird.n.01"  # most over-represented first
    with pytest.raises(ValueError, match="not in"):
        concept_neighbourhood(ws, "no_such_thing.n.01")


def test_ocr_text_is_tagged_when_an_ocr_table_exists(tagged):
    ws, summary = tagged
    ocr_rows = [r for r in ws.read_table("tags").to_pylist() if r["source"] == "ocr"]
    assert [r["span"] for r in ocr_rows] == ["coffee shop"]  # the CJK OCR text matches nothing
    assert summary.by_source["ocr"] == 1


def test_tagging_is_deterministic(tagged, tmp_path):
    ws, _ = tagged
    other, _ = make_tagged_workspace(str(tmp_path / "again"))

    def files(root: str) -> dict:
        return {
            p.relative_to(root): p.read_bytes()
            for table in ("tags", "concepts", "concept_edges", "concept_ancestors")
            for p in Path(root, table).glob("*.parquet")
        }

    first = files(ws.root)
    assert first == files(other.root) and len(first) > 3


def tag_files(root: str) -> dict:
    return {
        p.relative_to(root): p.read_bytes()
        for table in ("tags", "concepts", "concept_edges", "concept_ancestors")
        for p in Path(root, table).glob("*.parquet")
    }


NOUNS = (
    "apple",
    "dog",
    "cat",
    "house",
    "car",
    "tree",
    "bird",
    "chair",
    "lamp",
    "book",
    "cup",
    "ball",
    "fish",
    "boat",
    "hat",
    "shoe",
)


def test_a_grown_workspace_is_tagged_again_only_where_it_changed(tmp_path):
    clipart = openclipart_captions(180)
    plain = [f"a {c} {n} on the {p}" for c in ("red", "green") for n in NOUNS for p in ("table", "grass")]
    # "quibbleflux" is in 3 captions of the first source (too few to mine) and 3 of the second:
    # once both are in, it becomes a concept, so the first source's shard holding it is tagged
    # again; its first shard (plain words only) is not.
    first = plain[:64] + clipart[:60] + ["a quibbleflux lamp on a desk"] * 3
    second = clipart[60:] + ["a quibbleflux next to a cat"] * 3
    ws = write_caption_workspace(str(tmp_path / "grown"), first)
    tag_workspace(ws, progress=False)
    assert not any("quibbleflux" in s for s in tag_workspace(ws, progress=False).mined)
    again = tag_workspace(ws, progress=False)  # nothing changed: nothing is read or written
    assert (again.shards_read, again.shards_tagged, again.shards_searched) == (0, 0, 0)
    plain_tags = ws.shard_path("tags", "table-test-00000")
    before = ws.fs.get_file_info(plain_tags).mtime_ns
    write_caption_workspace(ws.root, second, source="second")
    grown = tag_workspace(ws, progress=False)
    assert "quibbleflux.x.01" in grown.mined
    assert grown.shards_read == 2 and grown.shards_tagged == 2 + 1  # the new shards + the one with the term
    assert ws.fs.get_file_info(plain_tags).mtime_ns == before
    at_once = write_caption_workspace(str(tmp_path / "at_once"), first)
    write_caption_workspace(at_once.root, second, source="second")
    once = tag_workspace(at_once, progress=False)
    assert tag_files(ws.root) == tag_files(at_once.root)
    assert (grown.samples, grown.tags, grown.by_source, grown.mined) == (
        once.samples,
        once.tags,
        once.by_source,
        once.mined,
    )

    # the second source removed again: the term is no longer mined, and the result is again a run's
    from pipelines.sources import drop_shards

    drop_shards(ws, [s for s in ws.list_shards("samples") if "-second-" in s])
    shrunk = tag_workspace(ws, progress=False)
    assert "quibbleflux.x.01" not in shrunk.mined and shrunk.shards_read == 0
    alone = write_caption_workspace(str(tmp_path / "alone"), first)
    tag_workspace(alone, progress=False)
    assert tag_files(ws.root) == tag_files(alone.root)


def test_calibrated_threshold_reaches_the_target_precision():
    scores = np.array([0.9, 0.8, 0.8, 0.7, 0.6, 0.5, 0.4])
    confirmed = np.array([True, True, False, True, False, False, True])
    # precision of "score >= t": 0.9 -> 1, 0.8 -> 2/3, 0.7 -> 3/4, 0.6 -> 3/5, 0.5 -> 1/2, 0.4 -> 4/7
    assert calibrate_threshold(scores, confirmed, 0.75) == (0.7, 0.75, 0.75)
    assert calibrate_threshold(scores, confirmed, 0.5) == (0.4, 4 / 7, 1.0)
    assert calibrate_threshold(scores, confirmed, 1.0) == (0.9, 1.0, 0.25)
    assert calibrate_threshold(scores, np.zeros(7, bool), 0.5) == (float("inf"), 0.0, 0.0)


def test_the_threshold_is_checked_on_the_half_it_was_not_calibrated_on():
    scores = np.array([0.9, 0.7, 0.5, 0.8, 0.75, 0.72, 0.4])
    confirmed = np.array([True, True, False, False, True, True, False])
    halves = np.array([0, 0, 0, 1, 1, 1, 1])
    # half 0 calibrates t = 0.5 (precision 2/3 >= 0.6): half 1 at >= 0.5 keeps 0.8 F, 0.75 T, 0.72 T -> 2/3
    # half 1 calibrates t = 0.72 (2/3): half 0 at >= 0.72 keeps 0.9 T -> 1
    precision, kept = unseen_precision(scores, confirmed, halves, 0.6)
    assert precision == pytest.approx((2 / 3 + 1) / 2) and kept == 3 + 1
    assert unseen_precision(scores, confirmed, np.zeros(7, int), 0.6) is None  # one half is empty


def test_the_halves_split_by_caption_so_a_repeated_caption_is_on_one_side():
    halves = {caption_half(c) for c in ("A Frog!", "a frog", "  a   FROG ")}
    assert len(halves) == 1  # one normalised caption, one half, whatever images carry it
    assert {caption_half(f"stamp {i}") for i in range(40)} == {0, 1}  # distinct captions spread


def test_graph_commands_on_a_tagged_workspace(tagged, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    ws, _ = tagged
    runner = CliRunner()
    shown = runner.invoke(app, ["graph", "show", "lorikeet.n.01", "-w", ws.root, "--format", "json"])
    assert shown.exit_code == 0, shown.output
    around = json.loads(shown.output)
    assert [p["synset"] for p in around["parents"]] == ["lory.n.01"]
    assert runner.invoke(app, ["graph", "show", "lorikeet.n.01", "-w", ws.root]).exit_code == 0
    listed = runner.invoke(app, ["graph", "samples", "parrot.n.01", "-w", ws.root, "--format", "csv"])
    assert listed.exit_code == 0 and "A rainbow lorikeet." in listed.output
    missing = runner.invoke(app, ["graph", "show", "no_such.n.01", "-w", ws.root])
    assert missing.exit_code == 2 and "not in this workspace's graph" in missing.output
    prior = tmp_path / "prior.json"
    prior.write_text('{"bird.n.01": 1, "cat.n.01": 1}')
    gaps = runner.invoke(app, ["graph", "gaps", "-w", ws.root, "--prior", str(prior), "--format", "json"])
    assert gaps.exit_code == 0 and '"synset": "bird.n.01"' in gaps.output
    prior.write_text("[1, 2]")
    bad = runner.invoke(app, ["graph", "gaps", "-w", ws.root, "--prior", str(prior)])
    assert bad.exit_code == 2 and "--prior" in bad.output
