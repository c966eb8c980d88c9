"""Stage recipes: what a stage's manifest keeps, how it weights, buckets and captions its samples.

A recipe is a TOML file (the shipped ones live in ``engine/curation/recipes/``: lowres, omni, sft; see
DESIGN.md section 4). A user writes a new one without touching code and passes it with
``zcurate manifest --recipe FILE``. Every key is checked when the file is read: an unknown key,
a wrong type or a value out of range gives one line naming the key (:class:`RecipeError`).

Sections (every one optional except ``stage``)::

    stage = "lowres"                   # the manifest's stage name (manifests/<stage>/...)
    description = "..."

    [filters.<column>]                 # hard filters on pool columns (POOL_COLUMNS)
    min = 0.2                          # keep min <= value <= max
    max = 0.5
    min_quantile = 0.5                 # keep value >= its quantile over the usable pool
    equals = false                     # keep value == this (bool or text columns)
    missing = "keep"                   # rows where the column is null: keep | drop

    [dedup]
    keep = "representative"            # representative (one per near-duplicate community) | all

    [[tilts]]                          # soft tilts: weight *= exp(strength * (rank - 0.5))
    column = "clip_score"
    strength = 1.0

    [concepts]                         # which tags count as a sample's concepts
    sources = ["caption", "ocr", "clip"]
    min_score = 0.0
    depth = 0                          # > 0: map each tag to its ancestor(s) at this graph depth

    [balance]
    method = "metaclip"                # none | metaclip | hierarchical | uniform
    threshold = 20                     # metaclip / hierarchical: t
    alpha = 0.5                        # hierarchical: subtree budget t * k ** alpha
    temperature = 0.0                  # uniform: target marginal ~ n_c ** temperature
    max_ratio = 100.0                  # uniform: largest / smallest positive weight
    untagged = 1.0                     # factor of samples without concepts
    mode = "weight"                    # weight: multiply by the keep probability; sample: keep or drop

    [buckets]
    sizes = [[256, 256]]               # (height, width) pairs
    max_upscale = 4.0                  # resolution tiers: largest needing at most this upscaling

    [caption]
    forms = { original = 1.0 }         # original | ocr | tags | enhanced, with probabilities
    ocr_format = ' The image shows the text "{text}".'
    tags_format = "{names}"
    concepts_format = " Concepts: {names}."
    max_ocr_chars = 200

    [image_to_image]                   # pairs from near-duplicate communities
    share = 0.2                        # share of the manifest's weight on image-to-image rows
    max_per_community = 4

    [feedback]                         # trainer feedback (engine/feedback.py)
    enabled = true
    step_size = 0.5
    smoothing = 0.1
    cap = 4.0
    min_samples = 4

    [draws]                            # --size N: an epoch-expanded list of N draws
    epoch_fraction = 0.5
    repeat_cap = 8
"""

from __future__ import annotations

import copy
import json
import os
import tomllib
from dataclasses import asdict, dataclass, field

RECIPES_DIR = os.path.join(os.path.dirname(__file__), "recipes")

# Pool columns a filter or tilt may name (engine/manifest.py assembles them from the catalog).
NUMERIC_COLUMNS = (
    "width",
    "height",
    "min_side",
    "pixels",
    "aspect",
    "file_bytes",
    "compression_ratio",
    "border_variance",
    "jpeg_bpp",
    "blur",
    "colourfulness",
    "entropy",
    "caption_chars",
    "caption_words",
    "caption_lang_prob",
    "clip_score",
    "nsfw_score",
    "ocr_conf_mean",
    "text_area_ratio",
    "ocr_caption_overlap",
)
BOOL_COLUMNS = ("caption_has_cjk", "has_watermark_text", "has_ocr_text")
TEXT_COLUMNS = ("caption_lang", "ocr_lang", "image_format", "source_kind")
POOL_COLUMNS = NUMERIC_COLUMNS + BOOL_COLUMNS + TEXT_COLUMNS

BALANCE_METHODS = ("none", "metaclip", "hierarchical", "uniform")
CAPTION_FORMS = ("original", "ocr", "tags", "enhanced")
TAG_SOURCES = ("caption", "ocr", "clip")


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Filter:
    column: str
    min: float | None = None
    max: float | None = None
    min_quantile: float | None = None
    equals: bool | str | None = None
    missing: str = "keep"


