"""Dry run (``fulfill plan FILE``): the exact requests an intent would make, with nothing sent anywhere.

The connector is built exactly as ``tasks.resolve`` builds it for execution — the tenant's
configuration picks the provider and the credentials block, the block is loaded by name
(:func:`tasks.resolve.load_credentials`) and handed to :func:`connectors.registry.build_connector` —
with ONE difference: its ``httpx.Client`` has a transport that records every request and answers it
from an in-memory emulator of that provider (``sandbox``). No socket is ever opened, so no
request can reach the provider (or anything else), and token fetches and multi-step actions
(a follow-up task needs the opportunity's id) still run through the real connector code.

What a dry run does NOT do:

* verify the approval signature — the intent is validated (:func:`fulfill.intent.parse_intent`),
  but approval is checked only when the intent executes;
* write anything: no execution row, no ledger row, no object in storage (internal actions are
  described from their steps and keys, not performed);
* check the credentials or the provider's data. The emulator issues a token for any well-formed
  token request, accepts any field, stage or record id the real org/portal may hold, and answers a
  read of the record an update targets with the ``previous_value`` the approver saw. Ids of objects
  created by earlier steps are the emulator's, not the provider's.

Every secret is masked in the output: the ``Authorization`` header, the secret fields of token
forms (``client_secret``, ``refresh_token``, ``assertion``), secret-looking JSON keys, and any
occurrence of the block's secret values or of an access token the emulator issued.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import parse_qs, parse_qsl

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from connectors.base import Connector, ExternalRef, StepCall, idempotency_key
from connectors.errors import ConnectorError
from connectors.internal import TABLES, InternalConnector, brief_object_key
from connectors.registry import ACTION_FAMILY, build_connector
from fulfill.db import get_engine
from fulfill.intent import ActionIntentV1, IntentInvalid, parse_intent
from fulfill.redaction import MASK, SECRET_KEY, redact, scrub_text
from fulfill.settings import load_settings
from fulfill.storage import LocalObjectStore, ObjectStore, S3ObjectStore
from fulfill.tenants import get_tenant
from sandbox.base import Emulator
from sandbox.google_calendar import JWT_BEARER_GRANT as GOOGLE_JWT_GRANT
from sandbox.google_calendar import GoogleCalendarEmulator
from sandbox.hubspot import HubSpotEmulator
from sandbox.salesforce import JWT_BEARER_GRANT as SALESFORCE_JWT_GRANT
from sandbox.salesforce import USER_ID, SalesforceEmulator
from tasks.resolve import load_credentials

APPROVAL_NOTE = (
    "The approval signature was NOT verified: a dry run does not need it (execution always checks it)."
)
NOTHING_SENT = "Nothing was sent to any provider and nothing was written."
HUBSPOT_OBJECT_TYPES = {
    "Account": "companies",
    "Opportunity": "deals",
    "Contact": "contacts",
    "Lead": "contacts",
}
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
    note: str = ""


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
    recorder = _Recorder(intent, str(provider), credentials)
    with httpx.Client(transport=httpx.MockTransport(recorder.handle)) as client:
        connector = build_connector(str(provider), credentials, client)
        try:
            _run_steps(connector, intent, params, recorder, generation)
        except ConnectorError as error:
            detail = recorder.scrub(error.detail)
            raise PlanFailed(error.code, f"{error.seller_message} ({detail})", recorder.requests) from None
    return recorder.requests


def _run_steps(
    connector: Connector, intent: ActionIntentV1, params: dict[str, Any], recorder: _Recorder, generation: int
) -> None:
    """The flow's step loop (``flows.execute_intent._fulfil``) without its checkpoints and records."""
    connector.validate(intent.action_type, params)
    prior: dict[str, ExternalRef] = {}
    for step in connector.steps(intent.action_type, params):
        call = _call(intent, params, step, generation, prior)
        recorder.begin(step, call.idempotency_key, prior)
        prior[step] = connector.execute(call).ref


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


