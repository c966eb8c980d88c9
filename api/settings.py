"""Service settings, read from the environment that ``docker-compose.yml`` sets (prefix ``ZCURATE_``)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every limit the service enforces, with why it has its value."""

    model_config = SettingsConfigDict(env_prefix="ZCURATE_", extra="ignore")

    workspace: str = ""  # ZCURATE_WORKSPACE; create_app's argument wins
    api_keys: str = ""  # ZCURATE_API_KEYS: "KEY:read,KEY2:read+write" (development, compose)
    api_key_file: str | None = None  # ZCURATE_API_KEY_FILE: lines "sha256hex(KEY):SCOPES" (hashed at rest)
    max_body_bytes: int = 1 << 20  # JSON bodies: a long SQL query or a recipe is a few kB; 1 MiB is ample
    max_upload_bytes: int = 16 << 20  # an image query: a 4k photo as JPEG is ~3-8 MB
    max_image_pixels: int = 50_000_000  # decoded query images: 50 MP ~ 150 MB of RGB, a bomb above
    max_text_chars: int = 1000  # a text query; the embedder cuts captions far shorter anyway
    max_k: int = 100  # search results per request: a page of thumbnails, not a dump of the index
    query_max_rows: int = 10_000  # /v1/query rows returned; more belongs in a manifest or `zcurate sql`
    query_max_bytes: int = 32 << 20  # Arrow size of a /v1/query result before JSON (~2-4x as JSON)
    query_timeout_s: float = 10.0  # then the query is interrupted; catalog scans of 1M rows take ~1 s
    query_memory_limit: str = "1GB"  # DuckDB memory per query connection: a big sort spills, never OOMs
    query_threads: int = 2  # DuckDB threads per query: the 2-core box serves other requests too
    torch_threads: int = 1  # torch threads for query encoding: one query is tiny, and with 2 threads on a
    # busy 2-core box the OpenMP hand-off made a text query 20x slower (18 ms -> 500 ms); requests
    # run in parallel instead, one thread each
    manifest_max_draws: int = 10_000_000  # POST /v1/manifests size: 10M draws hold ~2 GB while built;
    # a bigger materialised manifest belongs to `zcurate manifest` on a machine sized for it
    embedder: str | None = None  # engine.embed.load_embedder spec for search; None: the index's default
    source_root: str | None = None  # job sources must lie under it; None: inside the workspace
    job_num_cpus: int | None = None  # CPUs of a job's local Ray (None: all)
