"""The service's shared objects, made once in the lifespan, and their ``Annotated`` dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from api.auth import KeyRing
from api.cache import StampedCache
from api.jobs import JobRunner
from api.manifests import ManifestBuilder
from api.searcher import Searcher
from api.settings import Settings
from engine.workspace import Workspace


@dataclass
class ServiceState:
    ws: Workspace
    settings: Settings
    keyring: KeyRing
    searcher: Searcher | None = None  # made in the lifespan
    jobs: JobRunner | None = None  # made in the lifespan
    manifests: ManifestBuilder | None = None  # made in the lifespan
    answers: StampedCache | None = None  # stats and concept neighbourhoods until the data changes


def get_state(request: Request) -> ServiceState:
    return request.app.state.zc


State = Annotated[ServiceState, Depends(get_state)]
