"""``zcurate manifest ...``: the Active Curation Engine's stage manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import typer

from cli.shared import (
    FormatOption,
    OutputFormat,
    OutputOption,
    WorkspaceOption,
    err,
    fail,
    open_workspace,
    out,
    print_table,
    write_result,
)

manifest_app = typer.Typer(
    help="Stage manifests: what a trainer samples, in which stage, how often "
    "(recipes in engine/curation/recipes).",
    invoke_without_command=True,
    epilog="Example: zcurate manifest --workspace ./ws --stage lowres --seed 0  (then: zcurate manifest "
    "show ID --workspace ./ws)",
)


def print_manifest(sidecar: dict) -> None:
    """A sidecar's summary: counts per filter, weights, concept marginal before/after, buckets."""
    counts = sidecar["counts"]
    out.print(
        f"manifest {sidecar['manifest_id']}  stage {sidecar['stage']}  seed {sidecar['seed']}  "
        f"rows {counts['rows']} ({counts['t2i']} text-to-image, {counts['i2i']} image-to-image)"
    )
    out.print(f"pool {counts['pool']} usable samples")
    steps = [
        {"step": f"filter {c['filter']}", "removed": c["removed"], "missing": c["missing"]}
        for c in counts["filters"]
    ]
    steps += [
        {"step": "dedup (representatives only)", "removed": counts["dedup_removed"], "missing": None},
        {"step": "balance (sample mode)", "removed": counts["balance_dropped"], "missing": None},
        {"step": "zero weight", "removed": counts["zero_weight"], "missing": None},
    ]
    print_table(pa.Table.from_pylist(steps), "what each step removed")
    marginal = sidecar["concept_marginal"]
    rows = [
        {"": side, **{k: marginal[side][k] for k in ("concepts", "entropy", "normalized_entropy", "gini")}}
        for side in ("before", "after")
    ]
    print_table(pa.Table.from_pylist(rows), "concept marginal (before = filtered pool, after = weights)")
    top = [
        {"concept": c.get("name", c["concept_id"]), "before": b["share"] if b else None, "after": c["share"]}
        for c in marginal["after"]["top"]
        for b in [next((x for x in marginal["before"]["top"] if x["concept_id"] == c["concept_id"]), None)]
    ]
    if top:
        print_table(pa.Table.from_pylist(top), "top concepts after balancing (share)")
    if sidecar["buckets"]:
        print_table(pa.Table.from_pylist(sidecar["buckets"]), "buckets")
    out.print(f"weights {sidecar['weights']}")
    out.print(f"caption forms {sidecar['caption_forms']}")
    if sidecar.get("draws"):
        out.print(f"draws {sidecar['draws']}")
    if sidecar["feedback"].get("reports"):
        out.print(f"feedback: {sidecar['feedback']['reports']} reports, top {sidecar['feedback']['top']}")
    for warning in sidecar["warnings"]:
        err.print(f"warning: {warning}")


@manifest_app.callback()
def manifest(
    ctx: typer.Context,
    workspace: Annotated[
        str | None,
        typer.Option("--workspace", "-w", envvar="ZCURATE_WORKSPACE", help="Workspace directory or URI."),
    ] = None,
    stage: Annotated[
        str | None,
        typer.Option(help="Stage recipe: lowres, omni, sft (engine/curation/recipes), or see --recipe."),
    ] = None,
    recipe: Annotated[
        Path | None, typer.Option(help="A recipe TOML file of your own (its 'stage' names the stage).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random choice (captions, draws, pairs).")] = 0,
    size: Annotated[
        int | None, typer.Option(help="Materialise N draws (epochs without replacement, repeat cap).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a recipe key, e.g. --set filters.clip_score.min=0.3 (repeatable)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if the same manifest exists.")] = False,
) -> None:
    """Build a stage's sampling manifest: WS/manifests/STAGE/ID.parquet and ID.json (the sidecar)."""
    if ctx.invoked_subcommand is not None:
        return
    from engine.curation.manifest import ManifestError, build_manifest
    from engine.curation.recipe import RecipeError, load_recipe, parse_override

    if workspace is None:
        fail("--workspace is required")
    if (stage is None) == (recipe is None):
        fail("give --stage (lowres, omni, sft) or --recipe FILE")
    try:
        overrides = dict(parse_override(item) for item in set_ or [])
        chosen = load_recipe(str(recipe) if recipe else stage, overrides)
        result = build_manifest(
            open_workspace(workspace, needs=None), chosen, seed=seed, size=size, force=force
        )
    except (RecipeError, ManifestError) as e:
        fail(str(e))
    print_manifest(result.sidecar)
    out.print(f"\n{'found' if result.cached else 'wrote'} {result.path}")


