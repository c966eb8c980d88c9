"""Finding graph concepts in text: caption and OCR n-gram matching (MetaCLIP-style).

``ConceptMatcher`` turns text into concept ids:

0. **Identifiers out.** A word glued to a parenthesised number, ``hash(0x8a3ecd4)`` (openclipart
   writes one per upload), is a machine identifier, not the word: it is dropped before matching,
   so it never becomes a tag (WordNet's only ``hash`` is the food).
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
import pyarrow as pa
import pyarrow.parquet as pq

from engine.graph.concept_graph import DATA_DIR, load_morph_exceptions, taxonomy_parents

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

# "hash(0x8a3ecd4)", "id(1234)": a name glued to a parenthesised (hex) number, step 0 above
_IDENTIFIER = re.compile(r"\b\w+\(\s*(?:0x)?[0-9a-f]*[0-9][0-9a-f]*\s*\)", re.IGNORECASE)


def normalize_tokens(text: str) -> list[str]:
    """Text -> lower-case tokens, the same way for captions and lemmas (module docstring)."""
    if "(" in text:
        text = _IDENTIFIER.sub(" ", text)
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
        keys = term_keys(term)
        for key in keys:
            if concept_id not in self.senses.get(key, ()):
                self.senses[key] = (*self.senses.get(key, ()), concept_id)
        for key in keys:
            parts = key.split(" ")
            self.prefixes.update(" ".join(parts[:k]) for k in range(1, len(parts)))


def term_keys(term: str) -> list[str]:
    """The surface keys ``ConceptMatcher.add_term`` adds for a term: it and its plurals."""
    tokens = normalize_tokens(term)
    if not tokens:
        return []
    plurals = plural_forms(tokens[-1], _plural_table())
    return [" ".join(tokens)] + [" ".join([*tokens[:-1], p]) for p in plurals]


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
