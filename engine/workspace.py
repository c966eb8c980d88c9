"""The workspace: one directory (or pyarrow filesystem URI) holding every table as Parquet shards.

Layout (DESIGN.md section 3); every path below is named once, here, by a property or a ``*_rel``
method, and relative to the workspace root::

    WS/<table>/<shard_id>.parquet     one file per shard of work, per table (schema.TABLES)
    WS/_plans/<kind>-<key>.parquet    the record -> shard assignment of each source (plan_rel)
    WS/_plans/<kind>-<key>.json       how that source was opened and judged (source_config_rel)
    WS/embeddings/<model>/<shard_id>.parquet  each embedding model's vectors (table_rel)
    WS/index/<model>/<modality>.*     FAISS indexes, id maps and their metadata (index_rel)
    WS/models.json                    the embedding models held, and the active one (engine.embedding_models)
    WS/manifests/<stage>/<id>.*       stage manifests and their sidecars (manifest_rel)
    WS/feedback/<stage>/<step>.parquet  the trainer's per-concept loss reports (feedback_rel)
    WS/boosts/<stage>/<hash>.parquet  user boosts of samples for a stage (boost_rel)
    WS/train/<run>/                   the bundled trainer's runs: checkpoints, logs (train)
    WS/_failed/<shard_id>.json        shards that failed every attempt (failed_rel)
    WS/_jobs/<job id>.log, .json      the service's curation jobs: output, last known state (jobs)
    WS/_builds/<manifest id>.json     the service's manifest builds: request and state (builds)
    WS/_cache/                        derived files that can be remade: thumbnails, vectors (cache)
    WS/_tmp/                          half-written files; never read (tmp)
    WS/catalog.duckdb                 DuckDB views over the tables (catalog_file; local workspaces)

Every write goes to ``_tmp`` first and is then renamed into place, so a reader (or a resumed
job) sees a whole shard or no shard. On object stores a rename is a copy, but each object PUT is
itself atomic, so the same guarantee holds.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine import embedding_models, schema

PARQUET = ".parquet"


@dataclass
class Workspace:
    """A handle on a workspace; cheap to create, safe to send to Ray workers (holds only strings)."""

    root: str  # what the user gave: a local path or a URI such as s3://bucket/ws or file:///abs
    _fs: pafs.FileSystem | None = field(default=None, repr=False, compare=False)
    _base: str = field(default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        if "://" not in self.root:
            self.root = os.path.abspath(os.path.expanduser(self.root))

    def __getstate__(self) -> dict:
        return {"root": self.root}  # filesystems are re-opened on the worker

    def __setstate__(self, state: dict) -> None:
        self.root, self._fs, self._base = state["root"], None, ""

    # --- filesystem ---------------------------------------------------------------------------

    @property
    def fs(self) -> pafs.FileSystem:
        if self._fs is None:
            if "://" in self.root:
                self._fs, self._base = pafs.FileSystem.from_uri(self.root)
            else:
                self._fs, self._base = pafs.LocalFileSystem(), self.root
        return self._fs

    @property
    def base(self) -> str:
        self.fs  # noqa: B018 - opens the filesystem and sets _base
        return self._base

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        """A path inside the workspace, in the filesystem's own terms."""
        return "/".join([self.base.rstrip("/"), *parts])

    def create(self) -> Workspace:
        """Create the workspace directory (idempotent) and return self."""
        self.fs.create_dir(self.base, recursive=True)
        return self

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    # --- where things live -------------------------------------------------------------------

    tmp = "_tmp"  # half-written files, renamed into place when whole
    plans = "_plans"  # each source's shard plan and how it was opened
    failed = "_failed"  # one record per shard that failed every attempt
    jobs = "_jobs"  # the service's curation jobs: output and records (api.jobs)
    builds = "_builds"  # the service's manifest build records (api.manifests)
    cache = "_cache"  # derived files (thumbnails, concept vectors) that can be remade at any time
    index_root = "index"  # the FAISS indexes, one folder per embedding model (engine.vectors.index)
    manifests = "manifests"  # stage manifests (engine.curation.manifest)
    feedback = "feedback"  # trainer reports (engine.s3dit.concept_loss, engine.curation.feedback)
    boosts = "boosts"  # user boosts (engine.curation.feedback)
    train = "train"  # the bundled trainer's runs (engine.s3dit.train)
    catalog_file = "catalog.duckdb"  # DuckDB views over the tables (engine.catalog)

    def table_rel(self, table_name: str) -> str:
        """The folder of a table's shards: its name, except ``embeddings`` (the active model's
        folder) and ``embeddings@KEY`` (model KEY's), see ``engine.embedding_models``."""
        if embedding_models.split_table_name(table_name)[0] == embedding_models.EMBEDDINGS:
            return embedding_models.table_dir(self, table_name)
        return table_name

    def table_schema(self, table_name: str) -> pa.Schema:
        """A table's columns; an embeddings table's vectors have its model's width."""
        base, _ = embedding_models.split_table_name(table_name)
        if base == embedding_models.EMBEDDINGS:
            return schema.embeddings_schema(embedding_models.model_dim(self, table_name) or schema.EMBED_DIM)
        return schema.TABLES[table_name]

    def table_names(self) -> list[str]:
        """Every table a shard can have rows in: ``schema.TABLES``, each embedding model's table by
        its own name (``embeddings@KEY``) in place of ``embeddings``."""
        keys = [model.key for model in embedding_models.list_models(self)]
        models = [f"{embedding_models.EMBEDDINGS}@{key}" for key in keys] or [embedding_models.EMBEDDINGS]
        return [name for name in schema.TABLES if name != embedding_models.EMBEDDINGS] + models

    def index_rel(self, model_key: str | None = None) -> str:
        """The folder of one embedding model's FAISS indexes (None: the active model's)."""
        return embedding_models.index_dir(self, model_key)

    def plan_rel(self, prefix: str) -> str:
        """The saved plan of the source whose shard ids start with ``prefix`` (``<kind>-<key>``)."""
        return f"{self.plans}/{prefix}.parquet"

    def source_config_rel(self, prefix: str) -> str:
        """How the source of ``prefix`` was opened and judged (for stages run later)."""
        return f"{self.plans}/{prefix}.json"

    def failed_rel(self, shard_id: str) -> str:
        return f"{self.failed}/{shard_id}.json"

    def manifest_rel(self, stage: str, manifest_id: str) -> str:
        """A manifest's path without suffix (``.parquet`` and the ``.json`` sidecar follow)."""
        return f"{self.manifests}/{stage}/{manifest_id}"

    def feedback_rel(self, stage: str, step: int) -> str:
        """One trainer report: the step zero-padded to 9 digits, so names sort in step order."""
        return f"{self.feedback}/{stage}/{step:09d}.parquet"

    def boost_rel(self, stage: str, name: str) -> str:
        return f"{self.boosts}/{stage}/{name}.parquet"

    # --- atomic writes ------------------------------------------------------------------------

    def _tmp_path(self, name: str) -> str:
        tmp_dir = self.path(self.tmp)
        self.fs.create_dir(tmp_dir, recursive=True)
        return f"{tmp_dir}/{uuid.uuid4().hex}-{name}"

    def write_parquet(self, rel_path: str, table: pa.Table, row_group_size: int | None = None) -> None:
        """Write a Parquet file at ``rel_path`` atomically (temporary name, then rename)."""
        final = self.path(rel_path)
        self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        tmp = self._tmp_path(final.rsplit("/", 1)[1])
        # Fixed writer options: same table in, same bytes out (determinism of every table).
        pq.write_table(
            table,
            tmp,
            filesystem=self.fs,
            compression="zstd",
            row_group_size=row_group_size,
            store_schema=True,
        )
        self.fs.move(tmp, final)

    def write_bytes(self, rel_path: str, data: bytes) -> None:
        """Write a file at ``rel_path`` atomically (temporary name, then rename)."""
        final = self.path(rel_path)
        self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        tmp = self._tmp_path(final.rsplit("/", 1)[1])
        with self.fs.open_output_stream(tmp) as out:
            out.write(data)
        self.fs.move(tmp, final)

    def write_text(self, rel_path: str, text: str) -> None:
        """Write a UTF-8 text file at ``rel_path`` atomically."""
        self.write_bytes(rel_path, text.encode("utf-8"))

    def read_text(self, rel_path: str) -> str:
        with self.fs.open_input_stream(self.path(rel_path)) as stream:
            return stream.read().decode("utf-8")

    def list_files(self, rel_dir: str, suffix: str = "") -> list[str]:
        """Names of the files directly in ``rel_dir`` ending in ``suffix``, sorted."""
        selector = pafs.FileSelector(self.path(rel_dir), allow_not_found=True)
        names = (info.base_name for info in self.fs.get_file_info(selector) if info.is_file)
        return sorted(n for n in names if n.endswith(suffix))

    # --- tables -------------------------------------------------------------------------------

    def write_shard(self, table_name: str, shard_id: str, table: pa.Table) -> None:
        """Write one shard of a table atomically, cast to the table's schema (an embeddings shard
        keeps the width of its vectors)."""
        if embedding_models.split_table_name(table_name)[0] == embedding_models.EMBEDDINGS:
            target = schema.embeddings_schema(embedding_models.vector_width(table))
        else:
            target = schema.TABLES[table_name]
        table = table.select(target.names).cast(target)
        self.write_parquet(f"{self.table_rel(table_name)}/{shard_id}{PARQUET}", table)

    def list_shards(self, table_name: str) -> list[str]:
        """The ids of the complete shards of a table, sorted."""
        return [name[: -len(PARQUET)] for name in self.list_files(self.table_rel(table_name), PARQUET)]

    def has_shard(self, table_name: str, shard_id: str) -> bool:
        return self.exists(self.table_rel(table_name), f"{shard_id}{PARQUET}")

    def shard_files(self, table_name: str) -> list[str]:
        """Filesystem paths of a table's shard files, sorted by shard id."""
        folder = self.table_rel(table_name)
        return [self.path(folder, name) for name in self.list_files(folder, PARQUET)]

    def read_shard(self, table_name: str, shard_id: str) -> pa.Table:
        return pq.read_table(self.shard_path(table_name, shard_id), filesystem=self.fs)

    def shard_path(self, table_name: str, shard_id: str) -> str:
        """The filesystem path of one shard of a table."""
        return self.path(self.table_rel(table_name), f"{shard_id}{PARQUET}")

    def read_table(
        self, table_name: str, columns: list[str] | None = None, filter: pc.Expression | None = None
    ) -> pa.Table:
        """All shards of a table as one Arrow table (empty with the right schema when none);
        ``filter`` (a pyarrow.compute expression) is applied while scanning."""
        files = self.shard_files(table_name)
        table_schema = self.table_schema(table_name)
        if not files:
            empty = table_schema.empty_table()
            return empty.select(columns) if columns else empty
        dataset = pads.dataset(files, schema=table_schema, format="parquet", filesystem=self.fs)
        return dataset.to_table(columns=columns, filter=filter)

    def local_uri(self, *parts: str) -> str:
        """A path or URI DuckDB can read for the given workspace path."""
        if self.is_local:
            return self.path(*parts)
        scheme = self.root.split("://", 1)[0]
        return f"{scheme}://{self.path(*parts)}"
