"""What tagging keeps per shard, so that a rerun on a grown workspace redoes only what changed.

Three parts of ``engine.graph.tagging`` look at every sample: the mined concepts (caption words
counted over every caption), the zero-shot label set (every concept the text tags use) and the
zero-shot threshold (calibrated over every candidate). Each is a reduce over per-shard
quantities, which this module keeps in ``WS/_cache/tagging/`` (derived files: deleting the
folder costs one full run and changes no result):

- ``<shard>.texts.parquet``: the shard's **text summary**: one row per distinct (caption words
  WordNet lacks, concepts the base matcher finds in that caption) with its number of captions,
  which is all mining and co-occurrence need; in the file's metadata, every distinct token of the
  shard's captions and OCR text, and the matcher its text tags were written with.
- ``<shard>.clip.parquet``: the shard's **zero-shot candidates** (sample, concept, cosine) for one
  model, label set and embeddings file.
- ``matchers/<hash>.json``: the mined terms of each matcher text tags were written with.

A summary is used only while the files it was made from are unchanged (size and mtime) and the
tagging settings are the same. A matcher differs from the last one only in the spellings of the
mined terms that were added, removed, or re-attached; since matching works on tokens, a shard
none of whose texts holds one of those spellings keeps its text tags (``needs_retag``).
Candidates are searched again only when the label set, the model or the shard's vectors changed.
Each result equals a run from nothing (tests/engine/graph/test_tagging.py).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from engine.graph.matching import ConceptMatcher, normalize_tokens, term_keys

STATE_DIR = "_cache/tagging"
VERSION = 1  # bump when the meaning of a summary changes, so old ones are remade

TEXT_SUMMARY = pa.schema(
    [("terms", pa.list_(pa.string())), ("concepts", pa.list_(pa.int64())), ("n", pa.int64())]
)
CANDIDATES = pa.schema([("sample_id", pa.string()), ("concept_id", pa.int64()), ("score", pa.float32())])


def digest(value) -> str:
    """A short stable hash of a JSON-able value."""
    return hashlib.blake2b(json.dumps(value, sort_keys=True).encode(), digest_size=12).hexdigest()


def input_stamp(ws, tables: Iterable[str], shard_id: str) -> str:
    """The size and mtime of a shard's file in each table ("-" where it has none)."""
    parts = []
    for table in tables:
        info = ws.fs.get_file_info(ws.shard_path(table, shard_id))
        parts.append(f"{table}:{info.size}:{info.mtime_ns}" if info.is_file else f"{table}:-")
    return ";".join(parts)


@dataclass
class TextSummary:
    """A shard's captions and OCR text as mining and re-tagging need them (module docstring)."""

    signatures: list[tuple[tuple[str, ...], tuple[int, ...], int]]  # (new words, concepts, captions)
    tokens: frozenset[str]  # every distinct token of the shard's captions and OCR text
    samples: int  # usable samples
    matcher: str = ""  # hash of the matcher the shard's text tags were written with ("" none yet)


def summarise_texts(
    matcher: ConceptMatcher, captions: list[str], ocr_texts: Iterable[str], lexicon: frozenset[str]
) -> TextSummary:
    """A shard's text summary, with ``matcher`` the base matcher (before mined terms are added)."""
    from engine.graph.mining import new_terms

    counts: Counter = Counter()
    tokens: set[str] = set()
    for caption in captions:
        tokens.update(normalize_tokens(caption))
        words = new_terms(matcher, caption, lexicon)
        if words:
            concepts = {m.concept_id for m in matcher.match(caption)}
            counts[(tuple(sorted(words)), tuple(sorted(concepts)))] += 1
    for text in ocr_texts:
        tokens.update(normalize_tokens(text))
    signatures = [(words, concepts, n) for (words, concepts), n in sorted(counts.items())]
    return TextSummary(signatures=signatures, tokens=frozenset(tokens), samples=len(captions))


def texts_rel(shard_id: str) -> str:
    return f"{STATE_DIR}/{shard_id}.texts.parquet"


def clip_rel(shard_id: str) -> str:
    return f"{STATE_DIR}/{shard_id}.clip.parquet"


def write_text_summary(ws, shard_id: str, summary: TextSummary, key: str) -> None:
    """Keep ``summary`` for ``shard_id``; ``key`` names the settings and input files it holds for."""
    table = pa.table(
        {
            "terms": [list(s[0]) for s in summary.signatures],
            "concepts": [list(s[1]) for s in summary.signatures],
            "n": [s[2] for s in summary.signatures],
        },
        schema=TEXT_SUMMARY,
    )
    meta = {
        "key": key,
        "tokens": sorted(summary.tokens),
        "samples": summary.samples,
        "matcher": summary.matcher,
    }
    ws.write_parquet(texts_rel(shard_id), table.replace_schema_metadata({"zcurate": json.dumps(meta)}))


