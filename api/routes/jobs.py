"""/v1/jobs: start a curation job (write scope), follow its progress, cancel it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.auth import ReadScope, WriteScope
from api.deps import State
from api.errors import ERROR_RESPONSES, ApiError, ErrorBody
from api.jobs import Job, JobError
from api.schemas import JobRequest, JobStatus

router = APIRouter(
    tags=["jobs"],
    responses={
        **ERROR_RESPONSES,
        400: {"model": ErrorBody, "description": "a source the service refuses"},
        404: {"model": ErrorBody, "description": "no such job or source"},
        409: {"model": ErrorBody, "description": "a job is already running"},
        503: {"model": ErrorBody, "description": "the job cannot be recorded in the workspace"},
    },
)
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="A job id")]


def job_status(state: State, job: Job, with_progress: bool = True) -> JobStatus:
    progress = state.jobs.progress(job) if with_progress else None
    return JobStatus(
        id=job.id,
        status=job.status,
        source=job.source,
        steps=job.steps,
        created=job.created,
        started=job.started,
        finished=job.finished,
        error=job.error,
        progress=progress,
    )


def found(state: State, job_id: str) -> Job:
    try:
        return state.jobs.get(job_id)
    except JobError as e:
        raise ApiError(e.status, e.code, str(e)) from None


@router.post("/jobs", response_model=JobStatus, status_code=202, dependencies=[WriteScope])
def post_job(body: JobRequest, state: State) -> JobStatus:
    try:
        job = state.jobs.submit(body.source, body.steps, body.limit, body.shard_size)
    except JobError as e:
        raise ApiError(e.status, e.code, str(e)) from None
    return job_status(state, job, with_progress=False)


@router.get("/jobs", response_model=list[JobStatus], dependencies=[ReadScope])
def list_jobs(state: State) -> list[JobStatus]:
    return [job_status(state, job, with_progress=False) for job in state.jobs.jobs.values()]


@router.get("/jobs/{job_id}", response_model=JobStatus, dependencies=[ReadScope])
def get_job(job_id: JobId, state: State) -> JobStatus:
    return job_status(state, found(state, job_id))


@router.delete("/jobs/{job_id}", response_model=JobStatus, status_code=202, dependencies=[WriteScope])
def cancel_job(job_id: JobId, state: State) -> JobStatus:
    found(state, job_id)
    return job_status(state, state.jobs.cancel(job_id), with_progress=False)
