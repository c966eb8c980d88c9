"""Stage recipes: what a stage's manifest keeps, how it weights, buckets and captions its samples.

A recipe is a TOML file (the shipped ones live in ``engine/curation/recipes/``: lowres, omni, sft; see
DESIGN.md section 4). A user writes a new one without touching code and passes it with
``zcurate manifest --recipe FILE``. Every key is checked when the file is read (pydantic models,
one per table, ``extra="forbid"``): an unknown key, a wrong type or a value out of range gives one
line naming the dotted key (:class:`RecipeError`), never a pydantic ``ValidationError``.

Tables (every one optional except ``stage``; each is a model below, whose fields are its keys)::

    stage = "lowres"                   # the manifest's stage name (manifests/<stage>/...)
    [filters.<column>]                 # Filter: hard filters on pool columns (POOL_COLUMNS)
    [dedup]                            # Dedup: representative (one per community) | all
    [[tilts]]                          # Tilt: weight *= exp(strength * (rank - 0.5))
    [concepts]                         # Concepts: which tags count as a sample's concepts
    [balance]                          # Balance: none | metaclip | hierarchical | uniform
    [buckets]                          # Buckets: (height, width) sizes, max_upscale
    [caption]                          # Caption: forms = { original = 0.8, ocr = 0.2 }, formats
    [image_to_image]                   # ImageToImage: pairs from near-duplicate communities
    [feedback]                         # Feedback: the trainer's per-concept loss (engine.curation.feedback)
    [draws]                            # Draws: --size N as epochs of weighted draws

Also: reading a shipped recipe or a file (:func:`load_recipe`), ``--set KEY=VALUE`` overrides
(:func:`parse_override`, :func:`apply_overrides`), and :meth:`Recipe.to_dict` back to TOML data.
"""

from __future__ import annotations

import copy
import math
import os
import tomllib
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine.curation.pool import BOOL_COLUMNS, FILTER_COLUMNS, NUMERIC_COLUMNS
from engine.curation.recipe_errors import error_line, known_keys
from engine.schema import TAG_SOURCES

RECIPES_DIR = os.path.join(os.path.dirname(__file__), "recipes")

POOL_COLUMNS = tuple(FILTER_COLUMNS.names)  # what a filter may name (engine.curation.pool says why)

