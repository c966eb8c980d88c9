"""The caption a stage trains with: original, OCR-augmented, tag names, or prompt-enhanced."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.catalog import connect_catalog
from engine.curation.recipe import CAPTION_FORMS, Recipe
from engine.workspace import Workspace


def _split_format(template: str, placeholder: str) -> tuple[str, str]:
    """A one-placeholder str.format template as (prefix, suffix) literal strings."""
    marker = "\x00"
    text = template.format(**{placeholder: marker})
    prefix, _, suffix = text.partition(marker)
    return prefix, suffix


def _wrap(values: pa.Array, template: str, placeholder: str) -> pa.Array:
    prefix, suffix = _split_format(template, placeholder)
    return pc.binary_join_element_wise(prefix, values, suffix, "")


def concept_names(ws: Workspace, concept_ids: np.ndarray) -> dict[int, str]:
    """Readable names of concepts (first lemma, underscores as spaces) for captions and summaries."""
    if len(concept_ids) == 0:
        return {}
    rows = concept_query(
        ws,
        concept_ids,
        "SELECT c.concept_id, coalesce(c.lemmas[1], split_part(c.synset, '.', 1)) AS name "
        "FROM concepts c JOIN wanted USING (concept_id)",
    ).to_pylist()
    return {r["concept_id"]: r["name"].replace("_", " ") for r in rows}


def concept_query(ws: Workspace, concept_ids: np.ndarray, sql: str) -> pa.Table:
    """Run ``sql`` over the catalog with the given concept ids as table ``wanted``."""
    con = connect_catalog(ws)
    try:
        con.register("wanted", pa.table({"concept_id": pa.array(concept_ids, pa.int64())}))
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def build_captions(
    rows: pa.Table, recipe: Recipe, forms: np.ndarray, names_joined: Callable[[], pa.Array]
) -> tuple[pa.Array, pa.Array]:
    """(caption, caption_form) per row; a form without material (no OCR text, no concept) falls
    back to the original caption. Only the forms the recipe uses are built (``names_joined``
    is called only when a form needs concept names)."""
    cfg = recipe.caption
    original = rows["caption"].combine_chunks()
    used = [(i, form) for i, (form, p) in enumerate(cfg.forms) if p > 0 and form != "original"]
    code = np.zeros(rows.num_rows, dtype=np.int64)  # index into CAPTION_FORMS; 0 = original
    caption = original
    if used:
        ocr_part = names_part = None
        has_ocr = has_names = None
        if any(form in ("ocr", "enhanced") for _, form in used):
            text = rows["ocr_text"].combine_chunks() if "ocr_text" in rows.column_names else None
            if text is None:
                text = pa.nulls(rows.num_rows, pa.string())
            text = pc.utf8_slice_codeunits(
                pc.utf8_trim_whitespace(pc.replace_substring(text, "\n", " / ")), 0, cfg.max_ocr_chars
            )
            has_ocr = pc.fill_null(pc.greater(pc.utf8_length(text), 0), False)
            ocr_part = pc.if_else(has_ocr, _wrap(pc.fill_null(text, ""), cfg.ocr_format, "text"), "")
        if any(form in ("tags", "enhanced") for _, form in used):
            names = names_joined()
            has_names = pc.greater(pc.utf8_length(names), 0)
            names_part = pc.if_else(has_names, _wrap(names, cfg.concepts_format, "names"), "")
        everywhere = pa.array(np.ones(rows.num_rows, dtype=bool))
        for i, form in used:
            if form == "ocr":
                text, usable = pc.binary_join_element_wise(original, ocr_part, ""), has_ocr
            elif form == "tags":
                text, usable = _wrap(names, cfg.tags_format, "names"), has_names
            else:  # enhanced: caption + OCR text + concept names, each part only when there is one
                parts = [p for p in (ocr_part, names_part) if p is not None]
                text, usable = pc.binary_join_element_wise(original, *parts, ""), everywhere
            chosen = (forms == i) & np.asarray(usable.to_numpy(zero_copy_only=False), dtype=bool)
            code[chosen] = CAPTION_FORMS.index(form)
            caption = pc.if_else(pa.array(chosen), text, caption)
    form_names = pa.array(CAPTION_FORMS, pa.string()).take(pa.array(code))
    return caption, form_names
