"""The fulfill HTTP service (FastAPI): approval intake (contract §4) and health.

``create_app()`` builds the application; ``fulfill api`` (or ``fulfill up``) serves it with uvicorn on
loopback by default. Every error is a JSON body ``{"error": {"code", "field", "message"}}``: no stack
trace, SQL, provider body or secret ever reaches a response.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from fulfill.db import get_engine, transaction
from surfaces.intake import MAX_BODY_BYTES, ApprovalIntake


class IntakeAccepted(BaseModel):
    """``202``/``200`` answer of ``POST /webhooks/approvals``."""

    action_intent_id: str
    status: str = Field(
        description="PENDING, or the execution's status for a redelivery; EXPIRED if already past"
    )
    flow_run_id: str | None = Field(description="The Prefect flow run of deployment execute-intent")


class ErrorDetail(BaseModel):
    code: str
    field: str | None = None
    message: str


class ErrorBody(BaseModel):
    """Every error answer."""

    error: ErrorDetail


class Health(BaseModel):
    status: str
    database: str


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (401, 409, 413, 422)}


def create_app(intake: ApprovalIntake | None = None) -> FastAPI:
    """The application. ``intake`` is injectable (tests give it a launcher that runs flows in-process)."""
    app = FastAPI(
        title="fulfill",
        version="1",
        description="Bounded execution of human-approved ActionIntentV1 objects (contract: docs/CONTRACT.md).",
    )
    receiver = intake or ApprovalIntake()

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
