"""``zcurate index``, ``search``, ``dedup`` and ``train-embedder``: the Cross-modal Vector Engine."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.shared import (
    DeviceOption,
    FormatOption,
    OutputFormat,
    OutputOption,
    WorkspaceOption,
    checked_device,
    embed_spec,
    fail,
    open_workspace,
    out,
    write_result,
)

app = typer.Typer()


@app.command(
    name="train-embedder",
    epilog="Example: zcurate train-embedder --output /tmp/heads.safetensors --limit 500",
)
def train_embedder_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the heads file.")],
    epochs: Annotated[int, typer.Option(help="Passes over the training pairs.")] = 40,
    seed: Annotated[int, typer.Option(help="Seed of the head initialisation and batch order.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Use only the first N pairs of each source.")] = None,
    search: Annotated[
        bool, typer.Option("--search", help="Try the SEARCH_GRID settings; keep the best on validation.")
    ] = False,
    cache_dir: Annotated[
        str | None, typer.Option(help="Where tower features are cached (default: $TMPDIR/zcurate-cache).")
    ] = None,
) -> None:
    """Train the default embedder's projection heads (towers frozen, LiT-style).

    Trains on openclipart, Noto emoji and GNOME icons (Debian packages), split so no caption, file
    name or picture leaks; reports the in-distribution test split, the held-out elementary-xfce
    icons and, when installed, the reserved Tux Paint stamps. Caches the frozen towers' features
    once (minutes), trains the heads with open_clip's ClipLoss (seconds), and writes a small
    heads-only safetensors file that 'zcurate embed --model FILE' (or load_embedder(FILE)) uses.
    """
    from dataclasses import asdict

    from engine.profiling.records import SourceError
    from engine.vectors.embedder_sources import SourceMissing
    from engine.vectors.embedder_training import TrainConfig, train_embedder

    if epochs < 1 or (limit is not None and limit < 2):
        fail("--epochs must be positive and --limit at least 2")
    show = sys.stderr.isatty()
    try:
        from tqdm import tqdm

        with tqdm(desc="tower features", unit="pair", disable=not show) as bar:
            result = train_embedder(
                str(output),
                TrainConfig(epochs=epochs, seed=seed, limit=limit),
                cache_dir=cache_dir,
                progress=lambda n: bar.update(n - bar.n),
                search=search,
            )
    except (SourceError, SourceMissing, ValueError) as e:
        fail(str(e))
    out.print(json.dumps(asdict(result), indent=1))


@app.command(name="index", epilog="Example: zcurate index --workspace ./ws --kind auto")
def index_cmd(
    workspace: WorkspaceOption,
    kind: Annotated[str, typer.Option(help="auto (flat below --exact-max), flat, ivfpq or hnsw.")] = "auto",
    exact_max: Annotated[int, typer.Option(help="auto: exact search below this many vectors.")] = 100_000,
    nlist: Annotated[int | None, typer.Option(help="IVF cells (default 4*sqrt(n)).")] = None,
    pq_m: Annotated[int | None, typer.Option(help="PQ sub-quantizers (default dim/8).")] = None,
    nprobe: Annotated[int, typer.Option(help="IVF cells searched per query.")] = 16,
    hnsw_m: Annotated[int, typer.Option(help="HNSW neighbours per node.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the training sample and k-means.")] = 0,
    rebuild: Annotated[bool, typer.Option(help="Rebuild from scratch instead of appending.")] = False,
    model: Annotated[
        str | None, typer.Option(help="Model key (see 'zcurate models'); default: the active model.")
    ] = None,
    device: DeviceOption = "auto",
) -> None:
    """Build (or extend with new embeddings shards) one model's image and text FAISS indexes.

    Written to WS/index/<model>/: <modality>.faiss, its id map and a JSON with the model id and params.
    """
    from engine.embedding_models import ModelRegistryError, find_model
    from engine.vectors.index import IndexConfig, VectorIndexError, build_index

    ws = open_workspace(workspace, needs="embeddings")
    try:
        key = find_model(ws, model).key if model else None
    except ModelRegistryError as e:
        fail(str(e))
    config = IndexConfig(
        kind=kind,
        exact_max=exact_max,
        nlist=nlist,
        pq_m=pq_m,
        nprobe=nprobe,
        hnsw_m=hnsw_m,
        seed=seed,
        device=checked_device(device),
    )
    for modality in ("image", "text"):
        try:
            meta = build_index(ws, modality, config, rebuild=rebuild, model=key)
        except VectorIndexError as e:
            fail(str(e))
        if meta is None:
            out.print(f"{modality}: no vectors")
        else:
            out.print(
                f"{modality}: {meta.kind} index of {meta.ntotal} vectors ({meta.dim}-d, {meta.model_id})"
            )


@app.command(
    epilog='Example: zcurate search --workspace ./ws --text "a red bicycle" -k 5   '
    "(or --image photo.png [--target text])"
)
def search(
    workspace: WorkspaceOption,
    text: Annotated[str | None, typer.Option(help="Text query (text->image).")] = None,
    image: Annotated[Path | None, typer.Option(help="Image file query (image->image).")] = None,
    target: Annotated[str, typer.Option(help="Index to search: image or text.")] = "image",
    k: Annotated[int, typer.Option("-k", help="How many results.")] = 10,
    model: Annotated[
        str | None, typer.Option(help="Embedder spec; default: the workspace's active model.")
    ] = None,
    format: FormatOption = OutputFormat.table,
    output: OutputOption = None,
) -> None:
    """Search the workspace's FAISS indexes with a text or an image (text->image, image->image,
    image->text with --target text)."""
    from PIL import Image, UnidentifiedImageError

    from engine.profiling.ingest import to_rgb
    from engine.vectors.embedder import EmbedderError
    from engine.vectors.index import VectorIndexError, read_meta
    from engine.vectors.model_specs import load_embedder
    from engine.vectors.search import search_samples
    from engine.workspace import Workspace

    if (text is None) == (image is None):
        fail("give exactly one of --text or --image")
    if target not in ("image", "text"):
        fail("--target must be image or text")
    if k < 1:
        fail("-k must be positive")
    ws = Workspace(workspace)
    meta = read_meta(ws, target)
    if meta is None:
        fail(f"no {target} index in {workspace}: run 'zcurate index --workspace {workspace}' first")
    try:
        embedder = load_embedder(embed_spec(ws, model))
    except EmbedderError as e:
        fail(str(e))
    if embedder.model_id != meta["model_id"]:
        fail(
            f"the index holds {meta['model_id']} vectors but the query model is "
            f"{embedder.model_id}: pass --model"
        )
    if text is not None:
        if not text.strip():
            fail("--text is empty")
        query = embedder.encode_texts([text])[0]
    else:
        try:
            with Image.open(image) as im:
                im.load()
                picture, _ = to_rgb(im)
        except (OSError, UnidentifiedImageError) as e:
            fail(f"cannot read image {image}: {e}")
        query = embedder.encode_images([picture])[0]
    try:
        table = search_samples(ws, query, target, k)
    except VectorIndexError as e:
        fail(str(e))
    write_result(table, format, output)


@app.command(epilog="Example: zcurate dedup --workspace ./ws --threshold 0.9 --phash-distance 4")
def dedup(
    workspace: WorkspaceOption,
    threshold: Annotated[
        float, typer.Option(help="Image cosine at or above which images are near-duplicates.")
    ] = 0.84,
    phash_distance: Annotated[
        int, typer.Option(help="pHash Hamming distance for exact duplicates; -1: off.")
    ] = 2,
    k: Annotated[int, typer.Option("-k", help="Neighbours per image in the k-NN graph.")] = 16,
    method: Annotated[
        str, typer.Option(help="Communities: star (bounded diameter, no chaining), louvain or leiden.")
    ] = "star",
    seed: Annotated[int, typer.Option(help="Seed of the community detection.")] = 0,
    device: DeviceOption = "auto",
) -> None:
    """Find near-duplicate communities (k-NN graph over the image index + pHash) and mark one
    representative each: table dedup, view near_duplicates."""
    from engine.catalog import refresh_catalog
    from engine.vectors.dedup import DedupConfig, dedup_workspace
    from engine.vectors.index import VectorIndexError

    ws = open_workspace(workspace)
    if not -1 <= threshold <= 1 or method not in ("star", "louvain", "leiden") or k < 1:
        fail("--threshold must be in [-1, 1], --method star, louvain or leiden, -k positive")
    config = DedupConfig(
        threshold=threshold,
        phash_distance=phash_distance,
        k=k,
        method=method,
        seed=seed,
        device=checked_device(device),
    )
    try:
        summary = dedup_workspace(ws, config)
    except (VectorIndexError, ValueError) as e:
        fail(str(e))
    refresh_catalog(ws)
    out.print(
        f"{summary.samples} samples · {summary.communities} duplicate communities · "
        f"{summary.duplicates} duplicates (not representatives) · pairs: {summary.semantic_pairs} semantic, "
        f"{summary.phash_pairs} pHash"
    )
