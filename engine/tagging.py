"""Tagging samples with graph concepts: caption and OCR n-gram matching (MetaCLIP-style).

``ConceptMatcher`` turns text into concept ids:

1. **Normalise** both the text and every lemma the same way: NFKC, lower case, possessive
   ``'s`` dropped, other apostrophes removed, then runs of letters and digits as tokens (so
   "T-shirt", "t shirt" and WordNet's ``t-shirt`` all become ``t shirt``).
2. **Surface forms.** Every lemma of a kept concept is a key; so is its plural, made from
   WordNet's irregular forms (``noun.exc`` reversed: mouse -> mice) and the English suffix rules
   WordNet's morphy undoes (-s, -es after s/x/z/ch/sh, consonant+y -> -ies, -man -> -men), applied
   to the last word of multiword lemmas ("christmas trees"). A key that is itself a lemma keeps
   that lemma's senses first ("glasses": spectacles before the plural of glass).
3. **Longest match**, left to right: at each token the matcher extends the n-gram while it is
   still the prefix of some key and keeps the longest key seen ("ice cream cone" beats "ice").
   Function words that WordNet also lists as nouns ("a" = ampere, "in" = inch, "it", "can",
   "who"), all-digit tokens and words under three letters (abbreviations: "az", "ca"; except
   ``SHORT_WORDS`` such as "ox", "tv") never match alone.
4. **Ambiguous lemmas** (several kept senses) are resolved by the caption's context, a
   simplified Lesk: each sense's signature is the set of content words of its gloss and examples,
   its lemmas and its is_a parents' lemmas (plurals folded to the base form); the score is the number
   of caption words (other than the match) found in the signature plus a prior of 1 / sense rank
   (WordNet orders senses by frequency). With no shared word the most frequent sense wins; a
   rarer sense needs more shared words than the frequency gap (one word lifts sense 2 over
   sense 1 but not sense 1 that also shares one). "a bank of the river" picks bank.n.01 (sloping land: its
   example "he sat on the bank of the river" shares "river"); "money in the piggy bank" picks
   the container. The tag's ``score`` is the chosen sense's share of the summed scores (1.0 when
   unambiguous).

Text in scripts without English words (CJK captions) simply matches nothing.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.graph import DATA_DIR, load_morph_exceptions, taxonomy_parents

SOURCE_CAPTION = "caption"
SOURCE_OCR = "ocr"
SOURCE_CLIP = "clip"

# English function words that WordNet also lists as (rare) nouns; never a tag on their own.
_STOPWORD_TEXT = """a an the and or but if of at by for with about against between into through during before
    after above below to from up down in out on off over under again further then once here there
    when where why how all any both each few more most other some such no nor not only own same so
    than too very s t can will just don should now i me my we our you your he him his she her it its
    they them their what which who whom this that these those am is are was were be been being have
    has had having do does did doing would could might must may shall one two three four five six
    seven eight nine ten also as via per etc vs"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

_APOSTROPHE_S = re.compile(r"['’]s\b")
_TOKEN = re.compile(r"[^\W_]+")
_ASCII_TOKEN = re.compile(r"[a-z0-9]+")  # the same tokens as _TOKEN on lower-case ASCII text


def normalize_tokens(text: str) -> list[str]:
    """Text -> lower-case tokens, the same way for captions and lemmas (module docstring)."""
    ascii_only = text.isascii()
    if not ascii_only:  # NFKC changes nothing in ASCII text; skipping it is the common fast path
        text = unicodedata.normalize("NFKC", text)
    text = text.lower()
    if "'" in text or "’" in text:
        text = _APOSTROPHE_S.sub("", text).replace("'", "").replace("’", "")
    return (_ASCII_TOKEN if ascii_only else _TOKEN).findall(text)


@functools.lru_cache(maxsize=256)
def _prior_share(n: int) -> float:
    """The first sense's share of the priors 1/1 + 1/2 + ... + 1/n (its score with no context)."""
    return 1.0 / sum(1.0 / rank for rank in range(1, n + 1))


def plural_forms(word: str, irregular: dict[str, list[str]]) -> list[str]:
    """The plurals of a noun: WordNet's irregular ones, else morphy's suffix rules reversed."""
    if word in irregular:
        return irregular[word]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return [word + "es"]
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return [word[:-1] + "ies"]
    if word.endswith("man"):
        return [word[:-3] + "men", word + "s"]
    return [word + "s"]


