"""The fulfill HTTP service (FastAPI): approval intake (contract §4), the status API (§5) and health.

``create_app()`` builds the application; ``fulfill api`` (or ``fulfill up``) serves it with uvicorn on
loopback by default. Every error is a JSON body ``{"error": {"code", "field", "message"}}``: no stack
trace, SQL, provider body or secret ever reaches a response.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from fulfill.db import get_engine, transaction
from fulfill.executions import ExecutionNotFound
from surfaces import monitoring
from surfaces.intake import MAX_BODY_BYTES, ApprovalIntake
from surfaces.routes import ADMIN_ONLY, ApiError, ErrorBody, admin, not_found_error, router
from surfaces.service import ExecutionService

log = logging.getLogger(__name__)


class IntakeAccepted(BaseModel):
    """``202``/``200`` answer of ``POST /webhooks/approvals``."""

    action_intent_id: str
    status: str = Field(
        description="PENDING, or the execution's status for a redelivery; EXPIRED if already past"
    )
    flow_run_id: str | None = Field(description="The Prefect flow run of deployment execute-intent")


class Health(BaseModel):
    status: str
    database: str


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (401, 409, 413, 422)}


def create_app(intake: ApprovalIntake | None = None, service: ExecutionService | None = None) -> FastAPI:
    """The application. ``intake`` is injectable (tests give it a launcher that runs flows in-process),
    and so is the status API's ``service`` (default: the ``FULFILL_DATABASE_URL`` database)."""
    app = FastAPI(
        title="fulfill",
        version="1",
        description="Bounded execution of human-approved ActionIntentV1 objects (contract: docs/CONTRACT.md).",
    )
    receiver = intake or ApprovalIntake()
    app.state.service = service or ExecutionService()
    app.state.launcher = receiver.launcher  # the API's rerun starts runs the way the intake does
    _install_error_handlers(app)
    app.include_router(router)
    # Metrics and connector health show every tenant's figures: admin tokens only.
    app.include_router(monitoring.router, dependencies=[Depends(admin)], responses=ADMIN_ONLY)

    @app.post(
        "/webhooks/approvals",
        response_model=IntakeAccepted,
        status_code=202,
        responses={200: {"model": IntakeAccepted}, **ERRORS},
        summary="Receive an approved ActionIntentV1 (Standard Webhooks signed)",
    )
    async def approvals(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            return _error(413, "PAYLOAD_TOO_LARGE", f"the body is larger than {MAX_BODY_BYTES} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return _error(413, "PAYLOAD_TOO_LARGE", f"the body is larger than {MAX_BODY_BYTES} bytes")
        answer = await _in_thread(receiver.receive, bytes(body), dict(request.headers))
        return JSONResponse(answer.body, status_code=answer.status_code)

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    async def healthz() -> JSONResponse:
        try:
            await _in_thread(_ping)
        except Exception:  # the probe answers; what failed is for the logs, not the response
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    return app


def _install_error_handlers(app: FastAPI) -> None:
    """Every error — bad input, unknown path, a bug — answers the JSON error shape and nothing more."""

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(ExecutionNotFound)
    async def not_found(_request: Request, _exc: ExecutionNotFound) -> JSONResponse:
        # Unknown id or another tenant's: byte-for-byte the same answer, nothing of the id echoed.
        error = not_found_error()
        return JSONResponse(error.body(), status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        location = [str(part) for part in first.get("loc", ())]
        field = ".".join(
            location[1:] if location[:1] in (["query"], ["path"], ["body"], ["header"]) else location
        )
        message = str(first.get("msg") or "invalid request")[:300]
        return _error(422, "INVALID_REQUEST", message, field or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not parse the body: bad input, like any other
            return _error(422, "INVALID_REQUEST", "the body could not be parsed as JSON", "body")
        codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
        messages = {404: "no such endpoint", 405: "method not allowed"}
        response = _error(
            exc.status_code,
            codes.get(exc.status_code, "HTTP_ERROR"),
            messages.get(exc.status_code, "the request could not be served"),
        )
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error while serving a request")  # the details are for the logs only
        return _error(500, "INTERNAL_ERROR", "an internal error occurred; it has been logged")


def _ping() -> None:
    with transaction(get_engine()) as session:
        session.exec(sa.select(1))  # type: ignore[call-overload]


async def _in_thread(function: Any, *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function, *args)


def _error(status_code: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "field": field, "message": message}}, status_code=status_code
    )
