"""GET /v1/models (the embedding models a workspace holds) and PUT /v1/models/active (switch).

Switching runs what depends on the active model (its indexes, dedup, tags, the catalog:
``pipelines.models.use_model``) before it answers; search, stats and the dashboard then use the
new model. It is a write: it needs the ``write`` scope.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.auth import ReadScope, WriteScope
from api.deps import State
from api.errors import ERROR_RESPONSES, ApiError
from api.schemas import ActivateModel, ModelInfo, ModelList
from engine.embedding_models import ModelRegistryError, active_model, list_models
from pipelines.models import ModelSwitchError, use_model

router = APIRouter(tags=["models"], responses=ERROR_RESPONSES)


def model_list(state: State) -> ModelList:
    models, active = list_models(state.ws), active_model(state.ws)
    return ModelList(
        active=active.key if active else None,
        models=[
            ModelInfo(
                key=m.key,
                model_id=m.model_id,
                spec=m.spec,
                dim=m.dim,
                active=bool(active and m.key == active.key),
                samples=len(state.ws.read_table(f"embeddings@{m.key}", ["sample_id"])),
            )
            for m in models
        ],
    )


@router.get("/models", response_model=ModelList, dependencies=[ReadScope])
def get_models(state: State) -> ModelList:
    return model_list(state)


@router.put("/models/active", response_model=ModelList, dependencies=[WriteScope])
async def put_active_model(state: State, body: ActivateModel) -> ModelList:
    try:
        await run_in_threadpool(use_model, state.ws, body.model, None, body.force)
    except ModelRegistryError as e:
        raise ApiError(404, "not_found", str(e)) from None
    except ModelSwitchError as e:
        raise ApiError(409, "conflict", str(e)) from None
    return model_list(state)