BalanceMethod = Literal["none", "metaclip", "hierarchical", "uniform"]
CaptionForm = Literal["original", "ocr", "tags", "enhanced"]
TagSource = Literal[TAG_SOURCES]
CAPTION_FORMS = get_args(CaptionForm)  # this order is the order of recipe.caption.forms


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the key."""


# --- value types ----------------------------------------------------------------------------------


def _not_nan(value: float) -> float:
    if math.isnan(value):
        raise ValueError(f"must be a number, got {value!r}")
    return value


# Strict: TOML has real types, so "0.3" (a string) or true (a bool) is a mistake, never a number.
Number = Annotated[float, Strict(), AfterValidator(_not_nan)]  # an integer or a float, stored as float
Fraction = Annotated[Number, Field(ge=0.0, le=1.0)]
# A bucket side: a multiple of 16 (a 2x2 patch over an 8x-downsampled latent), at most 8192 px.
BucketSide = Annotated[StrictInt, Field(ge=16, le=8192, multiple_of=16)]


def _only_placeholders(template: str, *placeholders: str) -> str:
    """A caption format may use only its placeholders (``{text}`` or ``{names}``)."""
    try:
        template.format(**{name: "" for name in placeholders})
    except (KeyError, IndexError, ValueError) as e:
        allowed = ", ".join("{" + p + "}" for p in placeholders)
        raise ValueError(f"may only use {allowed} ({e})") from None
    return template


# --- the recipe's tables --------------------------------------------------------------------------


class _Table(BaseModel):
    """A recipe table: frozen (hashable, comparable), and an unknown key is an error. A field with
    ``exclude=True`` is not a key of the file (a filter's column is its table's name)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Filter(_Table):
    """``[filters.<column>]``: a hard filter on a pool column; a sample must pass every filter."""

    column: str = Field(exclude=True)  # a pool column (POOL_COLUMNS): the name of the filter's TOML table
    min: Number | None = None  # numeric columns: keep min <= value <= max
    max: Number | None = None
    min_quantile: Fraction | None = None  # numeric columns: keep value >= its quantile over the pool
    equals: StrictBool | StrictStr | None = None  # bool or text columns: keep value == equals
    missing: Literal["keep", "drop"] = "keep"  # rows where the column is null

    @model_validator(mode="before")
    @classmethod
    def _known_column(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("column") not in POOL_COLUMNS:
            raise ValueError(f"is not a pool column (known: {', '.join(POOL_COLUMNS)})")
        return data

    @field_validator("min", "max", "min_quantile", mode="before")
    @classmethod
    def _numeric_column(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data.get("column") not in NUMERIC_COLUMNS:
            raise ValueError("is not a key of a bool or text column (known: equals, missing)")
        return value

    @field_validator("equals", mode="before")
    @classmethod
    def _equals_the_column_type(cls, value: Any, info: ValidationInfo) -> Any:
        column = info.data.get("column")
        if column in NUMERIC_COLUMNS:
            raise ValueError("is not a key of a numeric column (known: min, max, min_quantile, missing)")
        wanted = bool if column in BOOL_COLUMNS else str
        if not isinstance(value, wanted):
            raise ValueError(f"must be a {wanted.__name__}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _a_condition(self) -> Filter:
        if (self.min, self.max, self.min_quantile, self.equals) == (None,) * 4 and self.missing == "keep":
            raise ValueError("sets no condition (min, max, min_quantile, equals or missing)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"has min {self.min} above max {self.max}")
        return self


class Dedup(_Table):
    """``[dedup]``: which members of a near-duplicate community the manifest keeps."""

    keep: Literal["representative", "all"] = "representative"


class Tilt(_Table):
    """``[[tilts]]``: weight *= exp(strength * (rank - 0.5)) (engine.curation.sampling.rank_tilt)."""

    column: str  # a numeric pool column
    strength: Annotated[Number, Field(ge=-20.0, le=20.0)] = 1.0  # |20|: e^20 between the ends, a filter

    @field_validator("column", mode="before")
    @classmethod
    def _numeric_column(cls, value: Any) -> Any:
        if value not in NUMERIC_COLUMNS:
            raise ValueError(f"must be a numeric pool column, got {value!r}")
        return value


class Concepts(_Table):
    """``[concepts]``: which tags count as a sample's concepts."""

    sources: Annotated[tuple[TagSource, ...], Field(min_length=1)] = tuple(sorted(TAG_SOURCES))
    min_score: Fraction = 0.0
    depth: Annotated[StrictInt, Field(ge=0, le=64)] = 0  # WordNet nouns are at most ~20 deep
    # Concepts the tagging step marked as corpus noise (the concepts table's noise column,
    # engine.graph.noise): "stop" leaves them out of a sample's concepts, "keep" counts them.
    noise: Literal["stop", "keep"] = "stop"
    keep: tuple[StrictStr, ...] = ()  # synsets counted even when marked as noise
    stop: tuple[StrictStr, ...] = ()  # synsets never counted (a list of your own)

    @field_validator("keep", "stop")
    @classmethod
    def _as_set(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(value)))

    @field_validator("sources")
    @classmethod
    def _sorted(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(value)))  # a set: the order in the file means nothing


class Balance(_Table):
    """``[balance]``: concept balancing (engine.curation.balancing)."""

    method: BalanceMethod = "none"
    threshold: Annotated[Number, Field(gt=0.0)] = 20.0  # metaclip / hierarchical: t
    alpha: Fraction = 0.5  # hierarchical: a subtree's budget t * k ** alpha
    temperature: Fraction = 0.0  # uniform: target marginal ~ n_c ** temperature
    max_ratio: Annotated[Number, Field(ge=1.0)] = 100.0  # uniform: largest / smallest positive weight
    untagged: Fraction = 1.0  # factor of samples without concepts
    mode: Literal["weight", "sample"] = "weight"  # multiply by the keep probability, or keep or drop


class Buckets(_Table):
    """``[buckets]``: (height, width) resolution buckets (engine.curation.sampling.nearest_bucket)."""

    sizes: Annotated[tuple[tuple[BucketSide, BucketSide], ...], Field(min_length=1)] = ((256, 256),)
    max_upscale: Annotated[Number, Field(ge=1.0)] = 4.0

    @field_validator("sizes")
    @classmethod
    def _distinct(cls, value: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
        if len(set(value)) != len(value):
            raise ValueError("lists a bucket twice")
        return value


class Caption(_Table):
    """``[caption]``: the caption forms and their probabilities (engine.curation.captions)."""

    forms: tuple[tuple[CaptionForm, Annotated[Number, Field(ge=0.0)]], ...] = (("original", 1.0),)
    ocr_format: StrictStr = ' The image shows the text "{text}".'
    tags_format: StrictStr = "{names}"
    concepts_format: StrictStr = " Concepts: {names}."
    max_ocr_chars: Annotated[StrictInt, Field(ge=1, le=10_000)] = 200  # 10k: a page, not a caption

    @field_validator("forms", mode="before")
    @classmethod
    def _table_to_pairs(cls, value: Any) -> Any:
        """TOML writes ``forms = { original = 0.8, ocr = 0.2 }``; the recipe holds (form, p) pairs."""
        if isinstance(value, dict) and value:
            return tuple(value.items())
        if not isinstance(value, tuple) or not value:
            raise ValueError("must be a table like { original = 0.8, ocr = 0.2 }")
        return value

    @field_validator("forms")
    @classmethod
    def _sum_to_one(cls, value: tuple[tuple[str, float], ...]) -> tuple[tuple[str, float], ...]:
        total = sum(p for _, p in value)
        if abs(total - 1.0) > 1e-6:  # 1e-6: decimal fractions in a file never sum to 1 exactly
            raise ValueError(f"probabilities must sum to 1, got {total:g}")
        return tuple(sorted(value, key=lambda pair: CAPTION_FORMS.index(pair[0])))

    @field_validator("ocr_format")
    @classmethod
    def _ocr_placeholder(cls, value: str) -> str:
        return _only_placeholders(value, "text")

    @field_validator("tags_format", "concepts_format")
    @classmethod
    def _names_placeholder(cls, value: str) -> str:
        return _only_placeholders(value, "names")


class ImageToImage(_Table):
    """``[image_to_image]``: pairs from near-duplicate communities (omni)."""

    share: Annotated[Number, Field(ge=0.0, le=0.9)] = 0.0  # <= 0.9: text-to-image keeps a tenth
    max_per_community: Annotated[StrictInt, Field(ge=1, le=10_000)] = 4


class Feedback(_Table):
    """``[feedback]``: the trainer's per-concept loss reweights the next manifest (feedback.py)."""

    enabled: StrictBool = True
    step_size: Annotated[Number, Field(ge=0.0, le=10.0)] = 0.5  # e^10 per report: beyond it, noise wins
    smoothing: Fraction = 0.1
    cap: Annotated[Number, Field(ge=1.0, le=1000.0)] = 4.0
    min_samples: Annotated[StrictInt, Field(ge=1)] = 4


class Draws(_Table):
    """``[draws]``: ``--size N`` materialises N draws, epoch by epoch (sampling.weighted_draws)."""

    epoch_fraction: Annotated[Number, Field(gt=0.0, le=1.0)] = 0.5
    repeat_cap: Annotated[StrictInt, Field(ge=1)] = 8


class Recipe(_Table):
    """A stage recipe, checked; ``to_dict()`` gives its TOML-shaped data back."""

    stage: StrictStr
    description: StrictStr = ""
    filters: tuple[Filter, ...] = ()
    dedup: Dedup = Dedup()
    tilts: tuple[Tilt, ...] = ()
    concepts: Concepts = Concepts()
    balance: Balance = Balance()
    buckets: Buckets = Buckets()
    caption: Caption = Caption()
    image_to_image: ImageToImage = ImageToImage()
    feedback: Feedback = Feedback()
    draws: Draws = Draws()
    source: str = Field("", exclude=True)  # where it was read from (not part of the recipe's identity)

    @field_validator("stage")
    @classmethod
    def _a_name(cls, value: str) -> str:
        if not value or not value.replace("-", "").replace("_", "").isalnum():  # one path component
            raise ValueError(f"must be a name of letters, digits, - and _, got {value!r}")
        return value

    @field_validator("filters", mode="before")
    @classmethod
    def _tables_to_filters(cls, value: Any) -> Any:
        """TOML writes one table per filter, ``[filters.<column>]``: the table's name is the column."""
        if isinstance(value, tuple):  # Filter objects, from Python
            return value
        if not isinstance(value, dict):
            raise ValueError(f"must be a table of filters like [filters.clip_score], got {value!r}")
        filters = []
        for column, spec in value.items():
            if isinstance(spec, dict) and "column" in spec:
                raise ValueError(
                    f"may not set a column inside [filters.{column}]: the table's name is the column"
                )
            filters.append({**spec, "column": column} if isinstance(spec, dict) else spec)
        return tuple(filters)

    def to_dict(self) -> dict:
        """The recipe as TOML-shaped plain data: :func:`parse_recipe` reads it back to an equal
        recipe (the sidecar's copy, the manifest id's input, the trainer's refresh)."""
        data = self.model_dump(mode="json")  # tuples as lists; the excluded fields are not keys
        data["filters"] = {f.column: f.model_dump(mode="json", exclude_none=True) for f in self.filters}
        data["caption"]["forms"] = dict(data["caption"]["forms"])
        return data

    def columns(self) -> list[str]:
        """Pool columns the recipe reads (filters and tilts), in first-use order."""
        names = [f.column for f in self.filters] + [t.column for t in self.tilts]
        return list(dict.fromkeys(names))


# --- reading and checking -------------------------------------------------------------------------


def parse_recipe(data: dict, where: str) -> Recipe:
    """Check a recipe's TOML data (a dict) and build the :class:`Recipe`.

    Raises:
        RecipeError: one line, ``recipe <where>: <dotted key> <what is wrong>``, for the first mistake.
    """
    if "source" in data:  # a field, but not a key: where the recipe was read from
        raise RecipeError(
            f"recipe {where}: source is not a known key (known: {', '.join(known_keys(Recipe, ()))})"
        )
    try:
        return Recipe.model_validate({**data, "source": where})
    except ValidationError as e:
        raise RecipeError(
            f"recipe {where}: {error_line(e.errors(include_url=False)[0], data, Recipe)}"
        ) from None


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