def read_text_summary(ws, shard_id: str, key: str) -> TextSummary | None:
    """The kept summary of ``shard_id`` when it was made under ``key``; else None."""
    meta, table = _read(ws, texts_rel(shard_id))
    if meta is None or meta.get("key") != key:
        return None
    signatures = [
        (tuple(t), tuple(c), n)
        for t, c, n in zip(
            table["terms"].to_pylist(), table["concepts"].to_pylist(), table["n"].to_pylist(), strict=True
        )
    ]
    return TextSummary(signatures, frozenset(meta["tokens"]), meta["samples"], meta.get("matcher", ""))


def write_candidates(ws, shard_id: str, candidates: list[tuple[str, int, float]], key: str) -> None:
    """Keep a shard's zero-shot candidates (sample, concept, cosine) made under ``key``."""
    columns = list(zip(*candidates, strict=True)) if candidates else [[], [], []]
    table = pa.table(dict(zip(CANDIDATES.names, columns, strict=True)), schema=CANDIDATES)
    ws.write_parquet(clip_rel(shard_id), table.replace_schema_metadata({"zcurate": json.dumps({"key": key})}))


def read_candidates(ws, shard_id: str, key: str) -> list[tuple[str, int, float]] | None:
    """A shard's kept candidates when they were made under ``key``; else None."""
    meta, table = _read(ws, clip_rel(shard_id))
    if meta is None or meta.get("key") != key:
        return None
    return list(zip(*(table[name].to_pylist() for name in CANDIDATES.names), strict=True))


def _read(ws, rel: str) -> tuple[dict | None, pa.Table | None]:
    """(metadata, table) of a kept file, or (None, None) when it is missing or unreadable."""
    import pyarrow.parquet as pq

    if not ws.exists(rel):
        return None, None
    try:
        table = pq.read_table(ws.path(rel), filesystem=ws.fs)
        return json.loads((table.schema.metadata or {})[b"zcurate"]), table
    except Exception:  # a damaged cache file is remade, never trusted
        return None, None


# --- matchers -------------------------------------------------------------------------------------


def matcher_terms(attached: list[tuple[str, int, int, float]], fold: dict[str, str]) -> list[list]:
    """What a grown matcher adds to the base one: per mined term (term, concept id, parent, score
    as the concept's gloss prints it, the plural spellings folded into it)."""
    return [
        [
            term,
            concept_id,
            parent,
            f"{score:.3f}",
            sorted(v for v, base in fold.items() if base == term and v != term),
        ]
        for term, concept_id, parent, score in sorted(attached)
    ]


def save_matcher(ws, matcher_hash: str, terms: list[list]) -> None:
    rel = f"{STATE_DIR}/matchers/{matcher_hash}.json"
    if not ws.exists(rel):
        ws.write_text(rel, json.dumps(terms))


def load_matcher(ws, matcher_hash: str) -> list[list] | None:
    rel = f"{STATE_DIR}/matchers/{matcher_hash}.json"
    return json.loads(ws.read_text(rel)) if matcher_hash and ws.exists(rel) else None


def changed_tokens(old_terms: list[list], new_terms: list[list]) -> frozenset[str]:
    """Tokens of every spelling of a mined term that one matcher has and the other lacks (or
    attaches elsewhere): only texts holding one of them can be tagged differently."""
    old = {json.dumps(t) for t in old_terms}
    new = {json.dumps(t) for t in new_terms}
    tokens: set[str] = set()
    for entry in old ^ new:
        term, _, _, _, variants = json.loads(entry)
        for spelling in (term, *variants):
            for key in term_keys(spelling):
                tokens.update(key.split(" "))
    return frozenset(tokens)


def needs_retag(ws, summary: TextSummary, matcher_hash: str, terms: list[list], has_tags: bool) -> bool:
    """Whether a shard's text tags must be written again for the matcher ``matcher_hash``."""
    if not has_tags or not summary.matcher:
        return True
    if summary.matcher == matcher_hash:
        return False
    old_terms = load_matcher(ws, summary.matcher)
    return old_terms is None or not summary.tokens.isdisjoint(changed_tokens(old_terms, terms))


def forget_shards(ws, keep: set[str]) -> None:
    """Delete the kept state of shards that are gone from the workspace."""
    for name in ws.list_files(STATE_DIR, ".parquet"):
        if name.removesuffix(".parquet").rsplit(".", 1)[0] not in keep:
            ws.fs.delete_file(ws.path(STATE_DIR, name))
