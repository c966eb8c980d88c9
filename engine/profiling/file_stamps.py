"""Which records of a curated source changed on disk since they were ingested.

A plan remembers records by reference (a path, a row, a tar member), so a file rewritten in place
(same path, other bytes) would be skipped on a rerun. Each plan keeps a stamp per record beside it,
``WS/_plans/<prefix>.stamps.parquet``: the size and modification time of the file the image comes
from (the image file, or the tar/Parquet file holding it) and of its caption sidecar. A rerun
stats them again (one listing call; no file is read), and ``changed_shards`` names the shards
holding a record whose stamp moved: the curate job drops those shards from every table and runs
them again, so they are re-ingested with everything downstream (indexes, dedup, tags).
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine.profiling.records import SourceError, open_filesystem


def stamps_rel(ws, prefix: str) -> str:
    return f"{ws.plans}/{prefix}.stamps.parquet"


def container(uri: str) -> str:
    """The file an image comes from: ``a.tar#member`` and ``t.parquet#col:row`` -> the archive/table."""
    head, sep, _ = uri.rpartition("#")
    return head if sep and head.endswith((".tar", ".parquet")) else uri


def record_files(source, rows: pa.Table) -> list[list[str]]:
    """Per plan row: the files whose stamps stand for it (its image's file, its caption sidecar)."""
    base = getattr(source, "base", None)  # folder sources: caption sidecars are relative to it
    files = []
    for uri, caption_ref in zip(rows["uri"].to_pylist(), rows["caption_ref"].to_pylist(), strict=True):
        mine = [container(uri)] if uri else []
        if caption_ref and base and "#" not in caption_ref:
            mine.append(f"{base}/{caption_ref}")
        files.append(mine)
    return files


def current_stamps(source, rows: pa.Table) -> list[str] | None:
    """``size:mtime_ns`` of each row's files, joined; ``missing`` for a file that is gone. None when
    the files cannot be statted at all (then nothing is compared: a failed listing must not look
    like every file changed)."""
    files = record_files(source, rows)
    distinct = sorted({f for fs in files for f in fs})
    if not distinct:
        return [""] * rows.num_rows
    try:
        fs, _ = open_filesystem(distinct[0])
        # one filesystem for the source; a URI's path is what follows its scheme (s3://b/k -> b/k)
        paths = [f.split("://", 1)[1] if "://" in f else os.path.abspath(f) for f in distinct]
        infos = dict(zip(distinct, fs.get_file_info(paths), strict=True))
    except (SourceError, OSError, pa.ArrowException):
        return None
    stamp = {
        f: "missing" if i.type == pafs.FileType.NotFound else f"{i.size}:{i.mtime_ns}"
        for f, i in infos.items()
    }
    return ["|".join(stamp[f] for f in fs_) for fs_ in files]


def changed_shards(ws, source, plan_rows: pa.Table, prefix: str) -> list[int]:
    """Shard numbers holding a record whose files changed since the stamps were taken; stores the
    new stamps. The first call for a plan (or one from before stamps were kept) only stores them."""
    now = current_stamps(source, plan_rows)
    if now is None:  # cannot stat: keep the stored stamps, call nothing changed
        return []
    rel = stamps_rel(ws, prefix)
    before = {}
    if ws.exists(rel):
        stored = pq.read_table(ws.path(rel), filesystem=ws.fs)
        before = dict(zip(stored["ref"].to_pylist(), stored["stamp"].to_pylist(), strict=True))
    refs, shards = plan_rows["ref"].to_pylist(), plan_rows["shard"].to_pylist()
    changed = sorted(
        {s for ref, s, stamp in zip(refs, shards, now, strict=True) if before.get(ref, stamp) != stamp}
    )
    if [before.get(ref) for ref in refs] != now:
        ws.write_parquet(
            rel, pa.table({"ref": pa.array(refs, pa.string()), "stamp": pa.array(now, pa.string())})
        )
    return changed
