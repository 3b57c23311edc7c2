"""Dry run (``fulfill plan FILE``): the exact requests an intent would make, with nothing sent anywhere.

The connector is built as ``tasks.resolve`` builds it for execution — the tenant's configuration picks
the provider and the credentials block, the block is loaded by name (:func:`tasks.resolve.load_credentials`)
and hands out its client (``get_client()``) to :func:`connectors.registry.build_connector` — but its
transport refuses to send anything, and no request is ever given to it. Each step is described by the
connector itself (:meth:`connectors.base.Connector.describe`: the same code that builds the requests it
sends), each request is built by the same client (``connectors.http.build_request``), and a token request
is shown where execution would fetch a token (the block's auth builds it: ``token_request()``). Every
request is shown through :class:`surfaces.redacting_recorder.RedactingRecorder`.

What a dry run does NOT do:

* verify the approval signature — the intent is validated (:func:`fulfill.intent.parse_intent`),
  but approval is checked only when the intent executes;
* write anything: no execution row, no ledger row, no object in storage;
* check the credentials or the provider's data. A write that depends on an answer (an update after
  reading the record) is listed with its condition; the id of an object an earlier step creates is a
  placeholder (``{id from create_opportunity}``); Salesforce's instance is the block's until a token
  names it.

Every secret is masked in the output: the ``Authorization`` header, the secret fields of token
forms (``client_secret``, ``refresh_token``, ``assertion``), secret-looking JSON keys, and any
occurrence of the block's secret values.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, cast

import httpx
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from blocks.auth import AuthError, BearerAuth, OAuthTokenAuth
from connectors.base import Connector, ExternalRef, ProviderRequest, StepCall, idempotency_key
from connectors.errors import ConnectorError
from connectors.http import auth_error, build_request
from connectors.internal import InternalConnector
from connectors.registry import ACTION_FAMILY, build_connector
from fulfill.db import get_engine
from fulfill.intent import ActionIntentV1, IntentInvalid, parse_intent
from fulfill.redaction import MASK, redact
from fulfill.settings import load_settings
from fulfill.storage import LocalObjectStore, ObjectStore, S3ObjectStore
from fulfill.tenants import get_tenant
from surfaces.redacting_recorder import RedactingRecorder
from tasks.resolve import load_credentials

APPROVAL_NOTE = (
    "The approval signature was NOT verified: a dry run does not need it (execution always checks it)."
)
NOTHING_SENT = "Nothing was sent to any provider and nothing was written."
RequestKind = Literal["auth", "read", "write", "internal"]
TenantConfigLookup = Callable[[str], Mapping[str, Any] | None]
BlockLoader = Callable[[str, str], Any]


class PlannedRequest(BaseModel):
    """One request the intent's execution would make (secrets masked), or one internal write."""

    model_config = ConfigDict(frozen=True)

    action_intent_id: str
    tenant_id: str
    action_type: str
    system: str = Field(description="salesforce, hubspot, google_calendar, internal, object_storage")
    step: str = Field(description="The step the request belongs to (token fetches count for their step)")
    kind: RequestKind = Field(description="auth (token request), read, write, or internal (database/storage)")
    method: str
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = Field(default=None, description="Parsed JSON, the form as a dict, text, or None")
    idempotency_key: str | None = Field(
        default=None, description="The step's deterministic key (None for token requests)"
    )
    purpose: str = Field(default="", description="What the request is for, e.g. 'upsert Task'")
    note: str = Field(default="", description="When it is sent, if not always, and what to know about it")


