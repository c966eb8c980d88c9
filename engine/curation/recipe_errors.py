"""A recipe's mistakes in one line: pydantic's first validation error as ``<dotted key> <what is wrong>``.

``engine.curation.recipe`` checks a recipe with pydantic models; a ``ValidationError`` never leaves
it: :func:`error_line` names the key the way the TOML file writes it (``filters.clip_score.min``,
``tilts[0].column``, ``caption.forms.poem``) and says what the value must be.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel
from pydantic_core import ErrorDetails

# pydantic error types -> what the value must be, in the words of a TOML file
MUST_BE = {
    "float_type": "a number",
    "int_type": "an integer",
    "bool_type": "true or false",
    "string_type": "a string",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "dict_type": "a table",
    "tuple_type": "an array",
}
BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def error_line(error: ErrorDetails, data: Any, root: type[BaseModel]) -> str:
    """``<dotted key> <what is wrong>`` for one error of ``root.model_validate(data)``."""
    return f"{dotted_key(error['loc'], data)} {explain(error, root)}"


def dotted_key(loc: tuple[int | str, ...], data: Any) -> str:
    """A pydantic error location as the file's dotted key, following the data along the way.

    An index into a TOML table that a validator turned into a list (filters, caption.forms)
    becomes the table key's name; into an array of tables, ``[i]`` (tilts[0].column); into an
    array of values, nothing: the array's key names the error (concepts.sources, buckets.sizes).
    """
    key, node = "", data
    for part in loc:
        if isinstance(part, str):
            key = f"{key}.{part}" if key else part
            node = node.get(part) if isinstance(node, dict) else None
        elif isinstance(node, dict) and part < len(node):
            name = list(node)[part]
            key, node = f"{key}.{name}", node[name]
        elif isinstance(node, list) and part < len(node) and isinstance(node[part], dict):
            key, node = f"{key}[{part}]", node[part]
        else:
            node = None
    return key


def known_keys(root: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys of the table holding ``loc``'s last part: its model's fields but the excluded ones."""
    model = root
    for part in loc[:-1]:
        if isinstance(part, str):
            annotation = model.model_fields[part].annotation
            model = next(t for t in (annotation, *get_args(annotation)) if isinstance(t, type))
    return [name for name, field in model.model_fields.items() if not field.exclude]


def explain(error: ErrorDetails, root: type[BaseModel]) -> str:
    """What is wrong with the value, in one line."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "value_error":  # the recipe's own validators: their message is the explanation
        return str(ctx["error"])
    if kind == "extra_forbidden":
        return f"is not a known key (known: {', '.join(known_keys(root, error['loc']))})"
    if kind == "missing":  # a key, or an item of a fixed-length array such as [height, width]
        return "is required" if isinstance(error["loc"][-1], str) else f"lacks an item, got {value!r}"
    if kind in MUST_BE:
        return f"must be {MUST_BE[kind]}, got {value!r}"
    if kind in BOUNDS:
        return f"must be {BOUNDS[kind]} {next(iter(ctx.values()))}, got {value!r}"
    if kind == "multiple_of":
        return f"must be a multiple of {ctx['multiple_of']}, got {value!r}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}, got {value!r}"
    if kind == "too_short":
        return f"must have at least {ctx['min_length']} item(s), got {value!r}"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} item(s), got {value!r}"
    return f"{error['msg'][:1].lower()}{error['msg'][1:]}, got {value!r}"