@dataclass(slots=True)
class Match:
    """One concept found in a text."""

    concept_id: int
    start: int  # token span [start, end)
    end: int
    span: str  # the matched tokens, space-joined
    score: float  # 1.0 unambiguous; else the chosen sense's share of the context scores


@dataclass
class ConceptMatcher:
    """Longest-match n-gram tagger over the lemmas of a set of concepts (module docstring)."""

    senses: dict[str, tuple[int, ...]]  # surface key -> candidate concept ids, best prior first
    prefixes: set[str]  # every proper prefix of a multiword key
    base_form: dict[str, str]  # plural token -> base token (for context words)
    graph: nx.DiGraph = field(repr=False)
    _signatures: dict[int, frozenset[str]] = field(default_factory=dict, repr=False)
    _any_signature: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)

    # --- matching ---------------------------------------------------------------------------

    def match_tokens(self, tokens: list[str]) -> list[tuple[int, int, str]]:
        """Longest matches as (start, end, key), left to right, non-overlapping."""
        senses, prefixes = self.senses, self.prefixes
        found = []
        i, n = 0, len(tokens)
        while i < n:
            key = tokens[i]
            best_end = i + 1 if key in senses else 0
            best_key = key
            j = i + 1
            while j < n and key in prefixes:
                key = key + " " + tokens[j]
                j += 1
                if key in senses:
                    best_end, best_key = j, key
            if best_end:
                found.append((i, best_end, best_key))
                i = best_end
            else:
                i += 1
        return found

    def match(self, text: str) -> list[Match]:
        """Concepts in ``text``, one per matched span, ambiguous spans resolved by context."""
        tokens = normalize_tokens(text)
        found = self.match_tokens(tokens)
        if not found:
            return []
        context = None
        out = []
        for start, end, key in found:
            candidates = self.senses[key]
            if len(candidates) == 1:
                out.append(Match(candidates[0], start, end, key, 1.0))
                continue
            if context is None:
                context = {self.base_form.get(t, t) for t in tokens if t not in STOPWORDS}
            if context.isdisjoint(self.any_signature(key)):  # fast path: the frequency prior decides
                out.append(Match(candidates[0], start, end, key, _prior_share(len(candidates))))
                continue
            words = context.difference(self.base_form.get(t, t) for t in tokens[start:end])
            scores = [len(words & self.signature(c)) + 1.0 / rank for rank, c in enumerate(candidates, 1)]
            best = max(range(len(candidates)), key=scores.__getitem__)  # first of equals: best prior
            out.append(Match(candidates[best], start, end, key, scores[best] / sum(scores)))
        return out

    def unmatched_terms(self, text: str) -> list[str]:
        """Content words no concept covers (candidates for new concepts), in base form."""
        tokens = normalize_tokens(text)
        covered = set()
        for start, end, _ in self.match_tokens(tokens):
            covered.update(range(start, end))
        return [
            self.base_form.get(t, t)
            for i, t in enumerate(tokens)
            if i not in covered and len(t) >= 3 and t.isalpha() and t.isascii() and t not in STOPWORDS
        ]

    def any_signature(self, key: str) -> frozenset[str]:
        """The union of a key's sense signatures minus the key's own words: when a caption shares
        none of these, every sense scores its prior alone (one set test skips the Lesk work)."""
        union = self._any_signature.get(key)
        if union is None:
            union = frozenset().union(*(self.signature(c) for c in self.senses[key]))
            union = union.difference(self.base_form.get(t, t) for t in key.split(" "))
            self._any_signature[key] = union
        return union

    def signature(self, concept_id: int) -> frozenset[str]:
        """Words that describe a concept: its gloss and examples, its and its parents' lemmas."""
        sig = self._signatures.get(concept_id)
        if sig is None:
            g = self.graph
            words = normalize_tokens(g.nodes[concept_id].get("gloss") or "")
            for node in (concept_id, *taxonomy_parents(g, concept_id)):
                for lemma in g.nodes[node].get("lemmas") or ():
                    words.extend(normalize_tokens(lemma.replace("_", " ")))
            sig = frozenset(self.base_form.get(w, w) for w in words if w not in STOPWORDS)
            self._signatures[concept_id] = sig
        return sig

    # --- building ---------------------------------------------------------------------------

    def add_term(self, term: str, concept_id: int) -> None:
        """Add a surface term (and its plural) for a concept, e.g. one mined from captions."""
        tokens = normalize_tokens(term)
        if not tokens:
            return
        irregular = _plural_table()
        keys = [" ".join(tokens)]
        keys += [" ".join([*tokens[:-1], p]) for p in plural_forms(tokens[-1], irregular)]
        for key in keys:
            if concept_id not in self.senses.get(key, ()):
                self.senses[key] = (*self.senses.get(key, ()), concept_id)
        for key in keys:
            parts = key.split(" ")
            self.prefixes.update(" ".join(parts[:k]) for k in range(1, len(parts)))


