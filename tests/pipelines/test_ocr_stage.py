"""The OCR stage in the curate job (no Ray) and as `zcurate ocr` on a curated workspace (real Ray)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from engine.catalog import refresh_catalog, run_sql
from engine.profiling.folder_source import FolderSource
from engine.profiling.ingest import IngestConfig
from engine.profiling.ocr_models import OcrConfig
from engine.profiling.plan import plan_source, save_source_config
from engine.workspace import Workspace
from pipelines.stages import IMAGE_STAGES, OcrStage
from tests.data import run_shards_here
from tests.ocr_data import font, gradient, render_lines

ZCURATE = os.path.join(os.path.dirname(sys.executable), "zcurate")

# (stem, lines rendered, caption)
PAIRS = [
    ("00000", ["Fresh Coffee"], "a sign saying fresh coffee"),
    ("00001", ["新鲜咖啡"], "招牌：新鲜咖啡"),
    ("00002", ["Open 24h", "全天营业"], "a shop front"),
    ("00003", None, "a smooth gradient with no text"),
]


def write_text_folder(folder: str) -> str:
    os.makedirs(folder, exist_ok=True)
    for stem, lines, caption in PAIRS:
        image = gradient((200, 120)) if lines is None else render_lines(lines, font(cjk=True), 36)
        image.save(os.path.join(folder, f"{stem}.png"))
        with open(os.path.join(folder, f"{stem}.txt"), "w", encoding="utf-8") as f:
            f.write(caption)
    return folder


def test_ocr_is_registered_with_an_embedded_default():
    stage = IMAGE_STAGES["ocr"]()
    assert stage.table == "ocr" and stage.config.backend in ("paddleocr", "rapidocr")
    assert stage._ocr is None  # nothing loaded before setup(): the stage pickles to Ray actors


def test_curate_shard_writes_ocr_rows_seen_in_the_signals_view(tmp_path):
    folder = write_text_folder(str(tmp_path / "src"))
    ws = Workspace(str(tmp_path / "ws")).create()
    source = FolderSource(folder, 2**30)
    plan = plan_source(ws, source, shard_size=3)
    save_source_config(ws, source, IngestConfig())
    stage = OcrStage(OcrConfig(backend="paddleocr", cache_dir=str(tmp_path / "cache")))
    run_shards_here(ws, source, plan, [stage])
    assert ws.list_shards("ocr") == ws.list_shards("samples")
    refresh_catalog(ws)
    rows = run_sql(
        ws,
        "SELECT caption, ocr_text, ocr_lang, ocr_caption_overlap, text_area_ratio, has_watermark_text, "
        "len(ocr_lines) AS n_lines FROM sample_signals ORDER BY caption",
    ).to_pylist()
    by_caption = {r["caption"]: r for r in rows}
    assert len(rows) == 4
    coffee = by_caption["a sign saying fresh coffee"]
    assert coffee["ocr_text"] == "Fresh Coffee" and coffee["ocr_lang"] == "en"
    assert coffee["ocr_caption_overlap"] == 1.0 and coffee["n_lines"] == 1
    chinese = by_caption["招牌：新鲜咖啡"]
    assert (
        chinese["ocr_text"] == "新鲜咖啡"
        and chinese["ocr_lang"] == "zh"
        and chinese["ocr_caption_overlap"] == 1.0
    )
    shop = by_caption["a shop front"]
    assert "".join(shop["ocr_text"].split()) == "Open24h全天营业" and shop["ocr_lang"] == "mixed"
    assert shop["ocr_caption_overlap"] == 0.0 and shop["n_lines"] == 2
    blank = by_caption["a smooth gradient with no text"]
    assert blank["ocr_text"] == "" and blank["ocr_lang"] == "none" and blank["text_area_ratio"] == 0.0
    assert blank["ocr_caption_overlap"] is None
    assert not any(r["has_watermark_text"] for r in rows)


def test_ocr_command_with_a_missing_model_dir_is_one_line(tmp_path):
    ws = Workspace(str(tmp_path / "ws")).create()
    os.makedirs(ws.path("samples"))  # the check comes before any work, so an empty workspace will do
    result = subprocess.run(
        [ZCURATE, "ocr", "-w", ws.root, "--ocr-det-model-dir", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--ocr-det-model-dir" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.ray
@pytest.mark.slow
def test_zcurate_ocr_fills_a_workspace_curated_without_it(tmp_path):
    folder = write_text_folder(str(tmp_path / "src"))
    ws = str(tmp_path / "ws")
    env = {**os.environ, "ZCURATE_OCR_CACHE_DIR": str(tmp_path / "cache")}

    def zcurate(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([ZCURATE, *args], capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    zcurate("curate", folder, "-w", ws, "--shard-size", "2", "--num-cpus", "2", "--stages", "profile")
    assert Workspace(ws).list_shards("ocr") == []
    first = zcurate("ocr", "-w", ws, "--num-cpus", "2")
    assert "2 of 2 shards run, 4 rows written" in first.stdout
    texts = run_sql(Workspace(ws), "SELECT ocr_text FROM signals WHERE ocr_text <> '' ORDER BY ocr_text")
    assert ["".join(t.split()) for t in texts["ocr_text"].to_pylist()] == [
        "FreshCoffee",
        "Open24h全天营业",
        "新鲜咖啡",
    ]
    again = zcurate("ocr", "-w", ws, "--num-cpus", "2")
    assert "0 of 2 shards run" in again.stdout
