"""The ``zcurate`` command line: one Typer app per command group, attached here.

Every command's ``--help`` ends with an example. The command modules may import everything
(``engine``, ``pipelines``, ``api``); nothing imports them.
"""

from __future__ import annotations

import typer

from cli import curate, graph, manifest, models, query, serve, sources, train, vectors

app = typer.Typer(
    name="zcurate",
    help="Data-curation engine for text-to-image training (Z-Image's data infrastructure on open parts).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog="Example: zcurate curate ./my-pairs --workspace ./ws && zcurate stats --workspace ./ws",
)
app.add_typer(curate.app)
app.add_typer(query.app)
app.add_typer(vectors.app)
app.add_typer(models.models_app, name="models")
app.add_typer(sources.app)
app.add_typer(graph.app)
app.add_typer(graph.graph_app, name="graph")
app.add_typer(manifest.manifest_app, name="manifest")
app.add_typer(train.app)
app.add_typer(serve.app)