def _plural_table(data_dir: str = DATA_DIR) -> dict[str, list[str]]:
    """base -> irregular plurals (noun.exc reversed), cached."""
    global _PLURALS
    if _PLURALS is None:
        plurals: dict[str, list[str]] = {}
        for form, bases in sorted(load_morph_exceptions(data_dir).items()):
            for base in bases:
                plurals.setdefault(base.replace("_", " "), []).append(form.replace("_", " "))
        _PLURALS = plurals
    return _PLURALS


_PLURALS: dict[str, list[str]] | None = None


# Two-letter words kept as tags; other two-letter lemmas are abbreviations that mostly match by
# accident ("az" = azimuth in "AZ-lizard", "ca", "co", "pa").
SHORT_WORDS = frozenset({"ox", "tv", "pc", "ax"})


def _usable_key(key: str) -> bool:
    """Single tokens must be real content words; multiword keys always count."""
    if " " in key:
        return True
    if len(key) < 3 and key not in SHORT_WORDS:
        return False
    return not key.isdigit() and key not in STOPWORDS


def build_matcher(graph: nx.DiGraph, kept: set[int], data_dir: str = DATA_DIR) -> ConceptMatcher:
    """A matcher over the lemmas of the ``kept`` concepts of ``graph``.

    WordNet senses are ordered by their rank in ``index.noun`` (committed as
    ``wordnet_lemmas.parquet``); mined concepts come after them.
    """
    lemma_table = pq.read_table(f"{data_dir}/wordnet_lemmas.parquet")
    ranked: dict[str, list[tuple[int, int]]] = {}  # key -> [(rank, concept_id)]
    for lemma, concept_id, rank in zip(
        lemma_table["lemma"].to_pylist(),
        lemma_table["concept_id"].to_pylist(),
        lemma_table["rank"].to_pylist(),
        strict=True,
    ):
        if concept_id in kept:
            key = " ".join(normalize_tokens(lemma.replace("_", " ")))
            if key:
                ranked.setdefault(key, []).append((rank, concept_id))
    for concept_id in kept:  # concepts outside WordNet (mined) rank after every WordNet sense
        if graph.nodes[concept_id].get("source") == "caption":
            for lemma in graph.nodes[concept_id]["lemmas"]:
                key = " ".join(normalize_tokens(lemma.replace("_", " ")))
                ranked.setdefault(key, []).append((1 << 15, concept_id))
    exact = {key: tuple(c for _, c in sorted(set(v))) for key, v in ranked.items()}
    irregular = _plural_table(data_dir)
    senses = dict(exact)
    base_form: dict[str, str] = {}
    for key in sorted(exact):
        *head, last = key.split(" ")
        for plural in plural_forms(last, irregular):
            surface = " ".join([*head, plural])
            if not head:
                base_form.setdefault(surface, key)
            current = senses.get(surface, ())
            senses[surface] = current + tuple(c for c in exact[key] if c not in current)
    senses = {k: v for k, v in senses.items() if _usable_key(k)}
    prefixes = set()
    for key in senses:
        parts = key.split(" ")
        prefixes.update(" ".join(parts[:k]) for k in range(1, len(parts)))
    return ConceptMatcher(senses=senses, prefixes=prefixes, base_form=base_form, graph=graph)


# --- tags tables ---------------------------------------------------------------------------------


