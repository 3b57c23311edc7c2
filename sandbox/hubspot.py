"""A small, faithful HubSpot emulator: the CRM v3 object endpoints fulfill uses, and OAuth.

Emulated (paths, bodies and error JSON as HubSpot documents them):

* ``POST /oauth/v1/token`` — form-encoded ``grant_type=refresh_token``; answers
  ``{"token_type": "bearer", "refresh_token", "access_token", "expires_in"}`` or 400
  ``{"status": "BAD_REFRESH_TOKEN", "message", "correlationId"}``.
* ``POST /crm/v3/objects/{type}`` — create with ``properties`` and ``associations``; 201. A value
  already held by another live record in a unique property (``hasUniqueValue``) is refused with 409.
* ``GET /crm/v3/objects/{type}/{id}`` — by record id, or by a unique property with ``?idProperty=``;
  ``?properties=a,b`` selects properties; archived records are not returned (404 ``OBJECT_NOT_FOUND``).
* ``PATCH /crm/v3/objects/{type}/{id}`` — update ``properties``; 200.
* ``DELETE /crm/v3/objects/{type}/{id}`` — archive; 204 (also for an already archived record).

Every ``/crm`` request needs ``Authorization: Bearer`` with a private-app token or a live OAuth
access token (401 ``INVALID_AUTHENTICATION`` / ``EXPIRED_AUTHENTICATION`` otherwise), and every
answer carries ``X-HubSpot-RateLimit-*`` headers. Error bodies follow
``{"status": "error", "message", "correlationId", "category"}``
(https://developers.hubspot.com/docs/api-reference/error-handling); a throttled answer is
:func:`rate_limit_fault` (https://developers.hubspot.com/docs/api/usage-details).

Seeded: company ``1001`` ("Acme Corp"), deal ``2001`` (dealstage ``presentationscheduled``,
associated to the company) and contact ``3001``. ``fulfill_intent_key`` is unique on tasks, deals
and companies.
"""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx

from sandbox.base import Emulator, Fault, json_response, request_json

PRIVATE_APP_TOKEN = "pat-na1-emulator-0000"
OAUTH_CLIENT_ID = "emulator-client-id"
OAUTH_CLIENT_SECRET = "emulator-client-secret"
OAUTH_REFRESH_TOKEN = "emulator-refresh-token"
ACCESS_TOKEN_LIFETIME = 1800
KEY_PROPERTY = "fulfill_intent_key"
OBJECT_TYPES = ("companies", "deals", "contacts", "tasks")
# Association type ids the emulator accepts from a new record of one type to a record of another.
ASSOCIATION_TYPES: dict[tuple[str, str], set[int]] = {
    ("tasks", "companies"): {192},
    ("tasks", "deals"): {216},
    ("tasks", "contacts"): {204},
    ("deals", "companies"): {5, 341},
    ("deals", "contacts"): {3},
}
REQUIRED: dict[str, tuple[str, ...]] = {"tasks": ("hs_timestamp",), "deals": ("dealname",)}
ENUMERATIONS: dict[str, dict[str, set[str]]] = {
    "tasks": {
        "hs_task_priority": {"LOW", "MEDIUM", "HIGH", "NONE"},
        "hs_task_status": {"NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED"},
    },
    "deals": {
        "dealstage": {
            "appointmentscheduled",
            "qualifiedtobuy",
            "presentationscheduled",
            "decisionmakerboughtin",
            "contractsent",
            "closedwon",
            "closedlost",
        },
        "pipeline": {"default"},
    },
}
DAILY_LIMIT = 250000
BURST_LIMIT = 100


def hubspot_error(status: int, message: str, category: str, **extra: Any) -> httpx.Response:
    """An error answer in HubSpot's documented JSON shape."""
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()), "category": category}
    body.update(extra)
    return json_response(status, body)


