"""``zcurate tag`` and ``zcurate graph ...``: the World Knowledge Topological Graph."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import typer

from cli.shared import (
    FormatOption,
    OutputFormat,
    OutputOption,
    WorkspaceOption,
    fail,
    open_workspace,
    out,
    print_table,
    write_result,
)

app = typer.Typer()


graph_app = typer.Typer(
    help="The concept graph (WordNet nouns + concepts mined from captions): build it, look around it.",
    no_args_is_help=True,
    epilog="Example: zcurate graph show lorikeet.n.01 --workspace ./ws",
)


@app.command(epilog="Example: zcurate tag --workspace ./ws")
def tag(
    workspace: WorkspaceOption,
    min_mined: Annotated[
        int, typer.Option(help="Samples a caption word WordNet lacks needs to become a concept.")
    ] = 5,
    clip: Annotated[
        bool, typer.Option(help="CLIP zero-shot tags from the embeddings table (when it exists).")
    ] = True,
    embedder: Annotated[
        str | None, typer.Option(help="The embedder spec that made the embeddings (as for 'zcurate embed').")
    ] = None,
    ray: Annotated[
        bool | None,
        typer.Option(
            "--ray/--no-ray",
            help="Run the per-shard passes on Ray (default: with RAY_ADDRESS set, or from 1,024 shards).",
        ),
    ] = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of a local Ray (default: all).")] = None,
) -> None:
    """Tag every usable sample with concepts (caption and OCR text) and rebuild the workspace graph.

    Also runs at the end of 'zcurate curate'. Writes the tags table and the concepts,
    concept_edges and concept_ancestors tables; see the concept_counts, tag_rarity and
    concept_coverage views.
    """
    from engine.catalog import refresh_catalog
    from engine.graph.tagging import TagConfig
    from pipelines.tag_job import run_tag_job

    ws = open_workspace(workspace)
    if min_mined < 1:
        fail("--min-mined must be positive")
    config = TagConfig(min_mined_samples=min_mined, clip=clip, embedder=embedder)
    summary = run_tag_job(ws, config, num_cpus=num_cpus, on_ray=ray)
    refresh_catalog(ws)
    out.print(
        f"tagged {summary.tagged_samples} of {summary.samples} samples: {summary.tags} tags "
        f"({', '.join(f'{k} {v}' for k, v in sorted(summary.by_source.items())) or 'none'}); "
        f"graph {summary.concepts} concepts, {len(summary.mined)} mined from captions "
        f"({summary.attach_method or 'none'}); {summary.seconds:.1f} s"
    )
    out.print(
        f"shards: {summary.shards_read} read for mining, {summary.shards_tagged} tagged, "
        f"{summary.shards_searched} searched for zero-shot tags (the others were still right)"
    )
    if summary.noise:
        out.print(
            f"noise: {len(summary.noise)} concepts left out of balancing by default "
            f"({', '.join(summary.noise[:8])}{', ...' if len(summary.noise) > 8 else ''}); "
            "see SELECT synset, noise FROM concepts WHERE noise IS NOT NULL"
        )
    if summary.clip_skipped:
        out.print(f"clip zero-shot: not run ({summary.clip_skipped})")
    else:
        unseen = summary.clip_precision_unseen
        out.print(
            f"clip zero-shot: threshold {summary.clip_threshold:.3f} (calibrated: precision "
            f"{summary.clip_precision:.2f}, recall {summary.clip_recall:.2f} against the text tags; "
            "precision on captions it was not calibrated on: "
            f"{'n/a' if unseen is None else f'{unseen:.2f} over {summary.clip_unseen_kept} tags'})"
        )


@graph_app.command("build", epilog="Example: zcurate graph build --workspace ./ws")
def graph_build(
    workspace: Annotated[
        str | None,
        typer.Option(
            "--workspace", "-w", envvar="ZCURATE_WORKSPACE", help="Rebuild this workspace's graph tables."
        ),
    ] = None,
) -> None:
    """Load and prune the WordNet graph; with --workspace, rewrite that workspace's graph tables.

    Without a workspace it prints the base graph's size and build time. With one, it re-prunes
    with PageRank weighted by the workspace's tag counts (no retagging).
    """
    import time

    from engine.graph.concept_graph import (
        GraphConfig,
        load_graph,
        load_workspace_graph,
        prune_graph,
        write_workspace_graph,
    )

    started = time.perf_counter()
    if workspace is None:
        graph = load_graph()
        loaded = time.perf_counter()
        pruned = prune_graph(graph, GraphConfig())
        out.print(
            f"WordNet graph: {graph.number_of_nodes()} concepts, {graph.number_of_edges()} edges "
            f"(loaded in {loaded - started:.1f} s); kept {len(pruned.kept)} after pruning "
            f"({len(pruned.visual)} visual) in {time.perf_counter() - loaded:.1f} s"
        )
        return
    from engine.catalog import refresh_catalog

    ws = open_workspace(workspace, needs="concepts")
    n = write_workspace_graph(ws, load_workspace_graph(ws), GraphConfig())
    refresh_catalog(ws)
    out.print(f"wrote {n} concepts to {workspace} in {time.perf_counter() - started:.1f} s")


@graph_app.command("show", epilog="Example: zcurate graph show lorikeet.n.01 --workspace ./ws")
def graph_show(
    concept: Annotated[str, typer.Argument(help="A synset name (bird.n.01) or a concept id.")],
    workspace: WorkspaceOption,
    format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table or json.")
    ] = OutputFormat.table,
) -> None:
    """A concept's neighbourhood: parents, children, siblings, parts, with sample counts."""
    from engine.graph.concept_queries import concept_neighbourhood

    ws = open_workspace(workspace, needs="concepts")
    try:
        result = concept_neighbourhood(ws, concept)
    except ValueError as e:
        fail(str(e))
    if format is OutputFormat.json:
        sys.stdout.write(json.dumps(result, default=str, ensure_ascii=False, indent=1) + "\n")
        return
    columns = ["synset", "depth", "source", "n_direct", "n_rollup", "gloss"]
    print_table(pa.Table.from_pylist([result["concept"]]).select(["concept_id", *columns]), "concept")
    for key in ("parents", "children", "siblings", "parts", "wholes"):
        if result[key]:
            rows = pa.Table.from_pylist(result[key]).select(columns)
            print_table(rows, key, max_rows=30)