def tag_texts(
    matcher: ConceptMatcher, sample_ids: list[str], texts: list[str | None], source: str
) -> list[dict]:
    """Tag rows for one source: one per (sample, concept), repeated matches counted in ``hits``."""
    rows = []
    for sample_id, text in zip(sample_ids, texts, strict=True):
        if not text:
            continue
        merged: dict[int, dict] = {}
        for m in matcher.match(text):
            row = merged.get(m.concept_id)
            if row is None:
                merged[m.concept_id] = {
                    "sample_id": sample_id,
                    "concept_id": m.concept_id,
                    "source": source,
                    "score": m.score,
                    "hits": 1,
                    "span": m.span,
                }
            else:
                row["hits"] += 1
                row["score"] = max(row["score"], m.score)
        rows.extend(merged[c] for c in sorted(merged))
    return rows


def tags_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows -> a tags table sorted by (sample_id, source, concept_id) (deterministic bytes)."""
    rows = sorted(rows, key=lambda r: (r["sample_id"], r["source"], r["concept_id"]))
    return pa.Table.from_pylist(rows, schema=schema)


# --- mining new concepts from captions -----------------------------------------------------------

# Inflection endings stripped to find a word in WordNet's lexicon ("sailing" -> sail, "festive").
_ENDINGS = (("ing", ""), ("ing", "e"), ("ed", ""), ("ed", "e"), ("es", ""), ("s", ""), ("ly", ""), ("er", ""))


@functools.lru_cache(maxsize=2)
def load_lexicon(data_dir: str = DATA_DIR) -> frozenset[str]:
    """Every one-word WordNet lemma of any part of speech (nouns included, pruned or not)."""
    words = set(pq.read_table(f"{data_dir}/wordnet_words.parquet")["word"].to_pylist())
    words.update(w for w in pq.read_table(f"{data_dir}/wordnet_lemmas.parquet")["lemma"].to_pylist())
    return frozenset(words)


def is_known_word(word: str, lexicon: frozenset[str]) -> bool:
    """Whether WordNet knows ``word`` in any part of speech, allowing for regular endings."""
    if word in lexicon:
        return True
    return any(
        word.endswith(ending) and word[: -len(ending)] + replacement in lexicon
        for ending, replacement in _ENDINGS
    )


def new_terms(matcher: ConceptMatcher, text: str, lexicon: frozenset[str]) -> set[str]:
    """Caption words that are tag candidates WordNet lacks entirely ("clipart", "emoji")."""
    return {t for t in matcher.unmatched_terms(text) if not is_known_word(t, lexicon)}


def fold_plural_terms(counts: dict[str, int]) -> dict[str, str]:
    """term -> the term it counts as: "cliparts" -> "clipart" when both were seen."""
    return {t: (t[:-1] if t.endswith("s") and t[:-1] in counts else t) for t in counts}


# --- tagging a workspace -------------------------------------------------------------------------


@dataclass(frozen=True)
class TagConfig:
    """How a workspace is tagged; see the module docstring and README ("Concept graph")."""

    # A caption word WordNet lacks becomes a concept once this many samples use it: rarer words
    # are mostly typos and names (openclipart: 72 terms pass at 5, among them "clipart",
    # "filesystem", "roadsign", "stickmen").
    min_mined_samples: int = 5
    # Without an embedder a mined term is attached under the concept it co-occurs with most,
    # provided that concept is in at least this share of the term's samples; otherwise the term
    # is left out (no parent is better than a wrong one).
    min_attach_share: float = 0.3
    # Most mined terms a run adds (the most frequent first), so a noisy dataset cannot flood the graph.
    max_mined: int = 5000
    # Embedding attachment looks no higher than this depth: above it sit "whole", "object",
    # "artifact", which are near everything and say nothing.
    min_attach_depth: int = 4
    # CLIP zero-shot: candidates per image before the calibrated threshold (module docstring of
    # engine.concept_index); 5 covers an object, its scene and a colour or two.
    clip_top_k: int = 5
    # The calibrated threshold is the lowest cosine whose candidates the text tags confirm at
    # least this often; 0.5 = at least every second clip tag agrees with the caption's own
    # concepts (a lower bound: captions leave things out).
    clip_min_precision: float = 0.5
    clip: bool = True  # run zero-shot tagging when the workspace has embeddings from this embedder
    embedder: str | None = None  # engine.embed.load_embedder spec (None: the embedded default)


@dataclass
class TagSummary:
    """What ``tag_workspace`` did."""

    samples: int = 0  # usable samples read
    tagged_samples: int = 0  # with at least one tag
    tags: int = 0  # rows written
    by_source: dict[str, int] = field(default_factory=dict)
    mined: list[str] = field(default_factory=list)  # new concepts, as synset names
    attach_method: str = ""  # embedding | cooccurrence
    clip_skipped: str = ""  # why zero-shot tagging did not run ("" when it ran)
    clip_threshold: float | None = None  # calibrated cosine threshold for clip tags
    clip_precision: float | None = None  # share of clip tags the text tags confirm (at the threshold)
    clip_recall: float | None = None  # share of confirmed candidates kept
    concepts: int = 0  # concepts in the workspace graph
    seconds: float = 0.0


def _shard_texts(ws, shard_id: str) -> tuple[list[str], list[str], dict[str, str]]:
    """Usable samples' ids and captions of a shard, and their OCR text when an ``ocr`` shard exists."""
    from engine import schema

    samples = ws.read_shard("samples", shard_id).select(["sample_id", "caption", "status"]).to_pylist()
    ok = [s for s in samples if s["status"] == schema.STATUS_OK]
    ocr: dict[str, str] = {}
    if ws.has_shard("ocr", shard_id):
        table = ws.read_shard("ocr", shard_id)
        if "ocr_text" in table.column_names:
            ocr = {
                r["sample_id"]: r["ocr_text"]
                for r in table.select(["sample_id", "ocr_text"]).to_pylist()
                if r["ocr_text"]
            }
    return [s["sample_id"] for s in ok], [s["caption"] for s in ok], ocr