@dataclass(frozen=True)
class Tilt:
    column: str
    strength: float


@dataclass(frozen=True)
class Concepts:
    sources: tuple[str, ...] = TAG_SOURCES
    min_score: float = 0.0
    depth: int = 0


@dataclass(frozen=True)
class Balance:
    method: str = "none"
    threshold: float = 20.0
    alpha: float = 0.5
    temperature: float = 0.0
    max_ratio: float = 100.0
    untagged: float = 1.0
    mode: str = "weight"


@dataclass(frozen=True)
class Buckets:
    sizes: tuple[tuple[int, int], ...] = ((256, 256),)
    max_upscale: float = 4.0


@dataclass(frozen=True)
class Caption:
    forms: tuple[tuple[str, float], ...] = (("original", 1.0),)
    ocr_format: str = ' The image shows the text "{text}".'
    tags_format: str = "{names}"
    concepts_format: str = " Concepts: {names}."
    max_ocr_chars: int = 200


@dataclass(frozen=True)
class ImageToImage:
    share: float = 0.0
    max_per_community: int = 4


@dataclass(frozen=True)
class Feedback:
    enabled: bool = True
    step_size: float = 0.5
    smoothing: float = 0.1
    cap: float = 4.0
    min_samples: int = 4


@dataclass(frozen=True)
class Draws:
    epoch_fraction: float = 0.5
    repeat_cap: int = 8


@dataclass(frozen=True)
class Recipe:
    stage: str
    description: str = ""
    filters: tuple[Filter, ...] = ()
    dedup: str = "representative"
    tilts: tuple[Tilt, ...] = ()
    concepts: Concepts = field(default_factory=Concepts)
    balance: Balance = field(default_factory=Balance)
    buckets: Buckets = field(default_factory=Buckets)
    caption: Caption = field(default_factory=Caption)
    image_to_image: ImageToImage = field(default_factory=ImageToImage)
    feedback: Feedback = field(default_factory=Feedback)
    draws: Draws = field(default_factory=Draws)
    source: str = ""  # where it was read from (not part of the recipe's identity)

    def to_dict(self) -> dict:
        """The recipe as TOML-shaped plain data: :func:`parse_recipe` reads it back to an equal
        recipe (the sidecar's copy, the manifest id's input, the trainer's refresh)."""
        filters = {}
        for f in self.filters:
            spec = {k: v for k, v in asdict(f).items() if k != "column" and v is not None}
            filters[f.column] = spec
        data = {
            "stage": self.stage,
            "description": self.description,
            "filters": filters,
            "dedup": {"keep": self.dedup},
            "tilts": [asdict(t) for t in self.tilts],
            "concepts": asdict(self.concepts) | {"sources": list(self.concepts.sources)},
            "balance": asdict(self.balance),
            "buckets": {
                "sizes": [list(s) for s in self.buckets.sizes],
                "max_upscale": self.buckets.max_upscale,
            },
            "caption": asdict(self.caption) | {"forms": dict(self.caption.forms)},
            "image_to_image": asdict(self.image_to_image),
            "feedback": asdict(self.feedback),
            "draws": asdict(self.draws),
        }
        return json.loads(json.dumps(data))

    def columns(self) -> list[str]:
        """Pool columns the recipe reads (filters and tilts), in first-use order."""
        names = [f.column for f in self.filters] + [t.column for t in self.tilts]
        return list(dict.fromkeys(names))


# --- reading and checking -------------------------------------------------------------------------


