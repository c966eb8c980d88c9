"""Benchmark: does the noise-concept rule (engine.graph.noise) separate planted noise words from content
on data the embedder never saw and the margin was not set on?

    PYTHONPATH=$PWD .venv/bin/python bench/bench_noise_concepts.py --output bench/results-noise-concepts.json

Data: Tux Paint's stamps (``tuxpaint-stamps-default``; reserved for independent evaluation, nothing
is tuned here), each captioned with the first line of its description, plus planted words, as a
scrape's metadata would add them (appended ``", word"``, seeded per word):

* **uniform noise**: words that name nothing in the stamps, each on a random share of all stamps
  (``UNIFORM``: a category folder on every upload, an archive's name, a hash); the rule should mark
  them noise;
* **grounded controls**: a category word on the stamps of its own folder only (``GROUNDED``:
  "animal" on ``animals/``...): the word is metadata too, but it says what the pictures show, so
  the rule should keep it.

Then the stamps go the user's way (``run_curate`` with the embed stage on a local Ray,
``tag_workspace`` with the embedded default) and the ``concepts`` table's ``noise`` column is read.
A planted word's concept is the one tagged on the stamps it was planted on (its lemma is the word,
>= 80% of its samples carry the plant). Reported: which planted concepts the rule marks (and why),
and how many of the captions' own concepts that the grounding test covers (>= ``MIN_SAMPLES``
samples) it marks, with their names, so a reader can judge them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_zero_shot import REPO, TUXPAINT_ROOT, curate_stamps, run_meta, write_report

sys.path.insert(0, str(REPO))

# word -> share of all stamps it is planted on
UNIFORM = {"computer": 0.3, "hash": 0.3, "scan": 0.3, "collection": 0.1, "archive": 0.1, "internet": 0.1}
# word -> the stamp folder it is planted on (every stamp there)
GROUNDED = {"animal": "animals", "food": "food", "plant": "plants", "vehicle": "vehicles", "building": "town"}
PLANT_SHARE = 0.8  # a concept is a planted word's when >= 80% of its samples carry that plant


def planter(seed: int):
    """(caption_of for write_stamp_folder, relative path -> planted words)."""
    planted: dict[str, list[str]] = {}

    def caption_of(relative: str, caption: str) -> str:
        words = [w for w, folder in GROUNDED.items() if relative.split("/")[0] == folder]
        for w, share in UNIFORM.items():
            digest = hashlib.sha256(f"{seed}/{w}/{relative}".encode()).digest()
            if int.from_bytes(digest[:8], "big") / 2.0**64 < share:
                words.append(w)
        planted[relative] = words
        return ", ".join([caption.rstrip("."), *words]) if words else caption

    return caption_of, planted


def concept_samples(ws) -> dict[int, set[str]]:
    """concept id -> the samples its caption/OCR tags are on."""
    out: dict[int, set[str]] = {}
    for shard_id in ws.list_shards("tags"):
        for row in ws.read_shard("tags", shard_id).select(["sample_id", "concept_id", "source"]).to_pylist():
            if row["source"] in ("caption", "ocr"):
                out.setdefault(row["concept_id"], set()).add(row["sample_id"])
    return out


def measure(ws, planted: dict[str, list[str]]) -> dict:
    """The planted words' concepts and the captions' own tested concepts, marked or not."""
    from engine.catalog import refresh_catalog, run_sql
    from engine.graph.noise import MIN_SAMPLES

    refresh_catalog(ws)  # the DuckDB views a user queries after tagging

    concepts = run_sql(ws, "SELECT concept_id, synset, lemmas, noise FROM concepts").to_pylist()
    by_id = {c["concept_id"]: c for c in concepts}
    rows = run_sql(ws, "SELECT sample_id, uri FROM samples WHERE status = 'ok'").to_pylist()
    carriers: dict[str, set[str]] = {}
    for r in rows:
        sample_id, relative = r["sample_id"], r["uri"].split("/stamps/", 1)[1]
        for w in planted.get(relative, []):
            carriers.setdefault(w, set()).add(sample_id)
    members = concept_samples(ws)
    planted_rows, own_rows = {}, []
    for concept_id, samples in sorted(members.items()):
        c = by_id.get(concept_id)
        if c is None:
            continue
        lemmas = {lemma.lower() for lemma in c["lemmas"] or ()}
        share = {w: len(samples & s) / len(samples) for w, s in carriers.items() if w in lemmas}
        word = next((w for w, x in share.items() if x >= PLANT_SHARE), None)
        row = {"synset": c["synset"], "samples": len(samples), "noise": c["noise"]}
        if word is not None:
            planted_rows.setdefault(word, []).append(row)
        elif len(samples) >= MIN_SAMPLES:
            own_rows.append(row)

    def verdict(word: str) -> dict:
        rows = sorted(planted_rows.get(word, []), key=lambda r: -r["samples"])
        main = rows[0] if rows else None
        return {
            "planted_on": len(carriers.get(word, ())),
            "concept": main,
            "marked": bool(main and main["noise"]),
        }

    uniform = {w: verdict(w) for w in UNIFORM}
    grounded = {w: verdict(w) for w in GROUNDED}
    return {
        "uniform": uniform,
        "uniform_marked": sum(v["marked"] for v in uniform.values()),
        "grounded": grounded,
        "grounded_marked": sum(v["marked"] for v in grounded.values()),
        "own_tested": len(own_rows),
        "own_marked": sum(bool(r["noise"]) for r in own_rows),
        "own": sorted(own_rows, key=lambda r: -r["samples"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: PYTHONPATH=$PWD .venv/bin/python bench/bench_noise_concepts.py --output /tmp/n.json",
    )
    parser.add_argument("--output", default=None, help="write the results here (JSON)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--seed", type=int, default=0, help="which stamps get the uniform words")
    parser.add_argument("--keep", default=None, help="build the folder and workspace here and keep them")
    args = parser.parse_args()
    if not os.path.isdir(TUXPAINT_ROOT):
        raise SystemExit(f"{TUXPAINT_ROOT} is missing: apt-get install tuxpaint-stamps-default")

    from engine.graph.noise import MARGIN, MIN_SAMPLES
    from engine.graph.tagging import TagConfig, tag_workspace

    started = time.perf_counter()
    caption_of, planted = planter(args.seed)
    with tempfile.TemporaryDirectory(prefix="zcurate-bench-noise-") as scratch:
        ws, data, curated = curate_stamps(args.keep or scratch, args.num_cpus, caption_of)
        s = tag_workspace(ws, config=TagConfig(), progress=False)
        if s.clip_skipped:
            raise SystemExit(f"tagging ran without image vectors: {s.clip_skipped}")
        measured = measure(ws, planted)
    report = {
        "data": {"source": "tuxpaint-stamps-default", **data, "usable": curated.ok},
        "planted": {"uniform_share": UNIFORM, "grounded_folder": GROUNDED, "seed": args.seed},
        "rule": {"margin": MARGIN, "min_samples": MIN_SAMPLES},
        "results": measured,
        "meta": run_meta("bench_noise_concepts.py", started),
    }
    write_report(report, args.output)


if __name__ == "__main__":
    main()
