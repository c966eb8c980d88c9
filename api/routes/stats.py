"""GET /v1/stats: counts, reject reasons, signal quantiles and score histograms."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import ReadScope
from api.deps import State
from api.errors import ERROR_RESPONSES
from api.histogram import score_histograms
from api.sandbox import json_safe
from api.schemas import Stats
from engine.catalog import dataset_stats

router = APIRouter(tags=["stats"], dependencies=[ReadScope], responses=ERROR_RESPONSES)


@router.get("/stats", response_model=Stats)
def get_stats(state: State) -> Stats:
    def compute() -> Stats:
        return Stats(**json_safe(dataset_stats(state.ws)), score_histograms=score_histograms(state.ws))

    return state.answers.get("stats", compute)
