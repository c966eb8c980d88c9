"""``zcurate models``: the embedding models a workspace holds, and switching the active one."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.shared import WorkspaceOption, fail, open_workspace, out

models_app = typer.Typer(
    help="Embedding models held side by side in a workspace; the active one drives clip_score, "
    "dedup, zero-shot tags, search and the API.",
    no_args_is_help=False,
    invoke_without_command=True,
)


@models_app.callback(epilog="Example: zcurate models --workspace ./ws")
def list_models_cmd(ctx: typer.Context, workspace: WorkspaceOption = None) -> None:
    """List the models (key, width, samples embedded, spec); * marks the active one."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = workspace
        return
    from engine.embedding_models import active_model, list_models

    ws = open_workspace(workspace, needs=None)
    models, active = list_models(ws), active_model(ws)
    if not models:
        out.print(f"no embedding models in {workspace}: run 'zcurate embed --workspace {workspace}'")
        return
    for model in models:
        mark = "*" if active and model.key == active.key else " "
        rows = len(ws.read_table(f"embeddings@{model.key}", ["sample_id"]))
        out.print(f"{mark} {model.key}  {model.dim}-d  {rows} samples  {model.spec or '(spec not recorded)'}")


@models_app.command(name="use", epilog="Example: zcurate models use vit-b-32-3f2a1c4d5e6f --workspace ./ws")
def use_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model key, model id or spec (see 'zcurate models').")],
    workspace: WorkspaceOption = None,
    force: Annotated[bool, typer.Option(help="Recompute even when it is already active.")] = False,
) -> None:
    """Make a model active: rebuild its indexes, dedup and tags from it, refresh the catalog."""
    from engine.embedding_models import ModelRegistryError
    from pipelines.models import ModelSwitchError, use_model

    ws = open_workspace(workspace or ctx.obj)
    try:
        summary = use_model(ws, model, force=force)
    except (ModelRegistryError, ModelSwitchError) as e:
        fail(str(e))
    if not summary.changed and not force:
        out.print(f"{summary.model.key} is already the active model")
        return
    dedup = summary.dedup
    out.print(
        f"active model: {summary.model.key} ({summary.model.dim}-d, was {summary.previous}) · indexes: "
        f"{summary.indexed} · dedup: {dedup.communities} communities, {dedup.duplicates} duplicates · "
        f"{summary.seconds:.1f} s"
    )
