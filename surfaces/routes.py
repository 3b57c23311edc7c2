"""The status API (contract §5): bearer-token auth and the status, timeline, cancel, executions,
controls and ledger endpoints.

Every endpoint here needs ``Authorization: Bearer <token>`` (``fulfill token create``). A token is
bound to one tenant with a role — ``viewer`` reads; ``operator`` also cancels, reads an intent's
ledger and switches its own tenant's kill switch — or is an ``admin`` token (no tenant; all of it,
action-type switches included). An id of another tenant answers ``404`` byte-for-byte like an
unknown id. Every error is ``{"error": {"code", "field", "message"}}`` (see :mod:`surfaces.api`, which also turns
``ExecutionNotFound`` into that 404 for every route).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from deployments.launch import RunLauncher
from fulfill.executions import AlreadyFinished, ExecutionNotFound, NotRerunnable
from fulfill.intent import ActionIntentV1
from fulfill.settings import emergency_stop_engaged
from fulfill.states import ExecutionStatus
from fulfill.tables import ControlPublic
from fulfill.tokens import Principal
from fulfill.views import ExecutionPage, IntentLedger, StatusBody, Timeline
from surfaces.service import MAX_PAGE, ExecutionService, InvalidCursor

logger = logging.getLogger("fulfill.api")
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
ACTION_TYPES: tuple[str, ...] = get_args(ActionIntentV1.model_fields["action_type"].annotation)
BEARER = 'Bearer realm="fulfill"'


class ErrorDetail(BaseModel):
    code: str = Field(description="UNAUTHORIZED, FORBIDDEN, NOT_FOUND, ALREADY_FINISHED, INVALID_REQUEST, …")
    field: str | None = Field(default=None, description="The request part at fault, when there is one")
    message: str


class ErrorBody(BaseModel):
    """Every error answer."""

    error: ErrorDetail


class ApiError(Exception):
    """An error a caller caused; rendered as :class:`ErrorBody` by the handler in :mod:`surfaces.api`."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "field": self.field, "message": self.message}}


def not_found_error() -> ApiError:
    # The same bytes for an unknown id and another tenant's id: nothing of the id is echoed. Every route
    # lets ExecutionNotFound (unknown or another tenant's id) reach the app's handler, which answers this.
    return ApiError(404, "NOT_FOUND", "no execution with this id", "action_intent_id")


FORBIDDEN = "FORBIDDEN"


class SwitchChange(BaseModel):
    """Body of ``PUT /controls/…``: ``enabled: false`` stops every new external call in that scope."""

    model_config = ConfigDict(extra="forbid")

    enabled: StrictBool
    reason: Annotated[
        str,
        Field(
            max_length=1000,
            pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$",
            description="Why (no control characters)",
        ),
    ] = ""


class RerunAccepted(BaseModel):
    """``POST /actions/{id}/rerun``: the execution (still FAILED until the run claims it) and the new run."""

    action_intent_id: str
    status: ExecutionStatus
    flow_run_id: str = Field(
        description="The Prefect flow run of the execute-intent deployment doing the rerun"
    )


class ControlsView(BaseModel):
    """``GET /controls``: the kill switches a token may see, and the global emergency stop."""

    emergency_stop: bool = Field(
        description="The global emergency stop (FULFILL_EMERGENCY_STOP). Read-only here: set on the workers"
    )
    switches: list[ControlPublic]


# --- auth --------------------------------------------------------------------------------
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="BearerToken",
    description="A token from `fulfill token create`: tenant-bound viewer/operator, or admin.",
)


def get_service(request: Request) -> ExecutionService:
    """The app's service facade (``create_app(service=…)``)."""
    service: ExecutionService = request.app.state.service
    return service


Service = Annotated[ExecutionService, Depends(get_service)]