def _cooccurrence(
    ws, shards: list[str], matcher: ConceptMatcher, terms: dict[str, int], fold: dict[str, str]
) -> dict[str, dict[int, int]]:
    """term -> {concept: samples where both appear} over every caption."""
    lexicon = load_lexicon()
    together: dict[str, dict[int, int]] = {t: {} for t in terms}
    for shard_id in shards:
        _, captions, _ = _shard_texts(ws, shard_id)
        for caption in captions:
            present = {fold.get(t, t) for t in new_terms(matcher, caption, lexicon)} & together.keys()
            if not present:
                continue
            concepts = {m.concept_id for m in matcher.match(caption)}
            for term in present:
                counter = together[term]
                for c in concepts:
                    counter[c] = counter.get(c, 0) + 1
    return together


def _attach_by_cooccurrence(
    terms: dict[str, int], together: dict[str, dict[int, int]], config: TagConfig
) -> list[tuple[str, int, float]]:
    """(term, parent, share): the concept in the most of the term's samples, if common enough."""
    attached = []
    for term in sorted(terms):
        if together[term]:
            parent, n = min(together[term].items(), key=lambda kv: (-kv[1], kv[0]))
            share = n / terms[term]
            if share >= config.min_attach_share:
                attached.append((term, parent, share))
    return attached


def _attach_by_embedding(
    ws,
    graph: nx.DiGraph,
    terms: dict[str, int],
    together: dict[str, dict[int, int]],
    embedder,
    config: TagConfig,
) -> list[tuple[str, int, float]]:
    """(term, parent, cosine): the WordNet concept whose text embedding is nearest the term's,
    among the concepts in at least ``min_attach_share`` of its samples and their ancestors down
    to ``min_attach_depth`` (a CPU can embed those, not all 43k concepts, for every run)."""
    from engine.concept_index import build_concept_index
    from engine.graph import ancestor_distances

    candidates: dict[str, set[int]] = {}
    for term in sorted(terms):
        common = [c for c, n in together[term].items() if n / terms[term] >= config.min_attach_share]
        up = ancestor_distances(graph, common) if common else {}
        candidates[term] = {
            a
            for c in common
            for a in up[c]
            if (graph.nodes[a].get("depth") or 0) >= config.min_attach_depth
            and graph.nodes[a].get("source") != "caption"
        }
    pool = sorted(set().union(*candidates.values())) if candidates else []
    if not pool:
        return []
    index = build_concept_index(graph, pool, embedder, ws)
    row_of = {c: i for i, c in enumerate(index.concept_ids.tolist())}
    concept_vecs = index.index.reconstruct_n(0, len(pool))
    names = sorted(t for t in terms if candidates[t])
    term_vecs = embedder.encode_texts(names)
    attached = []
    for term, vec in zip(names, term_vecs, strict=True):
        options = sorted(candidates[term])
        sims = concept_vecs[[row_of[c] for c in options]] @ vec
        best = int(np.argmax(sims))  # first of equals: the smallest concept id
        attached.append((term, options[best], float(sims[best])))
    return attached


