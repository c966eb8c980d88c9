"""Every error is JSON ``{"error": {"code", "message"}}``: bad input is a 4xx, never a 500.

Engine errors that mean "no such thing" map to a status here, once for every route
(``ConceptNotFound``: 404).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.graph.concept_queries import ConceptNotFound

log = logging.getLogger("zcurate.api")

# Codes for errors Starlette raises itself (unknown path, wrong method, ...).
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}


class ErrorDetail(BaseModel):
    code: str  # a stable, machine-readable word: unauthorized, invalid_sql, query_timeout, ...
    message: str  # one line for a person


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(HTTPException):
    """An error with a code; an HTTPException so FastAPI's body parsing lets it through unchanged."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _first_line(text: str, limit: int = 300) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line[:limit]


def validation_message(exc: RequestValidationError) -> str:
    """The first validation error as 'where: what', e.g. 'query.k: Input should be less than ...'."""
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return _first_line(f"{where}: {first.get('msg', 'invalid')}")


def install_error_handlers(app: FastAPI) -> None:
    """Turn every exception into the JSON error shape."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, _first_line(exc.detail), exc.headers)

    @app.exception_handler(ConceptNotFound)
    async def concept_not_found(request: Request, exc: ConceptNotFound) -> JSONResponse:
        return error_response(404, "not_found", _first_line(str(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, _first_line(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", validation_message(exc))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: logged with its traceback, reported without internals.
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal server error")


# The error responses every authenticated route documents in OpenAPI (the contract).
ERROR_RESPONSES: dict[int | str, dict] = {
    401: {"model": ErrorBody, "description": "no API key, or an unknown one"},
    403: {"model": ErrorBody, "description": "the key lacks the scope"},
    413: {"model": ErrorBody, "description": "request body too large"},
    422: {"model": ErrorBody, "description": "invalid input"},
}