class _Checker:
    """Pops keys off a section and complains, with the dotted key, about anything unexpected."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, key: str, message: str) -> RecipeError:
        return RecipeError(f"recipe {self.where}: {key} {message}")

    def section(self, data: dict, key: str) -> dict:
        value = data.pop(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {value!r}")
        return dict(value)

    def number(self, data: dict, prefix: str, key: str, default, low=None, high=None, integer=False):
        if key not in data:
            return default
        value = data.pop(key)
        ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type:
            kind = "an integer" if integer else "a number"
            raise self.fail(f"{prefix}{key}", f"must be {kind}, got {value!r}")
        if value != value or (low is not None and value < low) or (high is not None and value > high):
            bounds = f"{'' if low is None else f'>= {low}'}{' and ' if None not in (low, high) else ''}"
            bounds += "" if high is None else f"<= {high}"
            raise self.fail(f"{prefix}{key}", f"must be {bounds}, got {value!r}")
        return int(value) if integer else float(value)

    def choice(self, data: dict, prefix: str, key: str, default: str, choices) -> str:
        if key not in data:
            return default
        value = data.pop(key)
        if value not in choices:
            raise self.fail(f"{prefix}{key}", f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def text(self, data: dict, prefix: str, key: str, default: str, placeholders=()) -> str:
        if key not in data:
            return default
        value = data.pop(key)
        if not isinstance(value, str):
            raise self.fail(f"{prefix}{key}", f"must be a string, got {value!r}")
        if placeholders:
            try:
                value.format(**{name: "" for name in placeholders})
            except (KeyError, IndexError, ValueError) as e:
                allowed = ", ".join("{" + p + "}" for p in placeholders)
                raise self.fail(f"{prefix}{key}", f"may only use {allowed} ({e})") from None
        return value

    def done(self, data: dict, prefix: str, known) -> None:
        for key in data:
            raise self.fail(f"{prefix}{key}", f"is not a known key (known: {', '.join(known)})")


def parse_recipe(data: dict, where: str) -> Recipe:
    """Check a recipe's TOML data (a dict) and build the :class:`Recipe`."""
    data = copy.deepcopy(data)
    check = _Checker(where)
    stage = data.pop("stage", None)
    if not isinstance(stage, str) or not stage or not stage.replace("-", "").replace("_", "").isalnum():
        raise check.fail("stage", f"must be a name of letters, digits, - and _, got {stage!r}")
    description = check.text(data, "", "description", "")

    filters = []
    for column, spec in check.section(data, "filters").items():
        prefix = f"filters.{column}."
        if column not in POOL_COLUMNS:
            raise check.fail(f"filters.{column}", f"is not a pool column (known: {', '.join(POOL_COLUMNS)})")
        if not isinstance(spec, dict):
            raise check.fail(f"filters.{column}", f"must be a table like {{ min = 0.2 }}, got {spec!r}")
        spec = dict(spec)
        numeric = column in NUMERIC_COLUMNS
        f = Filter(
            column=column,
            min=check.number(spec, prefix, "min", None) if numeric else None,
            max=check.number(spec, prefix, "max", None) if numeric else None,
            min_quantile=check.number(spec, prefix, "min_quantile", None, 0.0, 1.0) if numeric else None,
            equals=spec.pop("equals", None),
            missing=check.choice(spec, prefix, "missing", "keep", ("keep", "drop")),
        )
        check.done(
            spec, prefix, ("min", "max", "min_quantile", "missing") if numeric else ("equals", "missing")
        )
        if f.equals is not None:
            wanted = bool if column in BOOL_COLUMNS else str
            if not isinstance(f.equals, wanted):
                raise check.fail(f"{prefix}equals", f"must be a {wanted.__name__}, got {f.equals!r}")
        if (f.min, f.max, f.min_quantile, f.equals) == (None, None, None, None) and f.missing == "keep":
            raise check.fail(
                f"filters.{column}", "sets no condition (min, max, min_quantile, equals or missing)"
            )
        if f.min is not None and f.max is not None and f.min > f.max:
            raise check.fail(f"filters.{column}", f"has min {f.min} above max {f.max}")
        filters.append(f)

    dedup_section = check.section(data, "dedup")
    dedup = check.choice(dedup_section, "dedup.", "keep", "representative", ("representative", "all"))
    check.done(dedup_section, "dedup.", ("keep",))

    tilts = []
    raw_tilts = data.pop("tilts", [])
    if not isinstance(raw_tilts, list):
        raise check.fail("tilts", "must be an array of tables ([[tilts]])")
    for i, spec in enumerate(raw_tilts):
        prefix = f"tilts[{i}]."
        if not isinstance(spec, dict):
            raise check.fail(f"tilts[{i}]", "must be a table with column and strength")
        spec = dict(spec)
        column = spec.pop("column", None)
        if column not in NUMERIC_COLUMNS:
            raise check.fail(f"{prefix}column", f"must be a numeric pool column, got {column!r}")
        tilts.append(Tilt(column, check.number(spec, prefix, "strength", 1.0, -20.0, 20.0)))
        check.done(spec, prefix, ("column", "strength"))

    section = check.section(data, "concepts")
    sources = section.pop("sources", list(TAG_SOURCES))
    if not isinstance(sources, list) or not sources or any(s not in TAG_SOURCES for s in sources):
        raise check.fail("concepts.sources", f"must be a non-empty list of {', '.join(TAG_SOURCES)}")
    concepts = Concepts(
        sources=tuple(sorted(set(sources))),
        min_score=check.number(section, "concepts.", "min_score", 0.0, 0.0, 1.0),
        depth=check.number(section, "concepts.", "depth", 0, 0, 64, integer=True),
    )
    check.done(section, "concepts.", ("sources", "min_score", "depth"))

    section = check.section(data, "balance")
    balance = Balance(
        method=check.choice(section, "balance.", "method", "none", BALANCE_METHODS),
        threshold=check.number(section, "balance.", "threshold", 20.0, 1e-9),
        alpha=check.number(section, "balance.", "alpha", 0.5, 0.0, 1.0),
        temperature=check.number(section, "balance.", "temperature", 0.0, 0.0, 1.0),
        max_ratio=check.number(section, "balance.", "max_ratio", 100.0, 1.0),
        untagged=check.number(section, "balance.", "untagged", 1.0, 0.0, 1.0),
        mode=check.choice(section, "balance.", "mode", "weight", ("weight", "sample")),
    )
    check.done(section, "balance.", tuple(Balance.__dataclass_fields__))

    section = check.section(data, "buckets")
    sizes = section.pop("sizes", [[256, 256]])
    if (
        not isinstance(sizes, list)
        or not sizes
        or any(
            not isinstance(s, list)
            or len(s) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or not 16 <= v <= 8192 or v % 16 for v in s)
            for s in sizes
        )
    ):
        raise check.fail(
            "buckets.sizes", "must be a list of [height, width] pairs, multiples of 16 in 16..8192"
        )
    if len({tuple(s) for s in sizes}) != len(sizes):
        raise check.fail("buckets.sizes", "lists a bucket twice")
    buckets = Buckets(
        sizes=tuple((int(h), int(w)) for h, w in sizes),
        max_upscale=check.number(section, "buckets.", "max_upscale", 4.0, 1.0),
    )
    check.done(section, "buckets.", ("sizes", "max_upscale"))

    section = check.section(data, "caption")
    forms = section.pop("forms", {"original": 1.0})
    if not isinstance(forms, dict) or not forms:
        raise check.fail("caption.forms", "must be a table like { original = 0.8, ocr = 0.2 }")
    for name, p in forms.items():
        if name not in CAPTION_FORMS:
            raise check.fail(f"caption.forms.{name}", f"is not a caption form ({', '.join(CAPTION_FORMS)})")
        if isinstance(p, bool) or not isinstance(p, int | float) or p < 0:
            raise check.fail(f"caption.forms.{name}", f"must be a probability >= 0, got {p!r}")
    total = sum(forms.values())
    if abs(total - 1.0) > 1e-6:
        raise check.fail("caption.forms", f"probabilities must sum to 1, got {total:g}")
    caption = Caption(
        forms=tuple((name, float(forms[name])) for name in CAPTION_FORMS if name in forms),
        ocr_format=check.text(section, "caption.", "ocr_format", Caption.ocr_format, ("text",)),
        tags_format=check.text(section, "caption.", "tags_format", Caption.tags_format, ("names",)),
        concepts_format=check.text(
            section, "caption.", "concepts_format", Caption.concepts_format, ("names",)
        ),
        max_ocr_chars=check.number(section, "caption.", "max_ocr_chars", 200, 1, 10_000, integer=True),
    )
    check.done(
        section, "caption.", ("forms", "ocr_format", "tags_format", "concepts_format", "max_ocr_chars")
    )

    section = check.section(data, "image_to_image")
    image_to_image = ImageToImage(
        share=check.number(section, "image_to_image.", "share", 0.0, 0.0, 0.9),
        max_per_community=check.number(
            section, "image_to_image.", "max_per_community", 4, 1, 10_000, integer=True
        ),
    )
    check.done(section, "image_to_image.", ("share", "max_per_community"))

    section = check.section(data, "feedback")
    enabled = section.pop("enabled", True)
    if not isinstance(enabled, bool):
        raise check.fail("feedback.enabled", f"must be true or false, got {enabled!r}")
    feedback = Feedback(
        enabled=enabled,
        step_size=check.number(section, "feedback.", "step_size", 0.5, 0.0, 10.0),
        smoothing=check.number(section, "feedback.", "smoothing", 0.1, 0.0, 1.0),
        cap=check.number(section, "feedback.", "cap", 4.0, 1.0, 1000.0),
        min_samples=check.number(section, "feedback.", "min_samples", 4, 1, integer=True),
    )
    check.done(section, "feedback.", tuple(Feedback.__dataclass_fields__))

    section = check.section(data, "draws")
    draws = Draws(
        epoch_fraction=check.number(section, "draws.", "epoch_fraction", 0.5, 1e-6, 1.0),
        repeat_cap=check.number(section, "draws.", "repeat_cap", 8, 1, integer=True),
    )
    check.done(section, "draws.", ("epoch_fraction", "repeat_cap"))

    check.done(
        data,
        "",
        ("stage", "description", "filters", "dedup", "tilts", "concepts", "balance", "buckets",
         "caption", "image_to_image", "feedback", "draws"),
    )  # fmt: skip
    return Recipe(
        stage=stage,
        description=description,
        filters=tuple(filters),
        dedup=dedup,
        tilts=tuple(tilts),
        concepts=concepts,
        balance=balance,
        buckets=buckets,
        caption=caption,
        image_to_image=image_to_image,
        feedback=feedback,
        draws=draws,
        source=where,
    )