@graph_app.command("samples", epilog="Example: zcurate graph samples bird.n.01 --workspace ./ws --limit 20")
def graph_samples(
    concept: Annotated[str, typer.Argument(help="A synset name (bird.n.01) or a concept id.")],
    workspace: WorkspaceOption,
    limit: Annotated[int, typer.Option(help="At most this many samples.")] = 50,
    format: FormatOption = OutputFormat.table,
    output: OutputOption = None,
) -> None:
    """Samples tagged with a concept or anything below it (a lorikeet counts for bird.n.01)."""
    from engine.graph.concept_queries import subtree_samples

    ws = open_workspace(workspace, needs="concepts")
    try:
        table = subtree_samples(ws, concept, limit=limit)
    except ValueError as e:
        fail(str(e))
    write_result(table, format, output, title=f"samples under {concept}")


@graph_app.command("gaps", epilog="Example: zcurate graph gaps --workspace ./ws --depth 6 --top 15")
def graph_gaps(
    workspace: WorkspaceOption,
    depth: Annotated[int, typer.Option(help="Compare the concepts at this depth (uniform prior).")] = 6,
    prior: Annotated[
        Path | None, typer.Option(help="JSON file {synset: weight} to compare against instead.")
    ] = None,
    top: Annotated[int, typer.Option(help="Show this many at each end.")] = 15,
    format: FormatOption = OutputFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write every row here.")] = None,
) -> None:
    """The most over- and under-represented concepts relative to a target prior."""
    from engine.graph.concept_queries import representation_gaps

    ws = open_workspace(workspace, needs="concepts")
    weights = None
    if prior is not None:
        try:
            weights = json.loads(prior.read_text(encoding="utf-8"))
            if not isinstance(weights, dict) or not weights:
                raise ValueError("expected a non-empty JSON object {synset: weight}")
        except (OSError, ValueError) as e:
            fail(f"--prior {prior}: {e}")
    try:
        table = representation_gaps(ws, weights, depth)
    except ValueError as e:
        fail(str(e))
    if format is not OutputFormat.table or output is not None:
        write_result(table, format, output)
        return
    print_table(table.slice(0, top), "most over-represented")
    print_table(table.slice(max(0, table.num_rows - top)), "most under-represented")