# -- the recording transport -------------------------------------------------------------------
class _Recorder:
    """Records each request (masked) and answers it from an in-memory planning emulator."""

    def __init__(self, intent: ActionIntentV1, provider: str, credentials: Any) -> None:
        self.intent = intent
        self.provider = provider
        self.emulator = _planning_emulator(provider, credentials, intent)
        self.token_urls = _token_urls(provider, credentials)
        self.secrets = _secret_values(credentials)
        self.requests: list[PlannedRequest] = []
        self.step = ""
        self.key: str | None = None
        self.prior_note = ""
        self.note = _note(provider, credentials)

    def begin(self, step: str, key: str, prior: Mapping[str, ExternalRef]) -> None:
        """Attribute the following requests to ``step`` (which uses the ``prior`` steps' objects)."""
        self.step, self.key = step, key
        self.prior_note = "; ".join(
            f"the {ref.object} id {ref.id} from step {name} is the local emulator's; the real run uses "
            "the provider's"
            for name, ref in prior.items()
        )

    def scrub(self, text: str) -> str:
        """``text`` with every known secret value masked."""
        return scrub_text(text, sorted(self.secrets, key=len, reverse=True))

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Record, then answer from the emulator (never from the network)."""
        request.read()
        url = str(request.url.copy_with(query=None))
        kind: RequestKind = (
            "auth" if url in self.token_urls else "read" if request.method.upper() == "GET" else "write"
        )
        self.requests.append(
            PlannedRequest(
                action_intent_id=self.intent.action_intent_id,
                tenant_id=self.intent.tenant_id,
                action_type=self.intent.action_type,
                system=self.provider,
                step=self.step,
                kind=kind,
                method=request.method.upper(),
                url=self.scrub(str(request.url)),
                headers=self._headers(request),
                body=self._body(request),
                idempotency_key=None if kind == "auth" else self.key,
                note="token request (secrets masked)" if kind == "auth" else self._note_for(request),
            )
        )
        response = self.emulator.handle(request)
        if kind == "auth":
            self._learn_tokens(response)
        return response

    def _note_for(self, request: httpx.Request) -> str:
        if request.method.upper() == "GET" and self.intent.action_type == "crm.update_field":
            return (
                "answered here with the approver's previous_value; the real run reads the live record "
                "and halts (STALE_PRECONDITION) if it differs"
            )
        return "; ".join(note for note in (self.prior_note, self.note) if note)

    def _headers(self, request: httpx.Request) -> dict[str, str]:
        shown: dict[str, str] = {}
        for name, value in request.headers.items():
            if name.lower() in ("authorization", "proxy-authorization"):
                scheme = value.split(" ", 1)[0] if " " in value else ""
                shown[name] = f"{scheme} {MASK}".strip()
            elif SECRET_KEY.search(name):
                shown[name] = MASK
            else:
                shown[name] = self.scrub(value)
        return shown

    def _body(self, request: httpx.Request) -> Any:
        content = request.content
        if not content:
            return None
        text = content.decode("utf-8", "replace")
        content_type = request.headers.get("content-type", "")
        if "application/x-www-form-urlencoded" in content_type:
            return {
                name: MASK if SECRET_KEY.search(name) else self._deep_scrub(value)
                for name, value in parse_qsl(text, keep_blank_values=True)
            }
        if "json" in content_type:
            try:
                return self._deep_scrub(redact(json.loads(text)))
            except ValueError:
                pass
        return self.scrub(text)

    def _deep_scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub(str(k)): self._deep_scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._deep_scrub(v) for v in value]
        return value

    def _learn_tokens(self, response: httpx.Response) -> None:
        """Tokens the emulator issued are masked wherever they would appear later."""
        try:
            body = json.loads(response.read() or b"{}")
        except ValueError:
            return
        if isinstance(body, dict):
            for name in ("access_token", "refresh_token", "id_token"):
                value = body.get(name)
                if isinstance(value, str) and value:
                    self.secrets.add(value)


def _secret_values(credentials: Any) -> set[str]:
    """Every secret value of a credentials block (its ``SecretStr`` fields)."""
    values: set[str] = set()
    for name in type(credentials).model_fields:
        value = getattr(credentials, name, None)
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if secret:
                values.add(secret)
                values.update(line for line in secret.splitlines() if len(line) >= 16)
    return values


def _token_urls(provider: str, credentials: Any) -> set[str]:
    if provider == "salesforce":
        return {f"{str(credentials.login_url).rstrip('/')}/services/oauth2/token"}
    if provider == "hubspot":
        return {str(credentials.token_url)}
    return {str(credentials.token_uri)}


def _note(provider: str, credentials: Any) -> str:
    if provider == "salesforce" and not credentials.instance_url:
        return (
            "instance URL assumed from the login URL (no instance_url in the block); "
            "Salesforce's token answer decides it at run time"
        )
    return ""


# -- planning emulators: the provider's shapes, none of its data or credential checks -----------
class _PlanningSalesforce(SalesforceEmulator):
    """Issues a token for any well-formed grant and accepts any field the org may have."""

    def _token(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode("utf-8")).items()}
        if form.get("grant_type") in ("client_credentials", SALESFORCE_JWT_GRANT):
            return self._issue(request, USER_ID)
        return super()._token(request)

    def _check_write(
        self, sobject: str, fields: dict[str, Any], *, merged: dict[str, Any]
    ) -> httpx.Response | None:
        return None


class _PlanningHubSpot(HubSpotEmulator):
    """Accepts any property, stage or pipeline the portal may define; records referenced ids exist."""

    def _invalid(
        self, kind: str, properties: dict[str, str], *, creating: bool, record_id: str | None = None
    ) -> httpx.Response | None:
        return None

    def assume(self, kind: str, record_id: str, properties: dict[str, str]) -> None:
        """Pretend the portal holds this record (so associations and reads resolve)."""
        with self._lock:
            if record_id not in self.objects.get(kind, {}):
                self._store(kind, record_id, properties)


class _PlanningGoogleCalendar(GoogleCalendarEmulator):
    """Issues a token for any well-formed grant."""

    def _token(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode("utf-8")).items()}
        if form.get("grant_type") in ("refresh_token", GOOGLE_JWT_GRANT):
            return self._issue("dry-run@fulfill.local", "https://www.googleapis.com/auth/calendar.events")
        return super()._token(request)


def _planning_emulator(provider: str, credentials: Any, intent: ActionIntentV1) -> Emulator:
    params = intent.normalized_parameters()
    if provider == "salesforce":
        salesforce = _PlanningSalesforce(
            client_id=str(credentials.client_id or "dry-run"),
            instance_url=credentials.instance_url or None,
            external_id_field=credentials.external_id_field,
        )
        if intent.action_type == "crm.update_field":
            salesforce.insert(
                str(params["object"]),
                {str(params["field"]): params.get("previous_value")},
                record_id=str(params["record_id"]),
            )
        return salesforce
    if provider == "hubspot":
        token = credentials.private_app_token
        hubspot = _PlanningHubSpot(
            private_app_tokens=(token.get_secret_value(),) if token is not None else (),
        )
        if credentials.client_id and credentials.client_secret and credentials.refresh_token:
            hubspot.clients[str(credentials.client_id)] = credentials.client_secret.get_secret_value()
            hubspot.refresh_tokens[credentials.refresh_token.get_secret_value()] = str(credentials.client_id)
        hubspot.assume("companies", intent.account_id, {})
        related = params.get("related_to")
        if isinstance(related, dict) and related.get("object") in HUBSPOT_OBJECT_TYPES:
            hubspot.assume(HUBSPOT_OBJECT_TYPES[related["object"]], str(related.get("id")), {})
        if intent.action_type == "crm.update_field":
            before = params.get("previous_value")
            hubspot.assume(
                HUBSPOT_OBJECT_TYPES[str(params["object"])],
                str(params["record_id"]),
                {} if before is None else {str(params["field"]): _hubspot_text(before)},
            )
        return hubspot
    return _PlanningGoogleCalendar()


def _hubspot_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# -- internal actions: described, never performed ----------------------------------------------
def _plan_internal(
    intent: ActionIntentV1, params: dict[str, Any], config: Mapping[str, Any], generation: int
) -> list[PlannedRequest]:
    store = _describe_store(config.get("storage_block"))
    # The connector is used for its pure parts only (validate, steps, row values); it never gets an
    # engine, so it cannot touch the database.
    connector = InternalConnector(cast(Engine, None), store)
    try:
        connector.validate(intent.action_type, params)
    except ConnectorError as error:
        raise PlanFailed(error.code, error.detail) from None
    planned: list[PlannedRequest] = []
    prior: dict[str, ExternalRef] = {}
    for step in connector.steps(intent.action_type, params):
        call = _call(intent, params, step, generation, prior)
        common = {
            "action_intent_id": intent.action_intent_id,
            "tenant_id": intent.tenant_id,
            "action_type": intent.action_type,
            "step": step,
            "kind": "internal",
            "idempotency_key": call.idempotency_key,
        }
        if step == "store_brief":
            key = brief_object_key(call)
            data = str(params["content"]).encode("utf-8")
            content_type = str(params.get("content_type", "text/markdown"))
            planned.append(
                PlannedRequest(
                    **common,
                    system="object_storage",
                    method="PUT",
                    url=store.url(key),
                    headers={"Content-Type": content_type},
                    body={
                        "object_key": key,
                        "size_bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                    },
                    note=f"{store.kind} object storage; the key is derived from the idempotency key",
                )
            )
            prior[step] = ExternalRef(system="object_storage", object="brief", id=key, url=store.url(key))
            continue
        table = TABLES[step]
        row = connector._values(call) | {
            "tenant_id": intent.tenant_id,
            "account_id": intent.account_id,
            "action_intent_id": intent.action_intent_id,
            "idempotency_key": call.idempotency_key,
        }
        planned.append(
            PlannedRequest(
                **common,
                system="internal",
                method="INSERT",
                url=f"internal://{table.__tablename__}",
                body=redact(row),
                note="one row, unique on idempotency_key, committed with its ledger row",
            )
        )
    return planned


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
        lines.append(f"  {number}. [{request.kind}] {request.method} {request.url}")
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