def shipped_recipes() -> list[str]:
    """Names of the recipes in engine/curation/recipes/ (lowres, omni, sft, ...)."""
    return sorted(name[:-5] for name in os.listdir(RECIPES_DIR) if name.endswith(".toml"))


def read_recipe_data(name_or_path: str) -> tuple[dict, str]:
    """A recipe's TOML data from a shipped recipe's name or a file path; (data, where)."""
    path = name_or_path
    if not os.path.exists(path) and os.sep not in name_or_path and not name_or_path.endswith(".toml"):
        path = os.path.join(RECIPES_DIR, f"{name_or_path}.toml")
        if not os.path.exists(path):
            raise RecipeError(
                f"no recipe {name_or_path!r}: give a TOML file or one of {', '.join(shipped_recipes())}"
            )
    where = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f), where
    except OSError as e:
        raise RecipeError(f"cannot read recipe {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"recipe {where}: not valid TOML ({e})") from None


def apply_overrides(data: dict, overrides: dict[str, object], where: str) -> dict:
    """Set dotted keys (``filters.clip_score.min``: 0.3, ``balance.method``: "none") in a copy of
    recipe data; the result is checked again by :func:`parse_recipe`."""
    data = copy.deepcopy(data)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if not all(parts):
            raise RecipeError(f"recipe {where}: override key {dotted!r} is not a dotted key")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"recipe {where}: override {dotted} goes through a non-table value")
        node[parts[-1]] = value
    return data


def parse_override(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` from the command line; VALUE is read as TOML (0.3, true, "x", [..]) or a bare word."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {text!r}: write KEY=VALUE, e.g. filters.clip_score.min=0.3")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip(), value


def load_recipe(name_or_path: str, overrides: dict[str, object] | None = None) -> Recipe:
    """Read, override and check a recipe (a shipped name such as ``lowres`` or a TOML path)."""
    data, where = read_recipe_data(name_or_path)
    if overrides:
        data = apply_overrides(data, overrides, where)
    return parse_recipe(data, where)
