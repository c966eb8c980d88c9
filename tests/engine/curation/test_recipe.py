"""Stage recipes: the shipped ones load, a user's file works, every mistake names its key."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from engine.curation.manifest_store import sidecar_recipe
from engine.curation.pool import BOOL_COLUMNS, NUMERIC_COLUMNS, TEXT_COLUMNS
from engine.curation.recipe import (
    POOL_COLUMNS,
    RecipeError,
    apply_overrides,
    load_recipe,
    parse_override,
    parse_recipe,
    read_recipe_data,
    shipped_recipes,
)


def test_the_paper_stages_ship_as_recipes():
    assert {"lowres", "omni", "sft"} <= set(shipped_recipes())
    lowres, omni, sft = (load_recipe(name) for name in ("lowres", "omni", "sft"))
    assert lowres.buckets.sizes == ((256, 256),) and lowres.balance.method == "metaclip"
    assert omni.image_to_image.share == pytest.approx(0.2)  # t2i : i2i = 4 : 1 (paper)
    assert {name for name, _ in omni.caption.forms} == {"original", "ocr", "tags"}
    assert max(max(s) for s in omni.buckets.sizes) == 1536
    assert all(h % 64 == 0 and w % 64 == 0 for h, w in omni.buckets.sizes if max(h, w) > 768)
    assert sft.balance.method == "uniform" and sft.caption.forms == (("enhanced", 1.0),)


@pytest.mark.parametrize("name", ["lowres", "omni", "sft"])
def test_to_dict_reads_back_to_the_same_recipe(name):
    recipe = load_recipe(name)
    again = parse_recipe(recipe.to_dict(), "copy")
    assert again.model_copy(update={"source": recipe.source}) == recipe


def test_a_user_recipe_file_needs_no_code(tmp_path):
    path = tmp_path / "textmix.toml"
    path.write_text(
        'stage = "textmix"\n'
        "[filters.text_area_ratio]\nmin = 0.05\nmissing = 'drop'\n"
        "[[tilts]]\ncolumn = 'ocr_conf_mean'\nstrength = 2\n"
        "[buckets]\nsizes = [[512, 512], [512, 768]]\n"
    )
    recipe = load_recipe(str(path))
    assert recipe.stage == "textmix" and recipe.filters[0].missing == "drop"
    assert recipe.columns() == ["text_area_ratio", "ocr_conf_mean"]
    assert recipe.buckets.sizes == ((512, 512), (512, 768))


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('stage = "x"\ncolour = 1\n', "colour"),
        ('stage = "x"\n[filters.clip_scor]\nmin = 0.2\n', "filters.clip_scor"),
        ('stage = "x"\n[filters.clip_score]\nminimum = 0.2\n', "filters.clip_score.minimum"),
        ('stage = "x"\n[filters.clip_score]\nmin = "high"\n', "filters.clip_score.min"),
        ('stage = "x"\n[filters.clip_score]\nmin_quantile = 1.5\n', "filters.clip_score.min_quantile"),
        ('stage = "x"\n[filters.clip_score]\nmin = 0.5\nmax = 0.1\n', "filters.clip_score"),
        ('stage = "x"\n[filters.has_watermark_text]\nequals = "no"\n', "filters.has_watermark_text.equals"),
        ('stage = "x"\n[balance]\nmethod = "magic"\n', "balance.method"),
        ('stage = "x"\n[balance]\nthreshold = -1\n', "balance.threshold"),
        ('stage = "x"\n[buckets]\nsizes = [[250, 256]]\n', "buckets.sizes"),
        ('stage = "x"\n[caption]\nforms = { original = 0.5 }\n', "caption.forms"),
        ('stage = "x"\n[caption]\nforms = { poem = 1.0 }\n', "caption.forms.poem"),
        ('stage = "x"\n[caption]\nocr_format = "{txt}"\n', "caption.ocr_format"),
        ('stage = "x"\n[[tilts]]\ncolumn = "caption"\n', "tilts[0].column"),
        ('stage = "x"\n[image_to_image]\nshare = 1.0\n', "image_to_image.share"),
        ('stage = "x"\n[draws]\nrepeat_cap = 0\n', "draws.repeat_cap"),
        ('stage = "x"\n[concepts]\nsources = ["tv"]\n', "concepts.sources"),
        ('stage = "../x"\n', "stage"),
        ("[balance]\n", "stage"),
    ],
)
def test_a_wrong_key_or_value_is_one_line_naming_the_key(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(str(path))
    message = str(info.value)
    assert "\n" not in message and f"recipe bad.toml: {key} " in message, message


def test_unknown_recipe_and_bad_toml(tmp_path):
    with pytest.raises(RecipeError, match="no recipe 'warmup': give a TOML file or one of"):
        load_recipe("warmup")
    bad = tmp_path / "broken.toml"
    bad.write_text("stage = \n")
    with pytest.raises(RecipeError, match=r"recipe broken\.toml: not valid TOML"):
        load_recipe(str(bad))


def test_overrides_change_a_key_and_are_checked_again():
    recipe = load_recipe("lowres", {"filters.clip_score.min": 0.3, "balance.method": "none"})
    clip = next(f for f in recipe.filters if f.column == "clip_score")
    assert clip.min == 0.3 and clip.min_quantile == 0.05 and recipe.balance.method == "none"
    with pytest.raises(RecipeError, match=r"balance\.method must be one of"):
        load_recipe("lowres", {"balance.method": "magic"})
    data, where = read_recipe_data("lowres")
    with pytest.raises(RecipeError, match="override key"):
        apply_overrides(data, {"filters..min": 1}, where)
    assert parse_override("filters.clip_score.min=0.3") == ("filters.clip_score.min", 0.3)
    assert parse_override("balance.method=none") == ("balance.method", "none")
    assert parse_override("buckets.sizes=[[512, 512]]") == ("buckets.sizes", [[512, 512]])
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        parse_override("balance.method")


def test_a_sidecar_gives_back_the_filters_in_their_order():
    recipe = load_recipe("sft")  # filters: nsfw_score, clip_score, entropy, min_side, has_watermark_text
    sidecar = json.loads(json.dumps({"recipe": recipe.to_dict()}, sort_keys=True))  # as written to disk
    assert [f.column for f in parse_recipe(sidecar["recipe"], "x").filters] == sorted(recipe.columns()[:5])
    sidecar["counts"] = {"filters": [{"filter": f.column} for f in recipe.filters]}
    again = sidecar_recipe(sidecar, recipe.source)
    assert again == recipe and again.columns() == recipe.columns()


def test_pool_columns_come_from_the_schema_by_type():
    kinds = (NUMERIC_COLUMNS, BOOL_COLUMNS, TEXT_COLUMNS)
    assert sorted(POOL_COLUMNS) == sorted(sum(kinds, ()))  # every column has exactly one kind
    assert {"clip_score", "nsfw_score", "min_side", "pixels", "bits_per_pixel"} <= set(NUMERIC_COLUMNS)
    assert {"has_ocr_text", "has_watermark_text", "caption_has_cjk"} <= set(BOOL_COLUMNS)
    assert {"source_kind", "caption_lang", "ocr_lang", "image_format"} <= set(TEXT_COLUMNS)
    assert not {"sample_id", "image_id", "phash", "ocr_lines"} & set(POOL_COLUMNS)
    with pytest.raises(RecipeError, match=r"recipe x: filters\.phash is not a pool column"):
        parse_recipe({"stage": "s", "filters": {"phash": {"min": 0}}}, "x")
    with pytest.raises(
        RecipeError, match=r"recipe x: filters\.image_mode\.min is not a key of a bool or text"
    ):
        parse_recipe({"stage": "s", "filters": {"image_mode": {"min": 0}}}, "x")


def test_a_validation_error_never_escapes():
    for data in (
        {"stage": "s", "buckets": {"sizes": [[256]]}},
        {"stage": "s", "filters": 3},
        {"stage": "s", "source": "y"},
    ):
        with pytest.raises(RecipeError) as info:
            parse_recipe(data, "x")
        assert "\n" not in str(info.value) and not isinstance(info.value, ValidationError)
