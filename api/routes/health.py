"""GET /v1/health: liveness, no key needed (load balancers, compose health checks)."""

from __future__ import annotations

from fastapi import APIRouter

from api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health() -> Health:
    from api.main import VERSION

    return Health(status="ok", version=VERSION)
