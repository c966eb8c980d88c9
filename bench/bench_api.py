"""Load benchmark of issue 7: the REST service under 64 concurrent clients.

Run by hand (not a test):

    PYTHONPATH=$PWD .venv/bin/python bench/bench_api.py --clients 64 --seconds 60 \\
        --output bench/results-api.json

1. A synthetic workspace of ``--n`` samples (default 100,000) in a temp folder (or ``--workspace``,
   reused when it holds an index already): samples, signals, and embeddings whose vectors are
   random unit float16 vectors carrying the embedded model's model_id (so a text query's model
   matches the index), the catalog, the image index (``engine.vectors.index.build_index``: IVF-PQ from
   100k vectors), and one lowres manifest (``engine.curation.manifest.build_manifest``).
2. ``zcurate serve`` over it in a subprocess on 127.0.0.1, with a read key.
3. One warm-up request per endpoint (the search loads the embedder; stats are computed once and
   cached until the workspace changes) and, unless ``--unique-queries``, one search per text of
   ``QUERIES``; then ``--clients`` asyncio clients (httpx, one connection
   each) loop for ``--seconds``, client i on endpoint i mod 3, with no pause between requests:
   - ``metadata``: GET /v1/manifests/{id} (status and sidecar),
   - ``search``: GET /v1/search?text=...&k=10, cycling over the 24 ``QUERIES`` (the service keeps
     recent query vectors, so after the first round a search is FAISS plus the hits' rows), or with
     ``--unique-queries`` a new text every request (each one embedded: ~20 ms of CPU),
   - ``stats``: GET /v1/stats.
   Every response that is not 200 counts as an error. Latency is per request, client side, so
   it includes the client's own time (the clients share the 2 cores with the server).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np
import pyarrow as pa

from engine import schema
from engine.workspace import Workspace

SHARD_ROWS = 10_000  # rows per synthetic shard: a real curate job's shards are of this order
READ_KEY = "bench-read-key"
QUERIES = [  # 24 distinct captions-like texts, cycled
    "a red parrot on a branch",
    "black and white line drawing of a house",
    "cartoon cat with a hat",
    "blue flower icon",
    "a map of europe",
    "smiling sun clip art",
    "christmas tree with presents",
    "a car seen from the side",
    "green arrow pointing right",
    "vintage telephone",
    "an owl at night",
    "a bicycle",
    "pirate ship with sails",
    "coffee cup with steam",
    "a guitar",
    "mountain landscape with a lake",
    "robot toy",
    "a slice of pizza",
    "warning sign triangle",
    "snowman with a scarf",
    "airplane in the sky",
    "a heart shape",
    "hand drawn tree",
    "penguin on ice",
]
WORDS = ["red", "blue", "green", "cat", "dog", "house", "tree", "flower", "car", "sun", "bird", "map", "icon"]


def table_of(columns: dict, table_schema: pa.Schema, rows: int) -> pa.Table:
    """A table of the schema from the given columns, null in every other one."""
    arrays = [
        pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(rows, f.type)
        for f in table_schema
    ]
    return pa.Table.from_arrays(arrays, schema=table_schema)


def synthetic_workspace(root: str, n: int, seed: int = 0) -> str:
    """Write samples, signals and embeddings for n synthetic pairs, then the catalog, the image
    index and a lowres manifest; returns the manifest id."""
    from engine.catalog import refresh_catalog
    from engine.curation.manifest import build_manifest
    from engine.curation.recipe import load_recipe
    from engine.vectors.index import build_index
    from engine.vectors.model_specs import load_embedder

    ws = Workspace(root).create()
    embedder = load_embedder()  # only for its model_id and width
    dim = embedder.embed_dim
    rng = np.random.default_rng(seed)
    for start in range(0, n, SHARD_ROWS):
        rows = np.arange(start, min(n, start + SHARD_ROWS))
        m = len(rows)
        shard = f"synthetic-{start // SHARD_ROWS:05d}"
        image_ids = [hashlib.blake2b(f"image{i}".encode(), digest_size=16).hexdigest() for i in rows]
        sample_ids = [hashlib.blake2b(f"sample{i}".encode(), digest_size=16).hexdigest() for i in rows]
        captions = [" ".join(rng.choice(WORDS, 6)) for _ in range(m)]
        samples = {
            "sample_id": sample_ids,
            "image_id": image_ids,
            "source": ["synthetic"] * m,
            "source_kind": ["folder"] * m,
            "shard_id": [shard] * m,
            "row_index": np.arange(m, dtype=np.int32),
            "ref": [f"{i}.png" for i in rows],
            "uri": [f"/synthetic/{i}.png" for i in rows],
            "caption": captions,
            "status": ["ok"] * m,
            "warnings": [[] for _ in range(m)],
        }
        ws.write_shard("samples", shard, table_of(samples, schema.SAMPLES, m))
        width = rng.integers(128, 2048, m).astype(np.int32)
        height = rng.integers(128, 2048, m).astype(np.int32)
        signals = {
            "sample_id": sample_ids,
            "image_id": image_ids,
            "width": width,
            "height": height,
            "aspect": (width / height).astype(np.float32),
            "image_format": ["PNG"] * m,
            "image_mode": ["RGB"] * m,
            "bits_per_pixel": np.full(m, 24, np.int16),
            "file_bytes": rng.integers(10_000, 2_000_000, m),
            "compression_ratio": rng.uniform(1, 50, m).astype(np.float32),
            "entropy": rng.uniform(0, 8, m).astype(np.float32),
            "blur": rng.uniform(0, 1000, m).astype(np.float32),
            "caption_chars": np.array([len(c) for c in captions], np.int32),
            "caption_words": np.full(m, 6, np.int32),
            "caption_lang": ["en"] * m,
        }
        ws.write_shard("signals", shard, table_of(signals, schema.SIGNALS, m))
        vectors = rng.standard_normal((2, m, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
        vec_type = schema.EMBEDDINGS.field("image_vec").type
        flat = [pa.array(v.astype(np.float16).ravel(), pa.float16()) for v in vectors]
        embeddings = pa.Table.from_arrays(
            [
                pa.array(sample_ids),
                pa.array(image_ids),
                pa.array([embedder.model_id] * m),
                pa.FixedSizeListArray.from_arrays(flat[0], dim).cast(vec_type),
                pa.FixedSizeListArray.from_arrays(flat[1], dim).cast(vec_type),
                pa.array(rng.uniform(0.1, 0.4, m).astype(np.float32)),
            ],
            schema=schema.embeddings_schema(dim),
        )
        ws.write_shard("embeddings", shard, embeddings)
    refresh_catalog(ws)
    meta = build_index(ws, "image")
    print(f"index: {meta.kind}, {meta.ntotal} vectors of {meta.dim}", flush=True)
    return build_manifest(ws, load_recipe("lowres"), seed=0).manifest_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workspace: str, port: int) -> subprocess.Popen:
    """``zcurate serve`` in a child process; returns once /v1/health answers."""
    zcurate = os.path.join(os.path.dirname(sys.executable), "zcurate")
    command = [zcurate] if os.path.exists(zcurate) else [sys.executable, "-m", "cli"]
    env = {**os.environ, "ZCURATE_API_KEYS": f"{READ_KEY}:read", "PYTHONPATH": os.getcwd()}
    server = subprocess.Popen(
        [*command, "serve", "--workspace", workspace, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"zcurate serve exited: {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError("zcurate serve did not answer in 120 s")


def query(i: int, unique: bool) -> str:
    """The i-th search text: one of QUERIES, with a number appended when every text must be new."""
    return f"{QUERIES[i % len(QUERIES)]} {i}" if unique else QUERIES[i % len(QUERIES)]


async def drive(
    base_url: str,
    manifest_id: str,
    clients: int,
    seconds: float,
    unique: bool,
    endpoints: list[str],
    rate: float,
) -> dict[str, dict]:
    """``clients`` loops for ``seconds``; returns per endpoint the latencies (ms) and error count."""
    paths = {
        "metadata": lambda i: (f"/v1/manifests/{manifest_id}", None),
        "search": lambda i: ("/v1/search", {"text": query(i, unique), "k": 10}),
        "stats": lambda i: ("/v1/stats", None),
    }
    names = [name for name in paths if name in endpoints]
    results = {name: {"latency_ms": [], "at_s": [], "errors": 0, "error_samples": []} for name in names}
    headers = {"Authorization": f"Bearer {READ_KEY}"}

    async def client(number: int, c: httpx.AsyncClient, begin: float, stop: float) -> None:
        name = names[number % len(names)]
        result = results[name]
        interval = 1.0 / rate if rate else 0.0
        next_send = begin + interval * number / clients  # paced clients start staggered over one interval
        i = number
        while True:
            now = time.perf_counter()
            if interval and next_send > now:
                await asyncio.sleep(next_send - now)
            # Paced: latency counts from the scheduled send, so a slow answer that delays the next
            # request shows up in that request's latency too (no coordinated omission).
            start = next_send if interval else time.perf_counter()
            next_send += interval
            if start >= stop:
                break
            try:
                path, params = paths[name](i)
                response = await c.get(path, params=params)
                ok = response.status_code == 200
                detail = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as e:
                ok, detail = False, repr(e)
            result["latency_ms"].append((time.perf_counter() - start) * 1000)
            result["at_s"].append(start - begin)
            if not ok:
                result["errors"] += 1
                if len(result["error_samples"]) < 5:
                    result["error_samples"].append(detail)
            i += clients

    # Clients are made (and connected) before the clock starts: making an httpx client takes ~50 ms
    # (its SSL context), which would otherwise stall the first second of the run.
    limits = httpx.Limits(max_connections=1)
    pool = [
        httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60, limits=limits)
        for _ in range(clients)
    ]
    await asyncio.gather(*(c.get("/v1/health") for c in pool))
    begin = time.perf_counter()
    await asyncio.gather(*(client(n, c, begin, begin + seconds) for n, c in enumerate(pool)))
    await asyncio.gather(*(c.aclose() for c in pool))
    return results


def summarise(results: dict[str, dict], seconds: float) -> dict[str, dict]:
    out = {}
    for name, r in results.items():
        ms, at = np.array(r["latency_ms"]), np.array(r["at_s"])
        out[name] = {
            "requests": len(ms),
            "requests_per_s": round(len(ms) / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
            "max_ms": round(float(ms.max()), 1) if len(ms) else None,
            # p99 per 10 s of the run: a stall (another job taking the cores) shows as one bad window
            "p99_ms_per_10s": [
                round(float(np.percentile(ms[(at >= w) & (at < w + 10)], 99)), 1)
                for w in range(0, int(seconds), 10)
                if ((at >= w) & (at < w + 10)).any()
            ],
            "errors": r["errors"],
            "error_samples": r["error_samples"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="synthetic samples (and vectors)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--unique-queries",
        action="store_true",
        help="a new search text per request (no query-vector cache hit)",
    )
    parser.add_argument(
        "--endpoints", default="metadata,search,stats", help="which endpoints the clients load"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="requests per second per client (0: back to back, saturating)"
    )
    parser.add_argument("--workspace", default=None, help="build here (or reuse one built before)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    workspace = args.workspace or os.path.join(tempfile.mkdtemp(prefix="bench-api-"), "ws")
    start = time.perf_counter()
    marker = os.path.join(workspace, "bench-manifest-id")
    if os.path.exists(marker):
        with open(marker) as f:
            manifest_id = f.read().strip()
    else:
        manifest_id = synthetic_workspace(workspace, args.n)
        with open(marker, "w") as f:
            f.write(manifest_id)
    setup_s = time.perf_counter() - start
    print(f"workspace {workspace} ready in {setup_s:.0f} s; manifest {manifest_id}", flush=True)

    port = free_port()
    server = start_server(workspace, port)
    base_url = f"http://127.0.0.1:{port}"
    try:
        headers = {"Authorization": f"Bearer {READ_KEY}"}
        warm = {}
        for name, path in (
            ("metadata", f"/v1/manifests/{manifest_id}"),
            ("search", f"/v1/search?text={QUERIES[0].replace(' ', '+')}&k=10"),
            ("stats", "/v1/stats"),
        ):
            t = time.perf_counter()
            response = httpx.get(base_url + path, headers=headers, timeout=120)
            response.raise_for_status()
            warm[name] = round((time.perf_counter() - t) * 1000, 1)
        if not args.unique_queries:  # steady state: every repeated text has been seen once
            for text in QUERIES:
                httpx.get(f"{base_url}/v1/search", params={"text": text}, headers=headers).raise_for_status()
        print(f"warm-up (ms): {warm}", flush=True)
        load_before = os.getloadavg()
        results = asyncio.run(
            drive(
                base_url,
                manifest_id,
                args.clients,
                args.seconds,
                args.unique_queries,
                args.endpoints.split(","),
                args.rate,
            )
        )
        load_after = os.getloadavg()
    finally:
        server.terminate()
        server.wait(timeout=60)
    summary = summarise(results, args.seconds)
    report = {
        "command": " ".join(["bench/bench_api.py", *sys.argv[1:]]),
        "n": args.n,
        "clients": args.clients,
        "unique_queries": args.unique_queries,
        "loaded": args.endpoints,
        "rate_per_client": args.rate,
        "seconds": args.seconds,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after],
        },
        "warmup_ms": warm,
        "endpoints": summary,
        "errors": sum(s["errors"] for s in summary.values()),
    }
    print(json.dumps(report, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