def principal(
    service: Service,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The verified caller. 401 (``WWW-Authenticate: Bearer``) when missing, unknown, revoked or expired."""
    if credentials is None or not credentials.credentials:
        raise ApiError(
            401, "UNAUTHORIZED", "a bearer token is required", "Authorization", {"WWW-Authenticate": BEARER}
        )
    who = service.authenticate(credentials.credentials)
    if who is None:
        raise ApiError(
            401,
            "UNAUTHORIZED",
            "the bearer token is invalid, revoked or expired",
            "Authorization",
            {"WWW-Authenticate": f'{BEARER}, error="invalid_token"'},
        )
    return who


Caller = Annotated[Principal, Depends(principal)]


def operator(who: Caller) -> Principal:
    """An operator (or admin) token; a viewer gets 403."""
    if not who.can_operate:
        raise ApiError(403, FORBIDDEN, "this needs an operator token", "Authorization")
    return who


Operator = Annotated[Principal, Depends(operator)]


def admin(who: Caller) -> Principal:
    """An admin token (no tenant): for what shows every tenant at once (metrics, connector health)."""
    if not who.is_admin:
        raise ApiError(403, FORBIDDEN, "this needs an admin token", "Authorization")
    return who


# --- routes ------------------------------------------------------------------------------
router = APIRouter()
_AUTH: dict[int | str, dict[str, Any]] = {401: {"model": ErrorBody}, 422: {"model": ErrorBody}}
_READ = {**_AUTH, 404: {"model": ErrorBody}}
_OPERATE = {**_READ, 403: {"model": ErrorBody}}
#: What a route mounted behind :func:`admin` may answer besides its own codes.
ADMIN_ONLY: dict[int | str, dict[str, Any]] = {**_AUTH, 403: {"model": ErrorBody}}
IntentId = Annotated[str, Path(description="The ActionIntentV1 id")]


def _plausible(action_intent_id: str) -> str:
    """Ids no execution can have (too long, NUL) are unknown ids, answered before any query."""
    if not action_intent_id or len(action_intent_id) > 128 or "\x00" in action_intent_id:
        raise not_found_error()
    return action_intent_id


@router.get(
    "/actions/{action_intent_id}/status",
    response_model=StatusBody,
    responses=_READ,
    tags=["status"],
    summary="The contract status body of one intent",
)
def get_status(action_intent_id: IntentId, who: Caller, service: Service) -> StatusBody:
    return service.get_execution_status(_plausible(action_intent_id), who.tenant_id)


@router.get(
    "/actions/{action_intent_id}/timeline",
    response_model=Timeline,
    responses=_READ,
    tags=["status"],
    summary="Decision → approval → execution → outcome, retries collapsed",
)
def get_timeline(action_intent_id: IntentId, who: Caller, service: Service) -> Timeline:
    return service.get_timeline(_plausible(action_intent_id), who.tenant_id)


@router.post(
    "/actions/{action_intent_id}/cancel",
    response_model=StatusBody,
    responses={**_OPERATE, 409: {"model": ErrorBody}},
    tags=["status"],
    summary="Cancel a PENDING or EXECUTING intent (operator)",
    description="200: it was PENDING/EXECUTING and is now CANCELLED (no further external call starts). "
    "409: it had already finished.",
)
def cancel(action_intent_id: IntentId, who: Operator, service: Service) -> StatusBody:
    try:
        return service.cancel_execution(_plausible(action_intent_id), who.tenant_id, actor=who.actor)
    except AlreadyFinished as finished:
        raise ApiError(
            409, "ALREADY_FINISHED", f"the execution has already finished ({finished.status})", "status"
        ) from None


@router.post(
    "/actions/{action_intent_id}/rerun",
    response_model=RerunAccepted,
    status_code=202,
    responses={**_OPERATE, 409: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    tags=["status"],
    summary="Rerun a FAILED execution as a new run of the deployment (operator)",
    description="202: the rerun is ledgered with the operator's name and a run of `execute-intent` is created "
    "(finished steps are not repeated; a kill switch still holds it). Asking again before that run starts "
    "finds the same run. 409: the execution is not FAILED. 503: the run could not be created (retry).",
)
def rerun(action_intent_id: IntentId, who: Operator, service: Service, request: Request) -> RerunAccepted:
    launcher: RunLauncher = request.app.state.launcher
    try:
        status, flow_run_id = service.request_rerun(
            _plausible(action_intent_id), who.tenant_id, actor=who.actor, launcher=launcher
        )
    except ExecutionNotFound:
        raise  # the one 404 of every route (surfaces.api)
    except NotRerunnable as refused:
        raise ApiError(409, "NOT_RERUNNABLE", str(refused), "status") from None
    except Exception:
        logger.exception("rerun of %s: the flow run could not be created", action_intent_id)
        raise ApiError(503, "UNAVAILABLE", "the rerun could not be started; try again") from None
    return RerunAccepted(
        action_intent_id=status.action_intent_id, status=status.status, flow_run_id=flow_run_id
    )


@router.get(
    "/actions/{action_intent_id}/ledger",
    response_model=IntentLedger,
    responses=_OPERATE,
    tags=["audit"],
    summary="An intent's full ledger rows with the hash-chain verification (operator)",
)
def get_ledger(action_intent_id: IntentId, who: Operator, service: Service) -> IntentLedger:
    return service.ledger_for_intent(_plausible(action_intent_id), who.tenant_id)


@router.get(
    "/accounts/{account_id}/executions",
    response_model=ExecutionPage,
    responses=_AUTH,
    tags=["status"],
    summary="An account's executions, newest first (keyset pagination)",
)
def list_executions(
    account_id: Annotated[str, Path(description="The CRM account id of the intents")],
    who: Caller,
    service: Service,
    status: Annotated[
        list[ExecutionStatus] | None, Query(description="Only these statuses (repeatable)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=512, description="next_cursor of the previous page")
    ] = None,
) -> ExecutionPage:
    if len(account_id) > 128 or "\x00" in account_id:  # no execution has such an account
        if cursor:
            raise ApiError(
                422, "INVALID_CURSOR", "the cursor is malformed or not from this listing", "cursor"
            )
        return ExecutionPage(items=[], next_cursor=None)
    try:
        return service.list_executions(
            tenant_id=who.tenant_id,
            account_id=account_id,
            statuses=list(status) if status else None,
            limit=limit,
            cursor=cursor,
        )
    except InvalidCursor:
        raise ApiError(
            422, "INVALID_CURSOR", "the cursor is malformed or not from this listing", "cursor"
        ) from None


@router.get(
    "/controls",
    response_model=ControlsView,
    responses=_AUTH,
    tags=["controls"],
    summary="Kill switches (the caller's tenant and every action type) and the global emergency stop",
)
def get_controls(who: Caller, service: Service) -> ControlsView:
    return ControlsView(
        emergency_stop=emergency_stop_engaged(), switches=service.list_kill_switches(who.tenant_id)
    )


@router.put(
    "/controls/tenants/{tenant_id}",
    response_model=ControlPublic,
    responses=_OPERATE,
    tags=["controls"],
    summary="Switch a tenant's executions off or on (operator of that tenant, or admin)",
)
def put_tenant_switch(
    tenant_id: Annotated[str, Path(pattern=TENANT_PATTERN)],
    change: SwitchChange,
    who: Operator,
    service: Service,
) -> ControlPublic:
    if who.tenant_id is not None and who.tenant_id != tenant_id:
        raise ApiError(404, "NOT_FOUND", "no such tenant", "tenant_id")
    return service.set_kill_switch(
        "tenant", tenant_id, enabled=change.enabled, reason=change.reason, actor=who.actor
    )


@router.put(
    "/controls/action-types/{action_type}",
    response_model=ControlPublic,
    responses=_OPERATE,
    tags=["controls"],
    summary="Switch one action type off or on, for every tenant (admin)",
)
def put_action_type_switch(
    action_type: Annotated[
        str, Path(pattern="^(" + "|".join(a.replace(".", r"\.") for a in ACTION_TYPES) + ")$")
    ],
    change: SwitchChange,
    who: Operator,
    service: Service,
) -> ControlPublic:
    if not who.is_admin:
        raise ApiError(403, FORBIDDEN, "action-type switches need an admin token", "Authorization")
    return service.set_kill_switch(
        "action_type", action_type, enabled=change.enabled, reason=change.reason, actor=who.actor
    )
