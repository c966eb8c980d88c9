"""Reading WordNet 3.0's noun database files (Debian ``wordnet-base``) into Arrow tables.

Only the files below are read, because Debian's
package lacks ``lexnames`` and ``index.sense`` (so nltk's reader cannot open it). The formats are
those of wndb(5WN):

* ``data.noun``: ``offset lex_filenum ss_type w_cnt(hex) word lex_id(hex) ... p_cnt
  {pointer_symbol offset pos source/target} ... | gloss``, one synset per line;
* ``index.noun``: ``lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt offset...``,
  the offsets ordered by sense rank (most frequent sense first);
* ``noun.exc``: ``inflected_form base_form...``, the irregular plurals (mice -> mouse);
* ``cntlist.rev``: ``sense_key sense_number tag_cnt``, how often each sense was tagged in SemCor;
* ``index.{verb,adj,adv}`` and ``{verb,adj,adv}.exc``: only their one-word lemmas and forms.

Synset names follow nltk's convention: the synset's first lemma, lower-cased, ``.n.`` and that
synset's 1-based rank among the lemma's offsets in ``index.noun`` (``christmas_tree.n.05``).
``concept_id`` is the synset's byte offset in ``data.noun``, unique among nouns and stable for
WordNet 3.0. ``scripts/build_wordnet_graph.py`` runs this once; the result is committed under
``engine/graph/data/`` as ``wordnet_{concepts,edges,lemmas,morph,words}.parquet`` (WordNet's licence:
``engine/graph/data/WORDNET_LICENSE``).
"""

from __future__ import annotations

import os
from collections import deque

import pyarrow as pa

WORDNET_DIR = "/usr/share/wordnet"  # where Debian's wordnet-base puts the database files

# Noun lexicographer files, from lexnames(5WN) (the ``lexnames`` file itself is not in Debian's package).
NOUN_LEXNAMES = {
    3: "noun.Tops",
    4: "noun.act",
    5: "noun.animal",
    6: "noun.artifact",
    7: "noun.attribute",
    8: "noun.body",
    9: "noun.cognition",
    10: "noun.communication",
    11: "noun.event",
    12: "noun.feeling",
    13: "noun.food",
    14: "noun.group",
    15: "noun.location",
    16: "noun.motive",
    17: "noun.object",
    18: "noun.person",
    19: "noun.phenomenon",
    20: "noun.plant",
    21: "noun.possession",
    22: "noun.process",
    23: "noun.quantity",
    24: "noun.relation",
    25: "noun.shape",
    26: "noun.state",
    27: "noun.substance",
    28: "noun.time",
}

# Pointer symbols turned into edges (parent_id, child_id, kind); wndb(5WN) lists them all.
# Only the upward pointer of each pair is read, so every edge is stored once.
EDGE_POINTERS = {
    "@": "is_a",  # hypernym: this synset is a kind of the target
    "@i": "instance_of",  # instance hypernym: Paris is an instance of city
    "#p": "part_of",  # part holonym: this synset is a part of the target (wheel -> car)
}

WORDNET_CONCEPTS = pa.schema(
    [
        ("concept_id", pa.int64()),  # byte offset of the synset in data.noun
        ("synset", pa.string()),  # nltk-style name, e.g. lorikeet.n.01
        ("lemmas", pa.list_(pa.string())),  # WordNet lemma names, underscores for spaces, case kept
        ("gloss", pa.string()),  # definition and examples as WordNet gives them
        ("depth", pa.int16()),  # fewest is_a/instance_of steps up to entity.n.01 (nltk's min_depth)
        ("lexname", pa.string()),  # lexicographer file, e.g. noun.animal
        ("freq", pa.int32()),  # SemCor tag count summed over the synset's lemmas (cntlist.rev)
    ]
)

WORDNET_EDGES = pa.schema(
    [
        ("parent_id", pa.int64()),
        ("child_id", pa.int64()),
        ("kind", pa.string()),  # is_a | instance_of | part_of
    ]
)

WORDNET_LEMMAS = pa.schema(
    [
        ("lemma", pa.string()),  # as in index.noun: lower case, underscores for spaces
        ("concept_id", pa.int64()),
        ("rank", pa.int16()),  # 1 = the lemma's most frequent sense (index.noun order)
    ]
)

WORDNET_WORDS = pa.schema([("word", pa.string())])  # one-word non-noun lemmas (read_other_words)

WORDNET_MORPH = pa.schema(
    [
        ("form", pa.string()),  # an irregular inflected form, e.g. mice
        ("base", pa.string()),  # its base form, e.g. mouse
    ]
)


def _synset_lines(path: str):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("  "):  # the licence header lines start with two spaces
                yield line.rstrip("\n")


def parse_data_line(line: str) -> dict:
    """One ``data.noun`` line -> offset, lex file, lemmas with lex ids, pointers, gloss."""
    body, _, gloss = line.partition(" | ")
    fields = body.split()
    offset, lex_filenum = int(fields[0]), int(fields[1])
    w_cnt = int(fields[3], 16)
    words = [(fields[4 + 2 * i], int(fields[5 + 2 * i], 16)) for i in range(w_cnt)]
    at = 4 + 2 * w_cnt
    p_cnt = int(fields[at])
    pointers = []
    for i in range(p_cnt):
        symbol, target, pos, _source_target = fields[at + 1 + 4 * i : at + 5 + 4 * i]
        pointers.append((symbol, int(target), pos))
    return {
        "offset": offset,
        "lex_filenum": lex_filenum,
        "words": words,
        "pointers": pointers,
        "gloss": gloss.strip(),
    }