def _load_clip(ws, embedder_spec: str | None) -> tuple[object | None, str]:
    """The embedder that made the workspace's ``embeddings``, or None and why zero-shot is off."""
    shards = ws.list_shards("embeddings")
    if not shards:
        return None, "no embeddings table (run 'zcurate embed' first)"
    try:
        from engine.embed import load_embedder
    except ImportError as e:  # torch/open_clip come with the [all] extra
        return None, f"the embedder cannot be imported: {e}"
    model_ids = ws.read_shard("embeddings", shards[0]).column("model_id").drop_null()
    made_by = model_ids[0].as_py() if len(model_ids) else None
    try:
        embedder = load_embedder(embedder_spec)
    except Exception as e:  # a bad spec or missing weights: tag without CLIP, say why
        return None, f"embedder {embedder_spec or 'default'}: {e}"
    if made_by != embedder.model_id:
        return None, f"embeddings were made by {made_by}, the embedder is {embedder.model_id}"
    return embedder, ""


def _clip_tags(ws, graph, shards, vocabulary, embedder, config: TagConfig, summary) -> None:
    """Zero-shot ``clip`` tags for every sample with an image vector (``engine.concept_index``)."""
    from engine import schema
    from engine.concept_index import build_concept_index, calibrate_threshold
    from engine.embed import vectors
    from engine.graph import ancestor_distances

    index = build_concept_index(graph, vocabulary, embedder, ws)
    ancestors = ancestor_distances(graph)
    per_shard = {}
    all_scores, all_confirmed = [], []
    for shard_id in shards:
        if not ws.has_shard("embeddings", shard_id):
            continue
        table = ws.read_shard("embeddings", shard_id).select(["sample_id", "image_vec"])
        table = table.filter(pc.is_valid(table["image_vec"]))
        if table.num_rows == 0:
            continue
        scores, ids = index.search(vectors(table["image_vec"]), config.clip_top_k)
        text_tags: dict[str, set[int]] = {}
        for row in ws.read_shard("tags", shard_id).select(["sample_id", "concept_id"]).to_pylist():
            text_tags.setdefault(row["sample_id"], set()).add(row["concept_id"])
        known = {s: set().union(*(ancestors.get(c, {c: 0}) for c in cs)) for s, cs in text_tags.items()}
        candidates = []
        for i, sample_id in enumerate(table["sample_id"].to_pylist()):
            mine, up = text_tags.get(sample_id, set()), known.get(sample_id, set())
            for score, c in zip(scores[i].tolist(), ids[i].tolist(), strict=True):
                if c < 0:
                    continue
                confirmed = c in up or not mine.isdisjoint(ancestors.get(c, {}))
                candidates.append((sample_id, c, score))
                all_scores.append(score)
                all_confirmed.append(confirmed)
        per_shard[shard_id] = candidates
    threshold, precision, recall = calibrate_threshold(
        np.array(all_scores), np.array(all_confirmed, bool), config.clip_min_precision
    )
    summary.clip_threshold, summary.clip_precision, summary.clip_recall = threshold, precision, recall
    for shard_id, candidates in per_shard.items():
        rows = [
            {"sample_id": s, "concept_id": c, "source": SOURCE_CLIP, "score": score, "hits": 1, "span": None}
            for s, c, score in candidates
            if score >= threshold
        ]
        if rows:
            existing = ws.read_shard("tags", shard_id).to_pylist()
            ws.write_shard("tags", shard_id, tags_table(existing + rows, schema.TAGS))
            summary.tags += len(rows)
            summary.by_source[SOURCE_CLIP] = summary.by_source.get(SOURCE_CLIP, 0) + len(rows)