class PlanFailed(Exception):
    """The dry run could not plan the whole intent.

    Args:
        code: A contract failure code (``VALIDATION_FAILED``, ``NOT_CONFIGURED``, ``CONNECTOR_REJECTED`` …).
        message: What went wrong (secret-free).
        requests: The requests planned before the failure.
        field: The offending intent field, for validation failures.
    """

    def __init__(
        self,
        code: str,
        message: str,
        requests: list[PlannedRequest] | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.requests = list(requests or [])
        self.field = field


def tenant_config_from_database(tenant_id: str) -> dict[str, Any] | None:
    """The tenant's connector configuration, read (never written) from the ledger database."""
    try:
        engine = get_engine(migrate=False)
        with Session(engine) as session:
            tenant = get_tenant(session, tenant_id)
            return None if tenant is None else tenant.model_dump()
    except SQLAlchemyError as exc:
        raise PlanFailed(
            "NOT_CONFIGURED", f"the tenant configuration could not be read ({type(exc).__name__})"
        ) from None


def plan_requests(
    raw_intent: dict[str, Any],
    *,
    tenant_config_lookup: TenantConfigLookup = tenant_config_from_database,
    load_block: BlockLoader = load_credentials,
    generation: int = 0,
) -> list[PlannedRequest]:
    """The requests executing ``raw_intent`` would make, in order, without sending any of them.

    Args:
        raw_intent: The intent document (validated here; its approval is NOT verified).
        tenant_config_lookup: ``tenant_id`` → the tenant's configuration (``crm_provider``,
            ``crm_block``, ``calendar_provider``, ``calendar_block``, ``storage_block``), or None.
        load_block: ``(provider, block_name)`` → the credentials block (default: load it from Prefect,
            as execution does).
        generation: The execution generation whose idempotency keys to show (0 for a new intent).

    Returns:
        Every provider request (token requests marked ``auth``), or the internal writes, in order.

    Raises:
        PlanFailed: the intent is invalid, the tenant is not configured, or the connector refused it.
    """
    try:
        intent = parse_intent(raw_intent)
    except IntentInvalid as exc:
        raise PlanFailed("VALIDATION_FAILED", str(exc), field=exc.field) from None
    params = intent.normalized_parameters()
    family = ACTION_FAMILY[intent.action_type]
    config = dict(tenant_config_lookup(intent.tenant_id) or {})
    if family == "internal":
        return _plan_internal(intent, params, config, generation)
    provider = config.get(f"{family}_provider")
    block_name = config.get(f"{family}_block")
    if not provider or not block_name:
        raise PlanFailed("NOT_CONFIGURED", f"tenant {intent.tenant_id} has no {family} connector configured")
    try:
        credentials = load_block(str(provider), str(block_name))
    except ConnectorError as error:
        raise PlanFailed(error.code, error.detail) from None
    recorder = RedactingRecorder.for_block(credentials)
    planner = _Planner(intent, str(provider), recorder)
    with credentials.get_client(transport=_NoNetwork()) as client:
        connector = build_connector(str(provider), credentials, client)
        try:
            planner.run(connector, client, params, generation)
        except AuthError as exc:
            refused = auth_error(exc)
            raise PlanFailed(refused.code, recorder.scrub(refused.detail), planner.requests) from None
        except ConnectorError as error:
            detail = recorder.scrub(error.detail)
            raise PlanFailed(error.code, f"{error.seller_message} ({detail})", planner.requests) from None
    return planner.requests


def _call(
    intent: ActionIntentV1,
    params: dict[str, Any],
    step: str,
    generation: int,
    prior: Mapping[str, ExternalRef],
) -> StepCall:
    return StepCall(
        action_intent_id=intent.action_intent_id,
        tenant_id=intent.tenant_id,
        account_id=intent.account_id,
        action_type=intent.action_type,
        step=step,
        idempotency_key=idempotency_key(intent.action_intent_id, step, generation),
        params=params,
        prior=dict(prior),
    )


class _NoNetwork(httpx.BaseTransport):
    """The dry run's transport: it is never given a request, and would refuse one."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a dry run sends nothing")


class _Planner:
    """The flow's step loop (``flows.execute_intent``) with every step described instead of executed."""

    def __init__(self, intent: ActionIntentV1, system: str, recorder: RedactingRecorder) -> None:
        self.intent = intent
        self.system = system
        self.recorder = recorder
        self.requests: list[PlannedRequest] = []

    def run(
        self, connector: Connector, client: httpx.Client, params: dict[str, Any], generation: int
    ) -> None:
        """Validate, then describe each step's requests, each token request before the first that needs it."""
        intent = self.intent
        auth = client.auth
        connector.validate(intent.action_type, params)
        tokens: set[str] = set()  # the token-cache keys a token was shown for: execution fetches once
        prior: dict[str, ExternalRef] = {}
        for step in connector.steps(intent.action_type, params):
            call = _call(intent, params, step, generation, prior)
            placeholders = "; ".join(
                f"{ref.id} stands for the id step {name} gets from the provider"
                for name, ref in prior.items()
            )
            for described in connector.describe(call):
                request = build_request(client, described)
                key = auth.cache_key(described.subject) if isinstance(auth, OAuthTokenAuth) else ""
                if key not in tokens and isinstance(auth, BearerAuth):
                    tokens.add(key)
                    # Raises (a failed plan) when the block lacks what its grant needs, as execution would.
                    token_request = auth.token_request(described.subject, cause=request)
                    if token_request is not None:
                        self._add("auth", step, None, token_request, "token request")
                if isinstance(auth, BearerAuth):
                    auth.apply(request, MASK)
                note = "; ".join(
                    part
                    for part in (
                        f"sent {described.condition}" if described.condition else "",
                        described.note,
                        placeholders,
                    )
                    if part
                )
                kind: RequestKind = "write" if described.write else "read"  # a search POST reads
                self._add(kind, step, call.idempotency_key, request, described.purpose, note)
            prior[step] = connector.planned_ref(call)

    def _add(
        self,
        kind: RequestKind,
        step: str,
        key: str | None,
        request: httpx.Request,
        purpose: str,
        note: str = "",
    ) -> None:
        recorder = self.recorder
        self.requests.append(
            PlannedRequest(
                action_intent_id=self.intent.action_intent_id,
                tenant_id=self.intent.tenant_id,
                action_type=self.intent.action_type,
                system=self.system,
                step=step,
                kind=kind,
                method=request.method,
                url=recorder.url(request),
                headers=recorder.headers(request),
                body=recorder.body(request),
                idempotency_key=key,
                purpose=purpose,
                note=recorder.scrub(note) if note else ("secrets masked" if kind == "auth" else ""),
            )
        )


# -- internal actions: described, never performed ----------------------------------------------
def _plan_internal(
    intent: ActionIntentV1, params: dict[str, Any], config: Mapping[str, Any], generation: int
) -> list[PlannedRequest]:
    # The connector never gets an engine, so it cannot touch the database; describe() needs none.
    connector = InternalConnector(cast(Engine, None), _describe_store(config.get("storage_block")))
    planned: list[PlannedRequest] = []
    try:
        connector.validate(intent.action_type, params)
        prior: dict[str, ExternalRef] = {}
        for step in connector.steps(intent.action_type, params):
            call = _call(intent, params, step, generation, prior)
            planned.extend(_internal_entry(intent, call, described) for described in connector.describe(call))
            prior[step] = connector.planned_ref(call)
    except ConnectorError as error:
        raise PlanFailed(error.code, error.detail, planned) from None
    return planned


def _internal_entry(intent: ActionIntentV1, call: StepCall, described: ProviderRequest) -> PlannedRequest:
    stored = described.method == "PUT"
    content_type = str(call.params.get("content_type", "text/markdown"))
    return PlannedRequest(
        action_intent_id=intent.action_intent_id,
        tenant_id=intent.tenant_id,
        action_type=intent.action_type,
        system="object_storage" if stored else "internal",
        step=call.step,
        kind="internal",
        method=described.method,
        url=described.url,
        headers={"Content-Type": content_type} if stored else {},
        body=redact(described.body),
        idempotency_key=call.idempotency_key,
        purpose=described.purpose,
        note=described.note,
    )


def _describe_store(storage_block: Any) -> ObjectStore:
    """Where briefs would go, without opening any connection."""
    if storage_block:
        from prefect_aws.s3 import S3Bucket

        bucket: Any = S3Bucket.load(str(storage_block))
        return S3ObjectStore(None, bucket.bucket_name, bucket.bucket_folder or "")
    return LocalObjectStore(Path(load_settings().data_dir) / "objects")


# -- human output ------------------------------------------------------------------------------
def format_plan(requests: list[PlannedRequest]) -> str:
    """The plan as text for a person: header, then each request with its headers and body."""
    if not requests:
        return f"Dry run: no request would be made. {NOTHING_SENT}\n{APPROVAL_NOTE}"
    first = requests[0]
    lines = [
        f"Dry run of {first.action_intent_id} ({first.action_type}) for tenant {first.tenant_id}.",
        NOTHING_SENT,
        APPROVAL_NOTE,
    ]
    step = None
    for number, request in enumerate(requests, start=1):
        if request.step != step:
            step = request.step
            key = next((r.idempotency_key for r in requests if r.step == step and r.idempotency_key), None)
            lines.append("")
            lines.append(f"Step {step} ({request.system})" + (f" — idempotency key {key}" if key else ""))
        purpose = f" — {request.purpose}" if request.purpose else ""
        lines.append(f"  {number}. [{request.kind}] {request.method} {request.url}{purpose}")
        for name, value in request.headers.items():
            lines.append(f"       {name}: {value}")
        if request.body is not None:
            body = (
                request.body
                if isinstance(request.body, str)
                else json.dumps(request.body, ensure_ascii=False, sort_keys=True)
            )
            lines.append(f"       body: {body}")
        if request.note:
            lines.append(f"       note: {request.note}")
    return "\n".join(lines)