def read_sense_ranks(path: str) -> dict[str, list[int]]:
    """``index.noun`` -> lemma (lower case) -> synset offsets in sense-rank order."""
    ranks = {}
    for line in _synset_lines(path):
        fields = line.split()
        lemma, synset_cnt, p_cnt = fields[0], int(fields[2]), int(fields[3])
        ranks[lemma] = [int(x) for x in fields[4 + p_cnt + 2 : 4 + p_cnt + 2 + synset_cnt]]
    return ranks


def read_sense_counts(path: str) -> dict[str, int]:
    """``cntlist.rev`` -> noun sense key -> SemCor tag count."""
    counts = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, _number, count = line.split()
            if "%1:" in key:  # ss_type 1: noun
                counts[key] = int(count)
    return counts


def read_morph_exceptions(path: str) -> pa.Table:
    """``noun.exc`` -> (form, base) rows, one per base form."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            form, *bases = line.split()
            rows.extend({"form": form, "base": base} for base in bases)
    return pa.Table.from_pylist(rows, schema=WORDNET_MORPH)


def read_other_words(wordnet_dir: str) -> pa.Table:
    """One-word lemmas of verbs, adjectives and adverbs, and their irregular forms (``*.exc``).

    Caption words that WordNet knows in any part of speech ("sailing", "festive") are not new
    concepts; this list lets the tagger tell them from words it has never seen ("clipart").
    """
    words = set()
    for pos in ("verb", "adj", "adv"):
        for line in _synset_lines(os.path.join(wordnet_dir, f"index.{pos}")):
            lemma = line.split(" ", 1)[0]
            if "_" not in lemma:
                words.add(lemma)
        with open(os.path.join(wordnet_dir, f"{pos}.exc"), encoding="utf-8") as f:
            words.update(w for line in f for w in line.split() if "_" not in w)
    return pa.table({"word": sorted(words)}, schema=WORDNET_WORDS)


def _min_depths(parents: dict[int, list[int]], root: int) -> dict[int, int]:
    children: dict[int, list[int]] = {}
    for child, ps in parents.items():
        for p in ps:
            children.setdefault(p, []).append(child)
    depth = {root: 0}
    queue = deque([root])
    while queue:  # breadth first from the root: the first visit is the shortest path
        node = queue.popleft()
        for child in children.get(node, ()):
            if child not in depth:
                depth[child] = depth[node] + 1
                queue.append(child)
    return depth


def read_wordnet(wordnet_dir: str = WORDNET_DIR) -> dict[str, pa.Table]:
    """Read the noun database into concepts, edges, lemmas and morph tables, sorted by id."""
    needed = ["data.noun", "index.noun", "noun.exc", "cntlist.rev"]
    needed += [f"index.{pos}" for pos in ("verb", "adj", "adv")] + [
        f"{pos}.exc" for pos in ("verb", "adj", "adv")
    ]
    for name in needed:
        if not os.path.exists(os.path.join(wordnet_dir, name)):
            raise FileNotFoundError(
                f"{os.path.join(wordnet_dir, name)} not found: install the Debian package wordnet-base"
            )
    ranks = read_sense_ranks(os.path.join(wordnet_dir, "index.noun"))
    counts = read_sense_counts(os.path.join(wordnet_dir, "cntlist.rev"))
    synsets = [parse_data_line(line) for line in _synset_lines(os.path.join(wordnet_dir, "data.noun"))]
    edges = []
    taxonomy_parents: dict[int, list[int]] = {}
    for s in synsets:
        for symbol, target, pos in s["pointers"]:
            if pos == "n" and symbol in EDGE_POINTERS:
                edges.append({"parent_id": target, "child_id": s["offset"], "kind": EDGE_POINTERS[symbol]})
                if symbol in ("@", "@i"):
                    taxonomy_parents.setdefault(s["offset"], []).append(target)
    root = next(s["offset"] for s in synsets if s["words"][0][0] == "entity")
    depths = _min_depths(taxonomy_parents, root)
    concepts = []
    for s in synsets:
        first = s["words"][0][0].lower()
        rank = ranks[first].index(s["offset"]) + 1
        freq = sum(
            counts.get(f"{word.lower()}%1:{s['lex_filenum']:02d}:{lex_id:02d}::", 0)
            for word, lex_id in s["words"]
        )
        concepts.append(
            {
                "concept_id": s["offset"],
                "synset": f"{first}.n.{rank:02d}",
                "lemmas": [word for word, _ in s["words"]],
                "gloss": s["gloss"],
                "depth": depths[s["offset"]],
                "lexname": NOUN_LEXNAMES[s["lex_filenum"]],
                "freq": freq,
            }
        )
    concepts.sort(key=lambda c: c["concept_id"])
    edges.sort(key=lambda e: (e["parent_id"], e["child_id"], e["kind"]))
    morph = read_morph_exceptions(os.path.join(wordnet_dir, "noun.exc"))
    lemmas = [
        {"lemma": lemma, "concept_id": offset, "rank": rank}
        for lemma, offsets in sorted(ranks.items())
        for rank, offset in enumerate(offsets, start=1)
    ]
    return {
        "concepts": pa.Table.from_pylist(concepts, schema=WORDNET_CONCEPTS),
        "edges": pa.Table.from_pylist(edges, schema=WORDNET_EDGES),
        "lemmas": pa.Table.from_pylist(lemmas, schema=WORDNET_LEMMAS),
        "morph": morph,
        "words": read_other_words(wordnet_dir),
    }