def tag_workspace(
    ws,
    graph_config=None,
    config: TagConfig | None = None,
    progress: bool | None = None,
) -> TagSummary:
    """Tag every usable sample's caption (and OCR text) with concepts; write ``tags`` and the graph.

    Three passes over the captions, so the result depends only on the data and the configs:
    count caption words WordNet lacks; attach the frequent ones to the graph (by text-embedding
    similarity when the workspace has embeddings from ``config.embedder``, else by
    co-occurrence); tag every shard with the grown graph. With embeddings, images then get CLIP
    zero-shot tags over the concepts the text tags use (``engine.concept_index``). Last,
    ``engine.graph.write_workspace_graph`` writes the workspace's concept tables, pruned again
    with PageRank weighted by the observed counts.
    """
    import sys
    import time

    from tqdm import tqdm

    from engine import schema
    from engine.graph import GraphConfig, add_mined_concept, load_graph, prune_graph, write_workspace_graph

    started = time.perf_counter()
    graph_config = graph_config or GraphConfig()
    config = config or TagConfig()
    graph = load_graph()
    pruned = prune_graph(graph, graph_config)
    kept = set(pruned.kept)
    matcher = build_matcher(graph, kept)
    lexicon = load_lexicon()
    shards = ws.list_shards("samples")
    show = sys.stderr.isatty() if progress is None else progress
    summary = TagSummary()

    counts: dict[str, int] = {}
    for shard_id in tqdm(shards, desc="tag: mine", unit="shard", disable=not show):
        _, captions, _ = _shard_texts(ws, shard_id)
        for caption in captions:
            for term in new_terms(matcher, caption, lexicon):
                counts[term] = counts.get(term, 0) + 1
    fold = fold_plural_terms(counts)
    folded: dict[str, int] = {}
    for term, n in counts.items():
        folded[fold[term]] = folded.get(fold[term], 0) + n
    frequent = sorted(
        (t for t, n in folded.items() if n >= config.min_mined_samples), key=lambda t: (-folded[t], t)
    )
    terms = {t: folded[t] for t in frequent[: config.max_mined]}
    embedder, summary.clip_skipped = _load_clip(ws, config.embedder) if config.clip else (None, "off")
    if terms:
        together = _cooccurrence(ws, shards, matcher, terms, fold)
        if embedder is not None:
            summary.attach_method = "embedding"
            attached = _attach_by_embedding(ws, graph, terms, together, embedder, config)
        else:
            summary.attach_method = "cooccurrence"
            attached = _attach_by_cooccurrence(terms, together, config)
        for term, parent, score in attached:
            concept_id = add_mined_concept(graph, term, parent, score, summary.attach_method)
            kept.add(concept_id)
            summary.mined.append(graph.nodes[concept_id]["synset"])
            matcher.add_term(term, concept_id)
            for variant, base in fold.items():  # the plural spellings seen ("cliparts")
                if base == term and variant != term:
                    matcher.add_term(variant, concept_id)

    vocabulary: set[int] = set()  # concepts the text tags use: the zero-shot label set
    for shard_id in tqdm(shards, desc="tag", unit="shard", disable=not show):
        sample_ids, captions, ocr = _shard_texts(ws, shard_id)
        rows = tag_texts(matcher, sample_ids, captions, SOURCE_CAPTION)
        ocr_ids = sorted(ocr)
        rows += tag_texts(matcher, ocr_ids, [ocr[s] for s in ocr_ids], SOURCE_OCR)
        ws.write_shard("tags", shard_id, tags_table(rows, schema.TAGS))
        vocabulary.update(r["concept_id"] for r in rows)
        summary.samples += len(sample_ids)
        summary.tagged_samples += len({r["sample_id"] for r in rows})
        summary.tags += len(rows)
        for r in rows:
            summary.by_source[r["source"]] = summary.by_source.get(r["source"], 0) + 1
    if embedder is not None:
        _clip_tags(ws, graph, shards, vocabulary, embedder, config, summary)
    summary.concepts = write_workspace_graph(ws, graph, graph_config)
    summary.seconds = time.perf_counter() - started
    return summary


def tags_up_to_date(ws) -> bool:
    """Whether ``tags`` and the graph are newer than every ``samples``, ``ocr`` and ``embeddings``
    shard, so a rerun of a finished curate job can skip tagging."""
    from engine import schema

    samples = ws.list_shards("samples")
    if not samples or set(ws.list_shards("tags")) != set(samples) or not ws.list_shards("concepts"):
        return False
    inputs = ws.shard_files("samples") + ws.shard_files("ocr") + ws.shard_files("embeddings")
    infos = ws.fs.get_file_info([*inputs, ws.path("concepts", f"{schema.GRAPH_SHARD}.parquet")])
    return max(i.mtime for i in infos[:-1]) <= infos[-1].mtime
