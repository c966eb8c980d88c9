"""The FastAPI app: ``create_app(workspace)`` builds it and includes one router per noun.

Run it with ``zcurate serve --workspace WS``. OpenAPI at /openapi.json, docs at /docs, the
dashboard at /.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import load_keyring
from api.cache import StampedCache
from api.deps import ServiceState
from api.errors import ApiError, error_response, install_error_handlers
from api.jobs import JobRunner
from api.manifests import ManifestBuilder
from api.routes import (
    concepts,
    dashboard,
    feedback,
    health,
    jobs,
    manifests,
    models,
    query,
    samples,
    search,
    stats,
    thumbnails,
)
from api.searcher import Searcher
from api.settings import Settings
from engine.catalog import connect_catalog
from engine.workspace import Workspace

# One router per noun, in the order the docs list them.
ROUTERS = (
    health.router,
    manifests.router,
    feedback.router,
    stats.router,
    concepts.router,
    search.router,
    models.router,
    query.router,
    jobs.router,
    samples.router,
    thumbnails.router,
)

# Routes whose body is an uploaded image (limit: max_upload_bytes; every other body: max_body_bytes).
UPLOAD_ROUTES = {("POST", "/v1/search")}


class BodyTooLarge(ApiError):
    def __init__(self, limit: int):
        super().__init__(413, "too_large", f"request body over {limit} bytes")


class BodyLimit:
    """ASGI middleware: refuse a body over the limit, by its Content-Length before reading it, or
    while reading a body without one (chunked); the endpoint never sees more than the limit."""

    def __init__(self, app: ASGIApp, max_body: int, max_upload: int):
        self.app, self.max_body, self.max_upload = app, max_body, max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload if (scope["method"], scope["path"]) in UPLOAD_ROUTES else self.max_body
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                await error_response(400, "bad_request", "invalid Content-Length")(scope, receive, send)
                return
            if int(length) > limit:
                refusal = error_response(413, "too_large", f"request body over {limit} bytes")
                await refusal(scope, receive, send)
                return
        received = 0

        async def limited() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)


def create_app(workspace: str, settings: Settings | None = None) -> FastAPI:
    """The service over one local workspace.

    Raises ValueError for a workspace that does not exist and ``api.auth.KeyConfigError`` for a
    malformed key list or key file, so a misconfigured service fails at start, not per request.
    """
    settings = settings or Settings()
    ws = Workspace(workspace or settings.workspace)
    if not ws.is_local or not os.path.isdir(ws.root):
        raise ValueError(f"workspace {workspace!r} is not an existing local directory")
    state = ServiceState(ws=ws, settings=settings, keyring=load_keyring(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Queries attach the catalog read-only: make sure it exists and was made for this root
        # (connect_catalog rebuilds a missing or moved one).
        connect_catalog(ws).close()
        state.searcher = Searcher(ws, settings.embedder, settings.torch_threads)
        state.answers = StampedCache(ws)
        state.jobs = JobRunner(ws, settings.source_root, settings.job_num_cpus)
        state.manifests = ManifestBuilder(ws)
        try:
            yield
        finally:
            state.jobs.shutdown()
            state.manifests.shutdown()

    app = FastAPI(
        title="zcurate",
        version=health.VERSION,
        description="Data-curation engine for text-to-image training: stage manifests, trainer "
        "feedback, stats, concepts, search, read-only SQL and curation jobs over one workspace. "
        "Authenticate with `Authorization: Bearer KEY`.",
        lifespan=lifespan,
    )
    app.state.zc = state
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_body=settings.max_body_bytes, max_upload=settings.max_upload_bytes)
    for router in ROUTERS:
        app.include_router(router, prefix="/v1")
    app.include_router(dashboard.router)  # the web page at / (api/routes/dashboard.py)
    return app
