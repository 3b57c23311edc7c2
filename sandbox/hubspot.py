"""A small, faithful HubSpot emulator: the CRM v3 endpoints fulfill uses, OAuth, and HubSpot's strictness.

Emulated (paths, bodies and error JSON as HubSpot documents them; every rule and its doc reference is
listed in docs/emulators.md, "HubSpot"):

* ``POST /oauth/v1/token`` — form-encoded ``grant_type=refresh_token``; answers
  ``{"token_type": "bearer", "refresh_token", "access_token", "expires_in"}`` or 400
  ``{"status": "BAD_REFRESH_TOKEN", "message", "correlationId"}``.
* ``POST /crm/v3/objects/{type}`` — create with ``properties`` and ``associations``; 201. A property the
  portal does not define is 400 ``VALIDATION_ERROR`` (``PROPERTY_DOESNT_EXIST``), a read-only one 400
  (``READ_ONLY_VALUE``), a bad enumeration option 400 (``INVALID_OPTION``); a value already held by
  another live record in a unique property (``hasUniqueValue``) is 409 ``CONFLICT``. An association
  needs a known ``associationCategory`` and, for ``HUBSPOT_DEFINED``, a type id HubSpot defines from
  this object type to the target's (400 otherwise). A lead needs ``hs_lead_name`` and a contact.
* ``GET /crm/v3/objects/{type}`` — list (``limit``, ``after``, ``properties``, ``archived``).
* ``GET /crm/v3/objects/{type}/{id}`` — by record id, or by a unique property with ``?idProperty=``
  (400 ``VALIDATION_ERROR`` when the property is not unique); ``properties`` repeated or
  comma-separated selects properties (unknown names are left out); ``archived=true`` returns only
  archived records.
* ``PATCH /crm/v3/objects/{type}/{id}`` — update ``properties`` (same checks as a create); 200.
* ``DELETE /crm/v3/objects/{type}/{id}`` — archive; 204 (also for an already archived record).
* ``POST /crm/v3/objects/{type}/search`` — ``filterGroups`` (OR) of ``filters`` (AND) with ``EQ``,
  ``NEQ``, ``IN``, ``HAS_PROPERTY``, ``NOT_HAS_PROPERTY``; ``properties``, ``limit`` (≤ 200), ``after``.
  It reads an index that shows each write ``index_delay`` seconds after it happened.
* ``GET /crm/v3/properties/{type}`` and ``GET /crm/v3/properties/{type}/{name}`` — property
  definitions (``hasUniqueValue``, ``options``, …); 404 for an unknown property.
* ``GET /account-info/v3/details`` — ``companyCurrency`` and ``additionalCurrencies``.

Every ``/crm`` request needs ``Authorization: Bearer`` with a private-app token or a live OAuth
access token (401 ``INVALID_AUTHENTICATION`` / ``EXPIRED_AUTHENTICATION`` otherwise), and every
answer carries ``X-HubSpot-RateLimit-*`` headers. Object types listed in ``unreadable`` answer 403
``MISSING_SCOPES``. Error bodies follow ``{"status": "error", "message", "correlationId", "category"}``
(https://developers.hubspot.com/docs/api-reference/error-handling); a throttled answer is
:func:`rate_limit_fault` (https://developers.hubspot.com/docs/api/usage-details).

Seeded: company ``1001`` ("Acme Corp"), deal ``2001`` (dealstage ``presentationscheduled``,
associated to the company), contact ``3001`` and lead ``4001`` (of the contact). The portal's custom
properties are ``key_properties``: by default ``fulfill_intent_key`` on tasks (not unique: HubSpot
allows no unique property on tasks), deals and companies (unique).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Mapping
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
OBJECT_TYPES = ("companies", "deals", "contacts", "tasks", "leads")
#: Where HubSpot allows "require unique values" (custom objects too; tasks and other activities never).
#: https://developers.hubspot.com/docs/api-reference/crm-properties-v3/guide (unique identifier properties)
UNIQUE_ALLOWED = frozenset({"companies", "contacts", "deals", "tickets"})
DEFAULT_KEY_PROPERTIES: dict[str, dict[str, bool]] = {
    "tasks": {KEY_PROPERTY: False},
    "deals": {KEY_PROPERTY: True},
    "companies": {KEY_PROPERTY: True},
}
# HUBSPOT_DEFINED association type ids from a new record of one type to a record of another
# (https://developers.hubspot.com/docs/api-reference/crm-associations-v4/guide, association type ids).
ASSOCIATION_TYPES: dict[tuple[str, str], set[int]] = {
    ("tasks", "companies"): {192},
    ("tasks", "deals"): {216},
    ("tasks", "contacts"): {204},
    ("deals", "companies"): {5, 341},
    ("deals", "contacts"): {3},
    ("leads", "contacts"): {578},  # lead to primary contact (leads guide, "create leads")
}
ASSOCIATION_CATEGORIES = frozenset({"HUBSPOT_DEFINED", "USER_DEFINED", "INTEGRATOR_DEFINED"})
REQUIRED: dict[str, tuple[str, ...]] = {
    "tasks": ("hs_timestamp",),
    "deals": ("dealname",),
    "leads": ("hs_lead_name",),
}
DEAL_STAGES = (
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
)
# Every object's read-only properties (set by HubSpot itself).
READ_ONLY = ("hs_object_id", "hs_createdate", "hs_lastmodifieddate")
# The default properties of each object type: name -> (type, fieldType, options or None).
_TEXT = ("string", "text", None)
PROPERTIES: dict[str, dict[str, tuple[str, str, tuple[str, ...] | None]]] = {
    "companies": {
        "name": _TEXT,
        "domain": _TEXT,
        "industry": _TEXT,
        "phone": ("string", "phonenumber", None),
        "city": _TEXT,
        "description": ("string", "textarea", None),
        "numberofemployees": ("number", "number", None),
        "hubspot_owner_id": ("enumeration", "select", None),
    },
    "deals": {
        "dealname": _TEXT,
        "dealstage": ("enumeration", "radio", DEAL_STAGES),
        "pipeline": ("enumeration", "select", ("default",)),
        "closedate": ("datetime", "date", None),
        "amount": ("number", "number", None),
        "deal_currency_code": ("enumeration", "select", ()),  # the portal's currencies
        "description": ("string", "textarea", None),
        "hubspot_owner_id": ("enumeration", "select", None),
    },
    "contacts": {
        "email": _TEXT,
        "firstname": _TEXT,
        "lastname": _TEXT,
        "phone": ("string", "phonenumber", None),
        "jobtitle": _TEXT,
        "lifecyclestage": (
            "enumeration",
            "radio",
            ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer"),
        ),
    },
    "tasks": {
        "hs_task_subject": _TEXT,
        "hs_task_body": ("string", "html", None),
        "hs_timestamp": ("datetime", "date", None),
        "hs_task_priority": ("enumeration", "select", ("LOW", "MEDIUM", "HIGH", "NONE")),
        "hs_task_status": (
            "enumeration",
            "select",
            ("NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED"),
        ),
        "hs_task_type": ("enumeration", "select", ("TODO", "CALL", "EMAIL")),
        "hubspot_owner_id": ("enumeration", "select", None),
    },
    "leads": {
        "hs_lead_name": _TEXT,
        "hs_lead_type": ("enumeration", "select", ("NEW_BUSINESS", "UPSELL", "RE_ATTEMPTING")),
        "hs_lead_label": ("enumeration", "select", ("COLD", "WARM", "HOT")),
        "hs_pipeline": ("enumeration", "select", ("lead-pipeline-id",)),
        "hs_pipeline_stage": (
            "enumeration",
            "select",
            ("new-stage-id", "attempting-stage-id", "connected-stage-id", "qualified-stage-id"),
        ),
        "hubspot_owner_id": ("enumeration", "select", None),
    },
}
SEARCH_LIMIT_MAX = 200
SEARCH_OPERATORS = frozenset({"EQ", "NEQ", "IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY"})
DAILY_LIMIT = 250000
BURST_LIMIT = 100


def hubspot_error(status: int, message: str, category: str, **extra: Any) -> httpx.Response:
    """An error answer in HubSpot's documented JSON shape."""
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()), "category": category}
    body.update(extra)
    return json_response(status, body)