@manifest_app.command("show", epilog="Example: zcurate manifest show 3f2a9c --workspace ./ws --rows 5")
def manifest_show(
    manifest_id: Annotated[str, typer.Argument(help="Manifest id (or a unique prefix).")],
    workspace: WorkspaceOption,
    rows: Annotated[int, typer.Option(help="Also print this many rows, highest weight first.")] = 0,
    format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table or json (the sidecar).")
    ] = OutputFormat.table,
) -> None:
    """Summarise a manifest from its sidecar (counts per filter, marginal before/after, buckets)."""
    from engine.curation.manifest import ManifestError
    from engine.curation.manifest_store import find_manifest

    ws = open_workspace(workspace, needs=None)
    try:
        path, sidecar = find_manifest(ws, manifest_id)
    except ManifestError as e:
        fail(str(e))
    if format == OutputFormat.json:
        out.print_json(json.dumps(sidecar))
        return
    print_manifest(sidecar)
    if rows > 0:
        table = pq.read_table(path, filesystem=ws.fs).drop_columns(["concept_ids"])
        order = pc.sort_indices(table, [("weight", "descending"), ("sample_id", "ascending")])
        print_table(table.take(order).slice(0, rows), f"top {rows} rows by weight")
    out.print(path)


@manifest_app.command("list", epilog="Example: zcurate manifest list --workspace ./ws")
def manifest_list(
    workspace: WorkspaceOption,
    stage: Annotated[str | None, typer.Option(help="Only this stage.")] = None,
) -> None:
    """List the workspace's manifests."""
    from engine.curation.manifest_store import list_manifests

    print_table(
        pa.Table.from_pylist(
            list_manifests(open_workspace(workspace, needs=None), stage) or [{"manifest_id": None}]
        )
    )


@manifest_app.command("diff", epilog="Example: zcurate manifest diff 3f2a9c 81b0de --workspace ./ws")
def manifest_diff(
    a: Annotated[str, typer.Argument(help="First manifest id (or prefix).")],
    b: Annotated[str, typer.Argument(help="Second manifest id (or prefix).")],
    workspace: WorkspaceOption,
    format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table or json.")
    ] = OutputFormat.table,
) -> None:
    """What changed between two manifests: rows, weight shares, concept marginal, recipe keys."""
    from engine.curation.manifest import ManifestError
    from engine.curation.manifest_store import diff_manifests

    try:
        result = diff_manifests(open_workspace(workspace, needs=None), a, b)
    except ManifestError as e:
        fail(str(e))
    if format == OutputFormat.json:
        out.print_json(json.dumps(result))
        return
    out.print(
        f"a {result['a']} (seed {result['seed']['a']})  ->  b {result['b']} (seed {result['seed']['b']})"
    )
    print_table(pa.Table.from_pylist([result["rows"]]), "rows")
    out.print(f"share of common rows, b / a: {result['share_ratio_b_over_a']}")
    marginal = [{"": side, **values} for side, values in result["concept_marginal"].items()]
    print_table(pa.Table.from_pylist(marginal), "concept marginal")
    if result["recipe_changes"]:
        changes = [
            {k: json.dumps(v) if k != "key" else v for k, v in c.items()} for c in result["recipe_changes"]
        ]
        print_table(pa.Table.from_pylist(changes), "recipe changes")
    if result["feedback_changed"]:
        out.print("trainer feedback differs between the two")


@manifest_app.command(
    "gaps",
    epilog="Example: zcurate manifest gaps 3f2a9c --concept lorikeet.n.01 --workspace ./ws --boost 3",
)
def manifest_gaps(
    manifest_id: Annotated[str, typer.Argument(help="The manifest whose gaps to fill (id or prefix).")],
    workspace: WorkspaceOption,
    concept: Annotated[str | None, typer.Option(help="A concept (synset such as dog.n.01, or id).")] = None,
    text: Annotated[
        str | None, typer.Option(help="A free-text description of what the model fails on.")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="How many candidates.")] = 20,
    boost: Annotated[
        float | None,
        typer.Option(help="Up-weight the candidates by this factor in the stage's next manifests."),
    ] = None,
    format: FormatOption = OutputFormat.table,
    output: OutputOption = None,
) -> None:
    """Find pool samples that are not in a manifest but fit a concept or a failure description
    (FAISS text->image retrieval, plus the concept's tagged subtree); optionally boost them."""
    from engine.curation.feedback import write_boost
    from engine.curation.gaps import gap_candidates
    from engine.curation.manifest import ManifestError
    from engine.curation.manifest_store import find_manifest

    if (concept is None) == (text is None):
        fail("give exactly one of --concept or --text")
    if k < 1:
        fail("-k must be positive")
    ws = open_workspace(workspace, needs=None)
    try:
        path, sidecar = find_manifest(ws, manifest_id)
        exclude = pq.read_table(path, columns=["sample_id"], filesystem=ws.fs)["sample_id"]
        table = gap_candidates(ws, exclude, concept=concept, text=text, k=k)
    except (ManifestError, ValueError) as e:
        fail(str(e))
    write_result(table, format, output)
    if boost is not None and table.num_rows:
        reason = f"gaps of {sidecar['manifest_id']}: " + (
            f"concept {concept}" if concept else f"text {text!r}"
        )
        try:
            where = write_boost(ws, sidecar["stage"], table["sample_id"].to_pylist(), boost, reason)
        except ValueError as e:
            fail(str(e))
        err.print(
            f"boosted {table.num_rows} samples x{boost:g} for stage {sidecar['stage']} ({where}); "
            f"the next 'zcurate manifest --stage {sidecar['stage']}' uses them"
        )
