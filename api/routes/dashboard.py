"""The dashboard: a static page at ``/`` and its files at ``/dashboard/<name>`` (api/dashboard/).

The page, script and styles load without a key (they hold no data); the page asks for a key,
keeps it in the browser's sessionStorage and sends it as ``Authorization: Bearer`` to the /v1
routes, which check it as for any client. Not in the OpenAPI schema: not part of the data API.
"""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse

from api.errors import ApiError

DASHBOARD_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "dashboard")
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Everything from this origin, nothing from elsewhere (no CDN, no inline script); thumbnails are
# blob: URLs made from authenticated fetches.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag) so a new version of the page shows at once
}

router = APIRouter(tags=["dashboard"], include_in_schema=False)


def dashboard_file(name: str) -> FileResponse:
    path = os.path.join(DASHBOARD_DIR, name)
    media_type = MEDIA_TYPES.get(os.path.splitext(name)[1])
    if media_type is None or not os.path.isfile(path):
        raise ApiError(404, "not_found", f"no dashboard file {name}")
    return FileResponse(path, media_type=media_type, headers=HEADERS)


@router.get("/")
def index() -> FileResponse:
    return dashboard_file("index.html")


@router.get("/dashboard/{name}")
def asset(name: Annotated[str, Path(pattern=r"^[a-z0-9_-]+\.[a-z]+$")]) -> FileResponse:
    return dashboard_file(name)