def property_errors(code: str, name: str, message: str) -> httpx.Response:
    """HubSpot's 400 for an invalid property value: ``VALIDATION_ERROR`` with ``errors[].code``."""
    return hubspot_error(
        400,
        f"Property values were not valid: {message}",
        "VALIDATION_ERROR",
        errors=[{"message": message, "code": code, "context": {"propertyName": [name]}}],
    )


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
        key_properties: The portal's custom properties: object type -> {name: hasUniqueValue}.
            ``hasUniqueValue`` is refused where HubSpot does not allow it (tasks).
        currencies: The portal's currencies, the company currency first.
        index_delay: Seconds before the search endpoint shows a write (HubSpot's index lags).
        unreadable: Object types the app may not read (403 ``MISSING_SCOPES``).
        clock: Seconds since the epoch (OAuth access-token expiry, the search index).
    """

    name = "hubspot"

    def __init__(
        self,
        *,
        private_app_tokens: tuple[str, ...] = (PRIVATE_APP_TOKEN,),
        key_properties: Mapping[str, Mapping[str, bool]] | None = None,
        currencies: tuple[str, ...] = ("USD", "EUR"),
        index_delay: float = 0.0,
        unreadable: frozenset[str] = frozenset(),
        clock: Any = time.time,
    ) -> None:
        custom = DEFAULT_KEY_PROPERTIES if key_properties is None else key_properties
        for kind, names in custom.items():
            if kind not in OBJECT_TYPES:
                raise ValueError(f"unknown object type {kind!r}")
            if any(names.values()) and kind not in UNIQUE_ALLOWED:
                raise ValueError(f"HubSpot allows no unique-value property on {kind}")
        if not currencies:
            raise ValueError("a portal has a company currency")
        self._private_app_tokens = set(private_app_tokens)
        self._custom = {kind: dict(names) for kind, names in custom.items()}
        self.currencies = tuple(currencies)
        self.index_delay = index_delay
        self.unreadable = frozenset(unreadable)
        self._clock = clock
        self.definitions: dict[str, dict[str, dict[str, Any]]] = self._definitions()
        self.objects: dict[str, dict[str, dict[str, Any]]] = {}
        self.associations: list[tuple[str, str, str, str, int]] = []
        # The search index: per (kind, id), the versions of a record and when each becomes visible.
        self.index: dict[tuple[str, str], list[tuple[float, dict[str, Any]]]] = {}
        self.access_tokens: dict[str, float] = {}
        self.refresh_tokens: dict[str, str] = {OAUTH_REFRESH_TOKEN: OAUTH_CLIENT_ID}
        self.clients: dict[str, str] = {OAUTH_CLIENT_ID: OAUTH_CLIENT_SECRET}
        self._ids = itertools.count(90001)
        self._requests_today = 0
        super().__init__()
        self._seed()

    def _definitions(self) -> dict[str, dict[str, dict[str, Any]]]:
        definitions: dict[str, dict[str, dict[str, Any]]] = {}
        for kind in OBJECT_TYPES:
            table: dict[str, dict[str, Any]] = {}
            for name, (type_, field_type, options) in PROPERTIES[kind].items():
                if name == "deal_currency_code":
                    options = self.currencies
                table[name] = _definition(kind, name, type_, field_type, options)
            for name in READ_ONLY:
                table[name] = _definition(kind, name, "string", "text", None, read_only=True)
            for name, unique in self._custom.get(kind, {}).items():
                table[name] = _definition(kind, name, "string", "text", None, unique=unique, custom=True)
            definitions[kind] = table
        return definitions

    def unique(self, kind: str) -> set[str]:
        """The properties of ``kind`` with ``hasUniqueValue``."""
        return {n for n, d in self.definitions.get(kind, {}).items() if d["hasUniqueValue"]}

    # -- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all records, tokens and faults, then re-seed (the portal's configuration stays)."""
        super().reset()
        with self._lock:
            self.objects.clear()
            self.associations.clear()
            self.index.clear()
            self.access_tokens.clear()
            self._ids = itertools.count(90001)
            self._requests_today = 0
            self._seed()

    def _seed(self) -> None:
        self.objects = {kind: {} for kind in OBJECT_TYPES}
        self._store("companies", "1001", {"name": "Acme Corp", "domain": "acme.example"})
        self._store("deals", "2001", {"dealname": "Acme renewal", "dealstage": "presentationscheduled"})
        self._store("contacts", "3001", {"email": "jordan@acme.example", "firstname": "Jordan"})
        self._store("leads", "4001", {"hs_lead_name": "Jordan at Acme", "hs_pipeline_stage": "new-stage-id"})
        self.associations.append(("deals", "2001", "companies", "1001", 5))
        self.associations.append(("leads", "4001", "contacts", "3001", 578))
        for kind, records in self.objects.items():  # seeds are indexed already
            for record_id in records:
                self.index[(kind, record_id)] = [(float("-inf"), _snapshot(records[record_id]))]

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

    def _indexed(self, kind: str, record: dict[str, Any]) -> None:
        """Queue a record's new version for the search index (visible after ``index_delay``)."""
        versions = self.index.setdefault((kind, record["id"]), [])
        versions.append((self._clock() + self.index_delay, _snapshot(record)))

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
        kind = r"(?P<kind>[a-z_0-9-]+)"
        self.route("POST", r"/oauth/v1/token", self._token)
        self.route("GET", r"/account-info/v3/details", self._account)
        self.route("GET", rf"/crm/v3/properties/{kind}", self._properties)
        self.route("GET", rf"/crm/v3/properties/{kind}/(?P<name>[^/]+)", self._property)
        self.route("POST", rf"/crm/v3/objects/{kind}/search", self._search)
        self.route("POST", rf"/crm/v3/objects/{kind}", self._create)
        self.route("GET", rf"/crm/v3/objects/{kind}", self._list)
        self.route("GET", rf"/crm/v3/objects/{kind}/(?P<ref>[^/]+)", self._read)
        self.route("PATCH", rf"/crm/v3/objects/{kind}/(?P<ref>[^/]+)", self._update)
        self.route("DELETE", rf"/crm/v3/objects/{kind}/(?P<ref>[^/]+)", self._archive)

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

    def _unauthorized(self, request: httpx.Request, kind: str | None = None) -> httpx.Response | None:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        if token not in self._private_app_tokens:
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
        if kind is not None and kind in self.unreadable:
            return hubspot_error(
                403,
                "This app hasn't been granted all required scopes to make this call.",
                "MISSING_SCOPES",
            )
        if kind is not None and kind not in self.objects:
            return hubspot_error(400, f"Unable to infer object type from: {kind}", "VALIDATION_ERROR")
        return None

    # -- account and property definitions -----------------------------------------------------
    def _account(self, request: httpx.Request) -> httpx.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        return json_response(
            200,
            {
                "portalId": 4471234,
                "accountType": "STANDARD",
                "timeZone": "Europe/Paris",
                "companyCurrency": self.currencies[0],
                "additionalCurrencies": list(self.currencies[1:]),
                "utcOffset": "+01:00",
                "utcOffsetMilliseconds": 3600000,
                "uiDomain": "app.hubspot.com",
                "dataHostingLocation": "na1",
            },
        )

    def _properties(self, request: httpx.Request, kind: str) -> httpx.Response:
        if (denied := self._unauthorized(request, kind)) is not None:
            return denied
        return json_response(200, {"results": list(self.definitions[kind].values())})

    def _property(self, request: httpx.Request, kind: str, name: str) -> httpx.Response:
        if (denied := self._unauthorized(request, kind)) is not None:
            return denied
        definition = self.definitions[kind].get(name)
        if definition is None:
            return hubspot_error(
                404, f"Unable to find property {name} for object type {kind}", "OBJECT_NOT_FOUND"
            )
        return json_response(200, definition)

    # -- records ------------------------------------------------------------------------------
    def _create(self, request: httpx.Request, kind: str) -> httpx.Response:
        if (denied := self._unauthorized(request, kind)) is not None:
            return denied
        body = request_json(request) or {}
        properties = {k: _as_string(v) for k, v in (body.get("properties") or {}).items()}
        invalid = self._invalid(kind, properties, creating=True)
        if invalid is not None:
            return invalid
        associations: list[tuple[str, str, int]] = []
        for item in body.get("associations") or []:
            to_id = str((item.get("to") or {}).get("id", ""))
            for kind_of in item.get("types") or []:
                category = kind_of.get("associationCategory")
                type_id = kind_of.get("associationTypeId")
                if category not in ASSOCIATION_CATEGORIES or not isinstance(type_id, int):
                    return hubspot_error(
                        400,
                        f"Invalid association category or type: {category} ({type_id})",
                        "VALIDATION_ERROR",
                    )
                allowed = {other: ids for (source, other), ids in ASSOCIATION_TYPES.items() if source == kind}
                target = (
                    next((k for k, ids in allowed.items() if type_id in ids), None)
                    if category == "HUBSPOT_DEFINED"
                    else None  # no user- or integrator-defined labels exist in this portal
                )
                if target is None or self._live(target, to_id) is None:
                    return hubspot_error(
                        400,
                        f"One or more associations are invalid: {to_id} ({category} {type_id})",
                        "VALIDATION_ERROR",
                    )
                associations.append((target, to_id, type_id))
        if kind == "leads" and not any(target == "contacts" for target, _, _ in associations):
            return hubspot_error(400, "A lead must be associated with a contact.", "VALIDATION_ERROR")
        record = self._store(kind, str(next(self._ids)), properties)
        for target, to_id, type_id in associations:
            self.associations.append((kind, record["id"], target, to_id, type_id))
        self._indexed(kind, record)
        return json_response(201, _public(record, None))

    def _list(self, request: httpx.Request, kind: str) -> httpx.Response:
        if (denied := self._unauthorized(request, kind)) is not None:
            return denied
        params = request.url.params
        try:
            limit = int(params.get("limit") or 10)
            after = int(params.get("after") or 0)
        except ValueError:
            return hubspot_error(400, "limit and after must be integers", "VALIDATION_ERROR")
        archived = params.get("archived", "false").lower() == "true"
        names = self._wanted(request, kind)
        records = sorted(
            (r for r in self.objects[kind].values() if r["archived"] == archived),
            key=lambda r: int(r["id"]),
        )
        page = records[after : after + limit]
        answer: dict[str, Any] = {"results": [_public(r, names) for r in page]}
        if after + limit < len(records):
            answer["paging"] = {"next": {"after": str(after + limit)}}
        return json_response(200, answer)

    def _read(self, request: httpx.Request, kind: str, ref: str) -> httpx.Response:
        if (denied := self._unauthorized(request, kind)) is not None:
            return denied
        refused = self._refused_id_property(request, kind)
        if refused is not None:
            return refused
        archived = request.url.params.get("archived", "false").lower() == "true"
        record = self._find(request, kind, ref, archived=archived)
        if record is None:
            return _object_not_found(ref)
        return json_response(200, _public(record, self._wanted(request, kind)))

    def _update(self, request: httpx.Request, kind: str, ref: str) -> httpx.Response:
        if (denied := self._unauthorized(request, kind)) is not None:
            return denied
        refused = self._refused_id_property(request, kind)
        if refused is not None:
            return refused
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
        self._indexed(kind, record)
        return json_response(200, _public(record, None))

    def _archive(self, request: httpx.Request, kind: str, ref: str) -> httpx.Response:
        if (denied := self._unauthorized(request, kind)) is not None:
            return denied
        record = self.objects[kind].get(ref)
        if record is None:
            return _object_not_found(ref)
        if not record["archived"]:
            record["archived"] = True
            record["archivedAt"] = _now()
            self._indexed(kind, record)
        return json_response(204)

    def _search(self, request: httpx.Request, kind: str) -> httpx.Response:
        if (denied := self._unauthorized(request, kind)) is not None:
            return denied
        body = request_json(request) or {}
        known = self.definitions[kind]
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or not 0 < limit <= SEARCH_LIMIT_MAX:
            return hubspot_error(400, f"limit must be between 1 and {SEARCH_LIMIT_MAX}", "VALIDATION_ERROR")
        groups = body.get("filterGroups") or []
        for group in groups:
            for item in group.get("filters") or []:
                name, operator = item.get("propertyName"), item.get("operator")
                if name not in known:
                    return property_errors(
                        "PROPERTY_DOESNT_EXIST", str(name), f'Property "{name}" does not exist'
                    )
                if operator not in SEARCH_OPERATORS:
                    return hubspot_error(400, f"Unsupported operator {operator}", "VALIDATION_ERROR")
        now = self._clock()
        hits: list[dict[str, Any]] = []
        for (indexed_kind, _), versions in sorted(self.index.items(), key=lambda kv: int(kv[0][1])):
            if indexed_kind != kind:
                continue
            visible = [snapshot for at, snapshot in versions if at <= now]
            if not visible or visible[-1]["archived"]:
                continue
            snapshot = visible[-1]
            if not groups or any(_matches(snapshot["properties"], g.get("filters") or []) for g in groups):
                hits.append(snapshot)
        after = int(body.get("after") or 0)
        names = [n for n in body.get("properties") or [] if n in known]
        default = ["hs_object_id", "hs_createdate", "hs_lastmodifieddate"]
        page = hits[after : after + limit]
        answer: dict[str, Any] = {
            "total": len(hits),
            "results": [_public(r, names or default) for r in page],
        }
        if after + limit < len(hits):
            answer["paging"] = {"next": {"after": str(after + limit)}}
        return json_response(200, answer)

    # -- helpers ----------------------------------------------------------------------------
    def _live(self, kind: str, record_id: str) -> dict[str, Any] | None:
        record = self.objects.get(kind, {}).get(record_id)
        return record if record is not None and not record["archived"] else None

    def _wanted(self, request: httpx.Request, kind: str) -> list[str] | None:
        """The ``properties`` asked for (repeated and/or comma-separated); unknown names are left out."""
        asked = [n for value in request.url.params.get_list("properties") for n in value.split(",") if n]
        if not asked:
            return None
        return [n for n in asked if n in self.definitions[kind]]

    def _refused_id_property(self, request: httpx.Request, kind: str) -> httpx.Response | None:
        id_property = request.url.params.get("idProperty")
        if not id_property or id_property == "hs_object_id":
            return None
        if id_property not in self.definitions[kind]:
            return property_errors(
                "PROPERTY_DOESNT_EXIST", id_property, f'Property "{id_property}" does not exist'
            )
        if id_property not in self.unique(kind):
            return hubspot_error(
                400,
                f"{id_property} is not a unique identifier property for {kind}; idProperty must name "
                "a property with unique values",
                "VALIDATION_ERROR",
            )
        return None

    def _find(
        self, request: httpx.Request, kind: str, ref: str, *, archived: bool = False
    ) -> dict[str, Any] | None:
        id_property = request.url.params.get("idProperty")
        for record in self.objects.get(kind, {}).values():
            if record["archived"] != archived:
                continue
            if not id_property or id_property == "hs_object_id":
                if record["id"] == ref:
                    return record
            elif record["properties"].get(id_property) == ref:
                return record
        return None

    def _invalid(
        self, kind: str, properties: dict[str, str], *, creating: bool, record_id: str | None = None
    ) -> httpx.Response | None:
        known = self.definitions[kind]
        for name in properties:
            definition = known.get(name)
            if definition is None:
                return property_errors("PROPERTY_DOESNT_EXIST", name, f'Property "{name}" does not exist')
            if definition["modificationMetadata"]["readOnlyValue"]:
                return property_errors("READ_ONLY_VALUE", name, f'Property "{name}" is read-only')
        if creating:
            for name in REQUIRED.get(kind, ()):
                if not properties.get(name):
                    return property_errors("REQUIRED_PROPERTY", name, f"{name} is required")
        for name, value in properties.items():
            options = [o["value"] for o in known[name]["options"]]
            if known[name]["type"] == "enumeration" and options and value and value not in options:
                return property_errors(
                    "INVALID_OPTION", name, f"{value!r} was not one of the allowed options for {name}"
                )
            if name in self.unique(kind) and value:
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


def _definition(
    kind: str,
    name: str,
    type_: str,
    field_type: str,
    options: tuple[str, ...] | None,
    *,
    unique: bool = False,
    custom: bool = False,
    read_only: bool = False,
) -> dict[str, Any]:
    """A property definition as ``GET /crm/v3/properties/{type}/{name}`` returns it."""
    return {
        "name": name,
        "label": name.replace("_", " ").strip().capitalize(),
        "type": type_,
        "fieldType": field_type,
        "description": "",
        "groupName": "fulfill" if custom else f"{kind[:-1]}information",
        "options": [
            {"label": o, "value": o, "displayOrder": i, "hidden": False} for i, o in enumerate(options or ())
        ],
        "displayOrder": -1,
        "calculated": False,
        "externalOptions": False,
        "hasUniqueValue": unique,
        "hidden": False,
        "hubspotDefined": not custom,
        "archived": False,
        "formField": not read_only,
        "createdAt": "2024-01-01T00:00:00Z",
        "updatedAt": "2024-01-01T00:00:00Z",
        "modificationMetadata": {
            "archivable": custom,
            "readOnlyDefinition": not custom,
            "readOnlyValue": read_only,
        },
    }


def _matches(properties: dict[str, Any], filters: list[dict[str, Any]]) -> bool:
    """Whether one record's properties satisfy every filter of a group (HubSpot ANDs them)."""
    for item in filters:
        value = properties.get(str(item.get("propertyName")))
        operator = item.get("operator")
        if operator == "EQ" and value != _as_string(item.get("value")):
            return False
        if operator == "NEQ" and value == _as_string(item.get("value")):
            return False
        if operator == "IN" and value not in [_as_string(v) for v in item.get("values") or []]:
            return False
        if operator == "HAS_PROPERTY" and not value:
            return False
        if operator == "NOT_HAS_PROPERTY" and value:
            return False
    return True


def _snapshot(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "properties": dict(record["properties"])}


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
        properties = {n: properties.get(n) for n in dict.fromkeys((*base, *names))}
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