def rate_limit_fault(policy: str = "TEN_SECONDLY_ROLLING", *, retry_after: int = 1, times: int = 1) -> Fault:
    """A 429 as HubSpot sends it when a limit is hit (``policy`` ``DAILY`` or the burst policy)."""
    which = "daily" if policy == "DAILY" else "ten_secondly_rolling"
    return Fault(
        kind="status",
        path=r"^/crm/",
        status=429,
        times=times,
        body={
            "status": "error",
            "message": f"You have reached your {which} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": policy,
            "requestId": str(uuid.uuid4()),
        },
        headers={
            "Retry-After": str(retry_after),
            "X-HubSpot-RateLimit-Daily": str(DAILY_LIMIT),
            "X-HubSpot-RateLimit-Daily-Remaining": "0" if policy == "DAILY" else str(DAILY_LIMIT - 1),
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            "X-HubSpot-RateLimit-Max": str(BURST_LIMIT),
            "X-HubSpot-RateLimit-Remaining": "0",
        },
    )


class HubSpotEmulator(Emulator):
    """In-memory HubSpot portal.

    Args:
        private_app_tokens: Accepted private-app access tokens.
        unique_properties: Per object type, the properties with ``hasUniqueValue: true``.
        clock: Seconds since the epoch (for OAuth access-token expiry).
    """

    name = "hubspot"

    def __init__(
        self,
        *,
        private_app_tokens: tuple[str, ...] = (PRIVATE_APP_TOKEN,),
        unique_properties: dict[str, set[str]] | None = None,
        clock: Any = time.time,
    ) -> None:
        self._private_app_tokens = set(private_app_tokens)
        self._unique = unique_properties or {kind: {KEY_PROPERTY} for kind in ("tasks", "deals", "companies")}
        self._clock = clock
        self.objects: dict[str, dict[str, dict[str, Any]]] = {}
        self.associations: list[tuple[str, str, str, str, int]] = []
        self.access_tokens: dict[str, float] = {}
        self.refresh_tokens: dict[str, str] = {OAUTH_REFRESH_TOKEN: OAUTH_CLIENT_ID}
        self.clients: dict[str, str] = {OAUTH_CLIENT_ID: OAUTH_CLIENT_SECRET}
        self._ids = itertools.count(90001)
        self._requests_today = 0
        super().__init__()
        self._seed()

    # -- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all records, tokens and faults, then re-seed."""
        super().reset()
        with self._lock:
            self.objects.clear()
            self.associations.clear()
            self.access_tokens.clear()
            self._ids = itertools.count(90001)
            self._requests_today = 0
            self._seed()

    def _seed(self) -> None:
        self.objects = {kind: {} for kind in OBJECT_TYPES}
        self._store("companies", "1001", {"name": "Acme Corp", "domain": "acme.example"})
        self._store("deals", "2001", {"dealname": "Acme renewal", "dealstage": "presentationscheduled"})
        self._store("contacts", "3001", {"email": "jordan@acme.example", "firstname": "Jordan"})
        self.associations.append(("deals", "2001", "companies", "1001", 5))

    def _store(self, kind: str, record_id: str, properties: dict[str, str]) -> dict[str, Any]:
        now = _now()
        record = {
            "id": record_id,
            "properties": {
                **properties,
                "hs_object_id": record_id,
                "hs_createdate": now,
                "hs_lastmodifieddate": now,
            },
            "createdAt": now,
            "updatedAt": now,
            "archived": False,
        }
        self.objects[kind][record_id] = record
        return record

    def live(self, kind: str) -> tuple[str, ...]:
        """Sorted ids of the live (not archived) records of ``kind``."""
        with self._lock:
            return tuple(sorted(i for i, r in self.objects[kind].items() if not r["archived"]))

    def record(self, kind: str, record_id: str) -> dict[str, Any] | None:
        """One record (live or archived), or ``None``."""
        with self._lock:
            return self.objects.get(kind, {}).get(record_id)

    def property_value(self, kind: str, record_id: str, name: str) -> str | None:
        """A property's stored value, or ``None``."""
        record = self.record(kind, record_id)
        return None if record is None else record["properties"].get(name)

    def associated(self, kind: str, record_id: str) -> list[tuple[str, str, int]]:
        """``(to_type, to_id, association_type_id)`` of the associations from a record."""
        with self._lock:
            return [(t, i, a) for f, fi, t, i, a in self.associations if f == kind and fi == record_id]

    def expire_access_tokens(self) -> None:
        """Make every issued OAuth access token expired (the next API call answers 401)."""
        with self._lock:
            for token in self.access_tokens:
                self.access_tokens[token] = 0.0

    # -- routes -----------------------------------------------------------------------------
    def register_routes(self) -> None:
        """The emulated HubSpot endpoints."""
        self.route("POST", r"/oauth/v1/token", self._token)
        self.route("POST", r"/crm/v3/objects/(?P<kind>[a-z_]+)", self._create)
        self.route("GET", r"/crm/v3/objects/(?P<kind>[a-z_]+)/(?P<ref>[^/]+)", self._read)
        self.route("PATCH", r"/crm/v3/objects/(?P<kind>[a-z_]+)/(?P<ref>[^/]+)", self._update)
        self.route("DELETE", r"/crm/v3/objects/(?P<kind>[a-z_]+)/(?P<ref>[^/]+)", self._archive)

    def not_found(self, request: httpx.Request) -> httpx.Response:
        """HubSpot's answer for an unknown path."""
        return hubspot_error(404, "Not Found", "OBJECT_NOT_FOUND")

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request and add HubSpot's rate-limit headers to CRM answers."""
        response = super().handle(request)
        if request.url.path.startswith("/crm/") and "X-HubSpot-RateLimit-Max" not in response.headers:
            with self._lock:
                self._requests_today += 1
                used = self._requests_today
            response.headers.update(
                {
                    "X-HubSpot-RateLimit-Daily": str(DAILY_LIMIT),
                    "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, DAILY_LIMIT - used)),
                    "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                    "X-HubSpot-RateLimit-Max": str(BURST_LIMIT),
                    "X-HubSpot-RateLimit-Remaining": str(max(0, BURST_LIMIT - (used % BURST_LIMIT))),
                }
            )
        return response

    def _token(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode("utf-8")).items()}
        correlation = str(uuid.uuid4())
        if form.get("grant_type") != "refresh_token":
            return json_response(
                400,
                {
                    "status": "BAD_GRANT_TYPE",
                    "message": "unsupported grant_type",
                    "correlationId": correlation,
                },
            )
        client_id = form.get("client_id", "")
        if self.clients.get(client_id) != form.get("client_secret"):
            return json_response(
                400,
                {
                    "status": "BAD_CLIENT_ID",
                    "message": "missing or unknown client id",
                    "correlationId": correlation,
                },
            )
        if self.refresh_tokens.get(form.get("refresh_token", "")) != client_id:
            return json_response(
                400,
                {
                    "status": "BAD_REFRESH_TOKEN",
                    "message": "missing or invalid refresh token",
                    "correlationId": correlation,
                },
            )
        access = f"emu-oauth-{uuid.uuid4().hex}"
        self.access_tokens[access] = self._clock() + ACCESS_TOKEN_LIFETIME
        return json_response(
            200,
            {
                "token_type": "bearer",
                "refresh_token": form["refresh_token"],
                "access_token": access,
                "expires_in": ACCESS_TOKEN_LIFETIME,
            },
        )

    def _unauthorized(self, request: httpx.Request) -> httpx.Response | None:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        if token in self._private_app_tokens:
            return None
        expiry = self.access_tokens.get(token)
        if expiry is None:
            return hubspot_error(
                401,
                "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
                "INVALID_AUTHENTICATION",
            )
        if expiry <= self._clock():
            return hubspot_error(
                401, "The OAuth token used to make this call expired.", "EXPIRED_AUTHENTICATION"
            )
        return None

    def _create(self, request: httpx.Request, kind: str) -> httpx.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if kind not in self.objects:
            return hubspot_error(400, f"Unable to infer object type from: {kind}", "VALIDATION_ERROR")
        body = request_json(request) or {}
        properties = {k: _as_string(v) for k, v in (body.get("properties") or {}).items()}
        invalid = self._invalid(kind, properties, creating=True)
        if invalid is not None:
            return invalid
        associations: list[tuple[str, str, int]] = []
        for item in body.get("associations") or []:
            to_id = str((item.get("to") or {}).get("id", ""))
            to_kind = next((k for k in OBJECT_TYPES if self._live(k, to_id) is not None), None)
            for kind_of in item.get("types") or []:
                type_id = int(kind_of.get("associationTypeId", -1))
                allowed = {other: ids for (source, other), ids in ASSOCIATION_TYPES.items() if source == kind}
                target = next((k for k, ids in allowed.items() if type_id in ids), None)
                if target is None or to_kind is None or self._live(target, to_id) is None:
                    return hubspot_error(
                        400,
                        f"One or more associations are invalid: {to_id} ({type_id})",
                        "VALIDATION_ERROR",
                    )
                associations.append((target, to_id, type_id))
        record = self._store(kind, str(next(self._ids)), properties)
        for target, to_id, type_id in associations:
            self.associations.append((kind, record["id"], target, to_id, type_id))
        return json_response(201, _public(record, None))

    def _read(self, request: httpx.Request, kind: str, ref: str) -> httpx.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        record = self._find(request, kind, ref)
        if record is None:
            return _object_not_found(ref)
        wanted = request.url.params.get("properties")
        names = [n for n in wanted.split(",") if n] if wanted else None
        return json_response(200, _public(record, names))

    def _update(self, request: httpx.Request, kind: str, ref: str) -> httpx.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        record = self._find(request, kind, ref)
        if record is None:
            return _object_not_found(ref)
        body = request_json(request) or {}
        properties = {k: _as_string(v) for k, v in (body.get("properties") or {}).items()}
        invalid = self._invalid(kind, properties, creating=False, record_id=record["id"])
        if invalid is not None:
            return invalid
        record["properties"].update(properties)
        record["updatedAt"] = record["properties"]["hs_lastmodifieddate"] = _now()
        return json_response(200, _public(record, None))

    def _archive(self, request: httpx.Request, kind: str, ref: str) -> httpx.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        record = self.objects.get(kind, {}).get(ref)
        if record is None:
            return _object_not_found(ref)
        if not record["archived"]:
            record["archived"] = True
            record["archivedAt"] = _now()
        return json_response(204)

    # -- helpers ----------------------------------------------------------------------------
    def _live(self, kind: str, record_id: str) -> dict[str, Any] | None:
        record = self.objects.get(kind, {}).get(record_id)
        return record if record is not None and not record["archived"] else None

    def _find(self, request: httpx.Request, kind: str, ref: str) -> dict[str, Any] | None:
        id_property = request.url.params.get("idProperty")
        if not id_property or id_property == "hs_object_id":
            return self._live(kind, ref)
        for record in self.objects.get(kind, {}).values():
            if not record["archived"] and record["properties"].get(id_property) == ref:
                return record
        return None

    def _invalid(
        self, kind: str, properties: dict[str, str], *, creating: bool, record_id: str | None = None
    ) -> httpx.Response | None:
        if creating:
            for name in REQUIRED.get(kind, ()):
                if not properties.get(name):
                    return hubspot_error(
                        400,
                        f"Property values were not valid: {name} is required",
                        "VALIDATION_ERROR",
                        errors=[{"message": f"{name} is required", "context": {"propertyName": [name]}}],
                    )
        for name, value in properties.items():
            options = ENUMERATIONS.get(kind, {}).get(name)
            if options is not None and value not in options:
                return hubspot_error(
                    400,
                    f"Property values were not valid: {value!r} was not one of the allowed options",
                    "VALIDATION_ERROR",
                    errors=[{"message": "INVALID_OPTION", "context": {"propertyName": [name]}}],
                )
            if name in self._unique.get(kind, set()) and value:
                holder = next(
                    (
                        other["id"]
                        for other in self.objects[kind].values()
                        if other["id"] != record_id
                        and not other["archived"]
                        and other["properties"].get(name) == value
                    ),
                    None,
                )
                if holder is not None:
                    message = f"A {kind[:-1]} with {name} {value} already exists. Existing ID: {holder}"
                    return hubspot_error(409, message, "CONFLICT")
        return None


def _object_not_found(ref: str) -> httpx.Response:
    return hubspot_error(
        404,
        "Object not found.  objectId are usually numeric.",
        "OBJECT_NOT_FOUND",
        context={"id": [ref]},
    )


def _public(record: dict[str, Any], names: list[str] | None) -> dict[str, Any]:
    base = ("hs_object_id", "hs_createdate", "hs_lastmodifieddate")
    properties = record["properties"]
    if names is not None:
        properties = {n: properties.get(n) for n in (*base, *names)}
    public = {k: v for k, v in record.items() if k != "properties"}
    public["properties"] = dict(properties)
    return public


def _as_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
