"""GET /v1/health: liveness, no key needed (load balancers, compose health checks)."""

from __future__ import annotations

from fastapi import APIRouter

from api.schemas import Health

router = APIRouter(tags=["health"])
VERSION = "0.1.0"  # the service's version, as OpenAPI and /v1/health report it


@router.get("/health", response_model=Health)
def health() -> Health:
    return Health(status="ok", version=VERSION)
