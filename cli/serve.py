"""``zcurate serve``: the REST API and the dashboard (``api``)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.shared import WorkspaceOption, fail

app = typer.Typer()


@app.command(epilog="Example: ZCURATE_API_KEYS=devkey:read+write zcurate serve --workspace ./ws --port 8000")
def serve(
    workspace: WorkspaceOption,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Serve the REST API (FastAPI + uvicorn) and the dashboard (at /) over a workspace.

    OpenAPI docs at /docs; the dashboard asks for a key once and keeps it for the browser tab.

    API keys come from ZCURATE_API_KEYS ("KEY:read,KEY2:read+write") or ZCURATE_API_KEY_FILE
    (lines "sha256hex(KEY):SCOPES"); every limit from ZCURATE_* variables (api/settings.py).
    """
    import uvicorn

    from api.auth import KeyConfigError
    from api.main import create_app

    if not 0 < port < 65536:
        fail("--port must be between 1 and 65535")
    try:
        service = create_app(workspace)
    except (ValueError, KeyConfigError) as e:
        fail(str(e))
    uvicorn.run(service, host=host, port=port, log_level="info")
