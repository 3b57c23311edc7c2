"""A small, faithful Salesforce REST emulator, as strict as Salesforce for what the connector relies on.

Each rule follows Salesforce's documentation (``docs/emulators.md`` lists them with their references):

* ``POST /services/oauth2/token`` — ``grant_type=client_credentials`` (``client_id`` + ``client_secret``
  in the form or as HTTP Basic; refused with ``invalid_grant`` "request not supported on this domain" on
  ``login.salesforce.com`` / ``test.salesforce.com``: the flow needs My Domain) and
  ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` with an RS256 ``assertion`` whose ``iss`` is
  the consumer key, ``sub`` a username, ``aud`` the login host and ``exp`` in the future (the signature is
  checked only when a public key was registered). Answers ``{"access_token", "instance_url", "id",
  "token_type": "Bearer", "issued_at", "signature"}`` or ``{"error", "error_description"}`` with 400
  (https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm).
* ``PATCH /services/data/vXX.X/sobjects/{Object}/{ExternalIdField}/{value}`` — upsert: 201
  ``{"id", "success": true, "errors": [], "created": true}`` when nothing matches, 200 with
  ``"created": false`` after updating the one match, 300 with the matching record URLs when several match;
  the body must not carry ``Id`` or the external id field
  (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_upsert.htm).
* ``GET`` on the same path — the matching record (``?fields=`` honoured); 404 ``NOT_FOUND`` otherwise.
* ``POST /services/data/vXX.X/sobjects/{Object}/`` — create (201 ``{"id", "success", "errors"}``).
* ``GET|PATCH|DELETE /services/data/vXX.X/sobjects/{Object}/{id}`` — read (``?fields=a,b``), update
  (204) and delete (204). A deleted record reads as 404 ``NOT_FOUND``; patching or deleting it again
  answers 404 ``ENTITY_IS_DELETED``. Deleting a record also deletes the Tasks whose ``WhatId`` is it.
* ``GET /services/data/vXX.X/sobjects/{Object}/describe`` — the object's describe: ``keyPrefix``,
  ``createable``/``updateable`` and ``fields`` with ``name``, ``type``, ``externalId``, ``unique``,
  ``picklistValues``, ``restrictedPicklist``, ``referenceTo``
  (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_sobject_describe.htm).
* ``GET /services/data/vXX.X/query/?q=`` — a SOQL subset: ``SELECT f, … FROM Object [WHERE f = v [AND
  …]] [LIMIT n]`` over the records, ``Organization`` and, in a multi-currency org only, ``CurrencyType``
  (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_query.htm).
* Ids are 15 characters (case-sensitive) or 18 (the 15 plus a 3-character checksum of their upper-case
  letters); both forms name the same record, answers carry the 18-character form. Key prefixes: 001
  Account, 003 Contact, 006 Opportunity, 00Q Lead, 00T Task.
* Writes are checked as Salesforce checks them: unknown fields (``INVALID_FIELD``), system fields
  (``INVALID_FIELD_FOR_INSERT_UPDATE``), required fields (``REQUIRED_FIELD_MISSING``), references
  (``MALFORMED_ID``, ``FIELD_INTEGRITY_EXCEPTION`` for an id of the wrong object, ``INVALID_CROSS_REFERENCE_KEY``
  for one that does not exist), a Task whose ``WhoId`` is a Lead carries no ``WhatId``
  (``FIELD_INTEGRITY_EXCEPTION``), restricted picklists such as ``StageName``
  (``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST``), ``CurrencyIsoCode`` only in a multi-currency org and
  only an active currency, unique External ID values (``DUPLICATE_VALUE``) and configured validation
  rules (``FIELD_CUSTOM_VALIDATION_EXCEPTION``).
* Errors are JSON arrays ``[{"message", "errorCode", "fields"}]``; a bad token is 401 ``INVALID_SESSION_ID``
  (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm).
* Every REST answer carries ``Sforce-Limit-Info: api-usage=used/limit``; past the limit the API answers
  403 ``REQUEST_LIMIT_EXCEEDED``.

Seeded (valid 18-character ids): the Account :data:`SEED_ACCOUNT_ID`, its Opportunity
:data:`SEED_OPPORTUNITY_ID` (StageName ``Proposal/Price Quote``), the Contact :data:`SEED_CONTACT_ID` and the
Lead :data:`SEED_LEAD_ID`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import itertools
import json
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sandbox.base import Emulator, json_response, request_json

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_EXTERNAL_ID_FIELD = "Fulfill_Intent_Key__c"
ORG_ID = "00DHs0000000001EAA"
USER_ID = "005Hs0000000001AAA"

KEY_PREFIXES = {"Account": "001", "Contact": "003", "Opportunity": "006", "Lead": "00Q", "Task": "00T"}
OBJECTS_BY_PREFIX = {prefix: name for name, prefix in KEY_PREFIXES.items()}
_CHECKSUM_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID15 = re.compile(r"^[A-Za-z0-9]{15}$")


def id18(id15: str) -> str:
    """The 18-character form of a 15-character Salesforce id: the id plus its case checksum.

    Each 5-character chunk gives one suffix character: bit ``i`` is set when character ``i`` of the chunk
    is an upper-case letter, and the 5-bit number indexes ``A``–``Z0``–``5``
    (https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/field_types.htm#i1435616).
    """
    suffix = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, char in enumerate(id15[start : start + 5]) if "A" <= char <= "Z")
        suffix += _CHECKSUM_CHARS[bits]
    return id15 + suffix


def canonical_id(value: str) -> str | None:
    """The 18-character form of a well-formed 15- or 18-character id, else ``None`` (malformed)."""
    if len(value) == 18 and _ID15.fullmatch(value[:15]) and id18(value[:15]) == value:
        return value
    if _ID15.fullmatch(value):
        return id18(value)
    return None


SEED_ACCOUNT_ID = id18("001Hs00002abcDE")
SEED_OPPORTUNITY_ID = id18("006Hs00001xyzAB")
SEED_CONTACT_ID = id18("003Hs00003pqrST")
SEED_LEAD_ID = id18("00QHs00004lmnUV")

_SYSTEM_FIELDS = {"Id", "IsDeleted", "CreatedDate", "CreatedById", "LastModifiedDate", "SystemModstamp"}
# The writable fields each emulated object knows (plus the external id field and CurrencyIsoCode).
FIELDS: dict[str, set[str]] = {
    "Account": {"Name", "Type", "Industry", "Phone", "Website", "Description", "OwnerId", "AnnualRevenue"},
    "Contact": {"FirstName", "LastName", "Email", "Phone", "Title", "AccountId", "Description", "OwnerId"},
    "Lead": {"FirstName", "LastName", "Company", "Email", "Status", "Rating", "Description", "OwnerId"},
    "Opportunity": {
        "Name",
        "StageName",
        "CloseDate",
        "Amount",
        "AccountId",
        "Probability",
        "NextStep",
        "Description",
        "OwnerId",
        "Type",
        "LeadSource",
    },
    "Task": {
        "Subject",
        "ActivityDate",
        "Description",
        "Priority",
        "Status",
        "WhatId",
        "WhoId",
        "OwnerId",
        "Type",
    },
}
# Field types as describe reports them (everything else is "string").
FIELD_TYPES: dict[str, str] = {
    "StageName": "picklist",
    "Priority": "picklist",
    "Status": "picklist",
    "CurrencyIsoCode": "picklist",
    "CloseDate": "date",
    "ActivityDate": "date",
    "Amount": "currency",
    "AnnualRevenue": "currency",
    "Probability": "percent",
    "Description": "textarea",
    "Email": "email",
    "Phone": "phone",
    "Website": "url",
    "WhatId": "reference",
    "WhoId": "reference",
    "AccountId": "reference",
    "OwnerId": "reference",
}
# Polymorphic and plain lookups: the objects each reference field may point at.
REFERENCES: dict[tuple[str, str], tuple[str, ...]] = {
    ("Task", "WhatId"): ("Account", "Opportunity"),
    ("Task", "WhoId"): ("Contact", "Lead"),
    ("Opportunity", "AccountId"): ("Account",),
    ("Contact", "AccountId"): ("Account",),
}
FIELD_LABELS = {"WhatId": "Related To ID", "WhoId": "Name ID", "AccountId": "Account ID"}
#: Opportunity stages of a new org (OpportunityStage), Task priorities and statuses: restricted picklists.
DEFAULT_STAGES = (
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Id. Decision Makers",
    "Perception Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
)
TASK_PRIORITIES = ("High", "Normal", "Low")
TASK_STATUSES = ("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred")
REQUIRED = {
    "Opportunity": ("Name", "StageName", "CloseDate"),
    "Account": ("Name",),
    "Contact": ("LastName",),
    "Lead": ("LastName", "Company"),
}
DEFAULTS: dict[str, dict[str, Any]] = {"Task": {"Status": "Not Started", "Priority": "Normal"}}
LOGIN_AUDIENCES = {"https://login.salesforce.com", "https://test.salesforce.com"}
GENERIC_LOGIN_HOSTS = {"login.salesforce.com", "test.salesforce.com"}
_SOQL = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<sobject>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_CONDITION = re.compile(
    r"^\s*(?P<field>\w+)\s*=\s*(?P<value>'(?:[^'\\]|\\.)*'|true|false|null|-?\d+(?:\.\d+)?)\s*$",
    re.IGNORECASE,
)


def sf_error(status: int, error_code: str, message: str, fields: list[str] | None = None) -> httpx.Response:
    """A REST API error response in Salesforce's documented array shape."""
    return json_response(status, [{"message": message, "errorCode": error_code, "fields": fields or []}])


@dataclass
class ValidationRule:
    """An org validation rule: reject writes whose ``field`` contains ``contains`` (case-insensitive)."""

    sobject: str
    field: str
    contains: str
    message: str = "This record can't be saved: it breaks a validation rule."


class SalesforceEmulator(Emulator):
    """Emulates the subset of the Salesforce REST API that ``connectors.salesforce`` uses.

    Args:
        client_id: The connected app's consumer key.
        client_secret: Its consumer secret (client-credentials flow).
        jwt_public_key: When given, JWT-bearer assertions must be signed by its private key.
        instance_url: The ``instance_url`` returned by the token endpoint; default: the requested origin.
        external_id_field: The custom field holding each write's key.
        external_id_objects: The objects that have it (default Task and Opportunity).
        external_id_unique: Whether it is marked *External ID* and *Unique* (else a plain text field:
            describe says so, upserts on it answer 404 and duplicates are allowed, as Salesforce does).
        api_limit: The org's daily API request limit reported in ``Sforce-Limit-Info``.
        currencies: The active currencies of a multi-currency org (the first is the corporate one);
            ``None`` for a single-currency org, which has no ``CurrencyIsoCode`` field at all.
        corporate_currency: The currency of a single-currency org.
        stages: The Opportunity stages (``StageName`` picklist values).
    """

    name = "salesforce"

    def __init__(
        self,
        *,
        client_id: str = "fulfill-emulator-client",
        client_secret: str = "fulfill-emulator-secret",
        jwt_public_key: rsa.RSAPublicKey | None = None,
        instance_url: str | None = None,
        external_id_field: str = DEFAULT_EXTERNAL_ID_FIELD,
        external_id_objects: Iterable[str] = ("Task", "Opportunity"),
        external_id_unique: bool = True,
        api_limit: int = 15000,
        currencies: Iterable[str] | None = None,
        corporate_currency: str = "USD",
        stages: Iterable[str] = DEFAULT_STAGES,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.jwt_public_key = jwt_public_key
        self.instance_url = instance_url
        self.external_id_field = external_id_field
        self.external_id_objects = frozenset(external_id_objects)
        self.external_id_unique = external_id_unique
        self.api_limit = api_limit
        self.currencies: tuple[str, ...] | None = tuple(currencies) if currencies is not None else None
        self.corporate_currency = self.currencies[0] if self.currencies else corporate_currency
        self.stages = tuple(stages)
        self.api_usage = 0
        self.tokens: dict[str, str] = {}
        """Issued access tokens -> the user they act as."""
        self.records: dict[str, dict[str, Any]] = {}
        """Every record by its 18-character id, deleted ones included (``IsDeleted: true``)."""
        self.validation_rules: list[ValidationRule] = []
        self._ids = itertools.count(1)
        super().__init__()
        self._seed()

    @property
    def multi_currency(self) -> bool:
        """Whether the emulated org has multiple currencies enabled."""
        return self.currencies is not None

    # -- test-facing state API -------------------------------------------------------------
    def reset(self) -> None:
        """Forget all records, tokens, rules and faults, then reseed."""
        with self._lock:
            super().reset()
            self.records.clear()
            self.tokens.clear()
            self.validation_rules.clear()
            self.api_usage = 0
            self._ids = itertools.count(1)
            self._seed()

    def revoke_tokens(self) -> None:
        """Invalidate every issued access token (the next API call answers 401 INVALID_SESSION_ID)."""
        with self._lock:
            self.tokens.clear()

    def add_validation_rule(
        self, sobject: str, field: str, contains: str, message: str | None = None
    ) -> None:
        """Make writes of ``sobject`` whose ``field`` contains ``contains`` fail (400 FIELD_CUSTOM_…)."""
        rule = ValidationRule(sobject, field, contains)
        if message:
            rule.message = message
        with self._lock:
            self.validation_rules.append(rule)

    def insert(self, sobject: str, fields: dict[str, Any], record_id: str | None = None) -> str:
        """Put a record straight into the org (bypassing every check); returns its 18-character id."""
        with self._lock:
            new_id = canonical_id(record_id) if record_id else self._new_id(sobject)
            if new_id is None:
                raise ValueError(f"{record_id!r} is not a Salesforce id")
            self.records[new_id] = {
                "attributes": {"type": sobject},
                "Id": new_id,
                "IsDeleted": False,
                **DEFAULTS.get(sobject, {}),
                **({"CurrencyIsoCode": self.corporate_currency} if self.multi_currency else {}),
                **fields,
            }
            return new_id

    def live(self, sobject: str) -> list[dict[str, Any]]:
        """Copies of the records of ``sobject`` that are not deleted."""
        with self._lock:
            return [
                copy.deepcopy(r)
                for r in self.records.values()
                if r["attributes"]["type"] == sobject and not r["IsDeleted"]
            ]

    def live_ids(self, sobject: str) -> tuple[str, ...]:
        """Sorted ids of the live records of ``sobject``."""
        return tuple(sorted(r["Id"] for r in self.live(sobject)))

    def record(self, record_id: str) -> dict[str, Any] | None:
        """A copy of one record (deleted or not; 15- or 18-character id), or ``None``."""
        with self._lock:
            found = self.records.get(canonical_id(record_id) or record_id)
            return copy.deepcopy(found) if found is not None else None

    # -- routes ----------------------------------------------------------------------------
    def register_routes(self) -> None:
        """The token endpoint, describe, query and the sObject resources."""
        data = r"/services/data/v(?P<version>\d+\.\d+)"
        sobject = data + r"/sobjects/(?P<sobject>[A-Za-z0-9_]+)"
        self.route("POST", r"/services/oauth2/token", self._token)
        self.route("GET", data + r"/query/?", self._query)
        self.route("GET", sobject + r"/describe/?", self._describe)
        self.route("POST", sobject + r"/?", self._create)
        by_external_id = sobject + r"/(?P<field>[A-Za-z0-9_]+)/(?P<value>[^/]+)"
        self.route("GET", by_external_id, self._get_by_external_id)
        self.route("PATCH", by_external_id, self._upsert)
        by_id = sobject + r"/(?P<record_id>[A-Za-z0-9]+)"
        self.route("GET", by_id, self._get)
        self.route("PATCH", by_id, self._update)
        self.route("DELETE", by_id, self._delete)

    def not_found(self, request: httpx.Request) -> httpx.Response:
        """Salesforce's answer for an unknown resource."""
        return sf_error(404, "NOT_FOUND", "The requested resource does not exist")

    # -- OAuth -----------------------------------------------------------------------------
    def _token(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode("utf-8")).items()}
        grant = form.get("grant_type")
        if grant == "client_credentials":
            if request.url.host in GENERIC_LOGIN_HOSTS:  # the flow needs the org's My Domain
                return _oauth_error("invalid_grant", "request not supported on this domain")
            client_id, client_secret = _basic_auth(request) or (
                form.get("client_id"),
                form.get("client_secret"),
            )
            if client_id != self.client_id or client_secret != self.client_secret:
                return _oauth_error("invalid_client", "invalid client credentials")
            return self._issue(request, USER_ID)
        if grant == JWT_BEARER_GRANT:
            return self._jwt_grant(request, form.get("assertion") or "")
        if not grant:
            return _oauth_error("invalid_request", "grant type is missing")
        return _oauth_error("unsupported_grant_type", "grant type not supported")

    def _jwt_grant(self, request: httpx.Request, assertion: str) -> httpx.Response:
        parts = assertion.split(".")
        if len(parts) != 3:
            return _oauth_error("invalid_grant", "invalid assertion")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (ValueError, binascii.Error):
            return _oauth_error("invalid_grant", "invalid assertion")
        if not isinstance(header, dict) or header.get("alg") != "RS256" or not isinstance(claims, dict):
            return _oauth_error("invalid_grant", "invalid assertion")
        if claims.get("iss") != self.client_id:
            return _oauth_error("invalid_client", "invalid client identifier")
        audiences = LOGIN_AUDIENCES | {_origin(request)}
        if claims.get("aud") not in audiences:
            return _oauth_error("invalid_grant", "audience is invalid")
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= time.time():
            return _oauth_error("invalid_grant", "expired authorization code")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            return _oauth_error("invalid_grant", "user hasn't approved this consumer")
        if self.jwt_public_key is not None:
            try:
                self.jwt_public_key.verify(
                    signature, f"{parts[0]}.{parts[1]}".encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
                )
            except InvalidSignature:
                return _oauth_error("invalid_grant", "invalid assertion")
        return self._issue(request, str(claims["sub"]))

    def _issue(self, request: httpx.Request, user: str) -> httpx.Response:
        token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(32)}"
        self.tokens[token] = user
        body = {
            "access_token": token,
            "instance_url": self.instance_url or _origin(request),
            "id": f"https://login.salesforce.com/id/{ORG_ID}/{USER_ID}",
            "token_type": "Bearer",
            "issued_at": str(int(time.time() * 1000)),
            "signature": base64.b64encode(secrets.token_bytes(32)).decode("ascii"),
            "scope": "api",
        }
        return json_response(200, body)

    def _api(self, request: httpx.Request) -> httpx.Response | None:
        """Count the call and check the bearer token; a response means the call is refused."""
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[len("Bearer ") :] not in self.tokens:
            return sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        if self.api_usage >= self.api_limit:
            return self._limited(sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))
        self.api_usage += 1
        return None

    def _limited(self, response: httpx.Response) -> httpx.Response:
        response.headers["Sforce-Limit-Info"] = f"api-usage={self.api_usage}/{self.api_limit}"
        return response

    # -- sObject resources -----------------------------------------------------------------
    def _get(self, request: httpx.Request, version: str, sobject: str, record_id: str) -> httpx.Response:
        refused = self._api(request)
        if refused is not None:
            return refused
        record = self._find(sobject, record_id)
        if record is None or record["IsDeleted"]:
            return self._limited(self.not_found(request))
        return self._limited(self._shape(record, request, version))

    def _create(self, request: httpx.Request, version: str, sobject: str) -> httpx.Response:
        refused = self._api(request)
        if refused is not None:
            return refused
        if sobject not in FIELDS:
            return self._limited(_unsupported(sobject))
        fields = request_json(request)
        if not isinstance(fields, dict):
            return self._limited(_not_an_object())
        merged = {**DEFAULTS.get(sobject, {}), **fields}
        problem = self._check_write(sobject, fields, merged=merged)
        if problem is not None:
            return self._limited(problem)
        new_id = self.insert(sobject, self._stored(sobject, fields))
        return self._limited(json_response(201, {"id": new_id, "success": True, "errors": []}))

    def _update(self, request: httpx.Request, version: str, sobject: str, record_id: str) -> httpx.Response:
        refused = self._api(request)
        if refused is not None:
            return refused
        record = self._find(sobject, record_id)
        if record is None:
            return self._limited(self.not_found(request))
        if record["IsDeleted"]:
            return self._limited(sf_error(404, "ENTITY_IS_DELETED", "entity is deleted"))
        fields = request_json(request)
        if not isinstance(fields, dict):
            return self._limited(_not_an_object())
        problem = self._check_write(sobject, fields, merged={**record, **fields}, record_id=record["Id"])
        if problem is not None:
            return self._limited(problem)
        record.update(self._stored(sobject, fields))
        return self._limited(json_response(204))

    def _delete(self, request: httpx.Request, version: str, sobject: str, record_id: str) -> httpx.Response:
        refused = self._api(request)
        if refused is not None:
            return refused
        record = self._find(sobject, record_id)
        if record is None:
            return self._limited(self.not_found(request))
        if record["IsDeleted"]:
            return self._limited(sf_error(404, "ENTITY_IS_DELETED", "entity is deleted"))
        record["IsDeleted"] = True
        for other in self.records.values():  # a deleted parent takes its activities with it
            if other["attributes"]["type"] == "Task" and other.get("WhatId") == record["Id"]:
                other["IsDeleted"] = True
        return self._limited(json_response(204))

    def _get_by_external_id(
        self, request: httpx.Request, version: str, sobject: str, field: str, value: str
    ) -> httpx.Response:
        refused = self._api(request)
        if refused is not None:
            return refused
        matches, problem = self._matches(sobject, field, value)
        if problem is not None:
            return self._limited(problem)
        if not matches:
            return self._limited(self.not_found(request))
        if len(matches) > 1:
            return self._limited(self._multiple(matches, version))
        return self._limited(self._shape(matches[0], request, version))

    def _upsert(
        self, request: httpx.Request, version: str, sobject: str, field: str, value: str
    ) -> httpx.Response:
        refused = self._api(request)
        if refused is not None:
            return refused
        matches, problem = self._matches(sobject, field, value)
        if problem is not None:
            return self._limited(problem)
        if len(matches) > 1:
            return self._limited(self._multiple(matches, version))
        fields = request_json(request)
        if not isinstance(fields, dict):
            return self._limited(_not_an_object())
        for key in fields:
            if key.lower() in {"id", field.lower()}:
                return self._limited(
                    sf_error(
                        400, "INVALID_FIELD", f"{key} is not a valid field to set in an upsert body", [key]
                    )
                )
        existing = matches[0] if matches else None
        merged = {**(existing if existing else DEFAULTS.get(sobject, {})), **fields}
        problem = self._check_write(
            sobject, fields, merged=merged, record_id=existing["Id"] if existing else None
        )
        if problem is not None:
            return self._limited(problem)
        if existing is not None:
            existing.update(self._stored(sobject, fields))
            body = {"id": existing["Id"], "success": True, "errors": [], "created": False}
            return self._limited(json_response(200, body))
        new_id = self.insert(sobject, {**self._stored(sobject, fields), field: value})
        return self._limited(
            json_response(201, {"id": new_id, "success": True, "errors": [], "created": True})
        )

    # -- describe and query ----------------------------------------------------------------
    def _describe(self, request: httpx.Request, version: str, sobject: str) -> httpx.Response:
        refused = self._api(request)
        if refused is not None:
            return refused
        if sobject not in FIELDS:
            return self._limited(self.not_found(request))
        return self._limited(json_response(200, self.describe(sobject, version)))

    def describe(self, sobject: str, version: str = "62.0") -> dict[str, Any]:
        """The describe of ``sobject`` as ``GET …/sobjects/{sobject}/describe`` answers it."""
        fields = [self._describe_field(sobject, "Id")]
        fields += [self._describe_field(sobject, name) for name in sorted(self._known_fields(sobject))]
        return {
            "name": sobject,
            "label": sobject,
            "keyPrefix": KEY_PREFIXES[sobject],
            "createable": True,
            "updateable": True,
            "deletable": True,
            "queryable": True,
            "custom": False,
            "urls": {
                "sobject": f"/services/data/v{version}/sobjects/{sobject}",
                "describe": f"/services/data/v{version}/sobjects/{sobject}/describe",
                "rowTemplate": f"/services/data/v{version}/sobjects/{sobject}/{{ID}}",
            },
            "fields": fields,
        }

    def _describe_field(self, sobject: str, name: str) -> dict[str, Any]:
        system = name == "Id"
        kind = "id" if system else FIELD_TYPES.get(name, "string")
        external = name == self.external_id_field and self.external_id_unique
        values = self._picklist(sobject, name)
        return {
            "name": name,
            "label": FIELD_LABELS.get(name, name),
            "type": kind,
            "length": 18 if kind in ("id", "reference") else (64 if name == self.external_id_field else 255),
            "custom": name.endswith("__c"),
            "externalId": external,
            "unique": external,
            "idLookup": system or external,
            "createable": not system,
            "updateable": not system,
            "nillable": not system and name not in REQUIRED.get(sobject, ()),
            "picklistValues": [
                {"active": True, "defaultValue": False, "label": v, "validFor": None, "value": v}
                for v in (values or ())
            ],
            "restrictedPicklist": values is not None,
            "referenceTo": list(REFERENCES.get((sobject, name), ("User",) if name == "OwnerId" else ())),
        }

    def _picklist(self, sobject: str, field: str) -> tuple[str, ...] | None:
        """The values of a restricted picklist, or ``None`` when ``field`` is not one."""
        if field == "CurrencyIsoCode":
            return self.currencies
        if (sobject, field) == ("Opportunity", "StageName"):
            return self.stages
        if (sobject, field) == ("Task", "Priority"):
            return TASK_PRIORITIES
        if (sobject, field) == ("Task", "Status"):
            return TASK_STATUSES
        return None

    def _query(self, request: httpx.Request, version: str) -> httpx.Response:
        refused = self._api(request)
        if refused is not None:
            return refused
        soql = request.url.params.get("q")
        match = _SOQL.fullmatch(soql or "")
        if match is None:
            return self._limited(sf_error(400, "MALFORMED_QUERY", "unexpected token in the query"))
        sobject = match["sobject"]
        rows, known = self._query_rows(sobject)
        if rows is None:
            return self._limited(_unsupported(sobject))
        names = [f.strip() for f in match["fields"].split(",")]
        conditions: list[tuple[str, Any]] = []
        if match["where"]:
            for part in re.split(r"\s+AND\s+", match["where"], flags=re.IGNORECASE):
                condition = _CONDITION.fullmatch(part)
                if condition is None:
                    return self._limited(sf_error(400, "MALFORMED_QUERY", "unsupported WHERE clause"))
                conditions.append((condition["field"], _soql_value(condition["value"])))
        for name in [*names, *(c[0] for c in conditions)]:
            if name not in known:
                return self._limited(
                    sf_error(400, "INVALID_FIELD", f"No such column '{name}' on entity '{sobject}'.")
                )
        selected = [row for row in rows if all(_soql_equal(row.get(f), v) for f, v in conditions)]
        if match["limit"]:
            selected = selected[: int(match["limit"])]
        records = []
        for row in selected:
            url = f"/services/data/v{version}/sobjects/{sobject}/{row['Id']}"
            records.append({"attributes": {"type": sobject, "url": url}, **{n: row.get(n) for n in names}})
        body = {"totalSize": len(records), "done": True, "records": records}
        return self._limited(json_response(200, body))

    def _query_rows(self, sobject: str) -> tuple[list[dict[str, Any]] | None, set[str]]:
        if sobject == "Organization":
            org = {
                "Id": ORG_ID,
                "Name": "Fulfill Emulated Org",
                "DefaultCurrencyIsoCode": self.corporate_currency,
                "IsSandbox": False,
                "OrganizationType": "Enterprise Edition",
            }
            return [org], set(org)
        if sobject == "CurrencyType":
            if self.currencies is None:  # single-currency orgs have no CurrencyType
                return None, set()
            rows = [
                {
                    "Id": id18(f"01LHs{n:010d}"),
                    "IsoCode": code,
                    "IsActive": True,
                    "IsCorporate": n == 0,
                    "ConversionRate": 1.0,
                    "DecimalPlaces": 2,
                }
                for n, code in enumerate(self.currencies)
            ]
            return rows, {"Id", "IsoCode", "IsActive", "IsCorporate", "ConversionRate", "DecimalPlaces"}
        if sobject not in FIELDS:
            return None, set()
        rows = [r for r in self.records.values() if r["attributes"]["type"] == sobject and not r["IsDeleted"]]
        return rows, self._known_fields(sobject) | _SYSTEM_FIELDS

    # -- helpers ---------------------------------------------------------------------------
    def _seed(self) -> None:
        self.insert(
            "Account", {"Name": "Acme Corporation", "Type": "Customer - Direct"}, record_id=SEED_ACCOUNT_ID
        )
        self.insert(
            "Opportunity",
            {
                "Name": "Acme – 2026 renewal",
                "StageName": "Proposal/Price Quote",
                "CloseDate": "2026-12-31",
                "Amount": 250000.0,
                "AccountId": SEED_ACCOUNT_ID,
            },
            record_id=SEED_OPPORTUNITY_ID,
        )
        self.insert(
            "Contact",
            {"FirstName": "Casey", "LastName": "Buyer", "Email": "cfo@customer.example"},
            record_id=SEED_CONTACT_ID,
        )
        self.records[SEED_CONTACT_ID]["AccountId"] = SEED_ACCOUNT_ID
        self.insert(
            "Lead",
            {
                "FirstName": "Lee",
                "LastName": "Prospect",
                "Company": "Globex",
                "Status": "Open - Not Contacted",
            },
            record_id=SEED_LEAD_ID,
        )

    def _new_id(self, sobject: str) -> str:
        prefix = KEY_PREFIXES.get(sobject, "a00")
        return id18(f"{prefix}Hs0{next(self._ids):09d}")

    def _find(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        key = canonical_id(record_id)
        record = self.records.get(key) if key else None
        if record is None or record["attributes"]["type"] != sobject:
            return None
        return record

    def _known_fields(self, sobject: str) -> set[str]:
        known = set(FIELDS.get(sobject, set()))
        if sobject in self.external_id_objects:
            known.add(self.external_id_field)
        if self.multi_currency:
            known.add("CurrencyIsoCode")
        return known

    def _matches(
        self, sobject: str, field: str, value: str
    ) -> tuple[list[dict[str, Any]], httpx.Response | None]:
        if sobject not in FIELDS:
            return [], sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        if (
            field != self.external_id_field
            or sobject not in self.external_id_objects
            or not (self.external_id_unique)
        ):
            return [], sf_error(
                404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {field}"
            )
        matches = [
            r
            for r in self.records.values()
            if r["attributes"]["type"] == sobject and not r["IsDeleted"] and r.get(field) == value
        ]
        return matches, None

    def _multiple(self, matches: list[dict[str, Any]], version: str) -> httpx.Response:
        sobject = matches[0]["attributes"]["type"]
        return json_response(
            300, [f"/services/data/v{version}/sobjects/{sobject}/{r['Id']}" for r in matches]
        )

    def _stored(self, sobject: str, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` as Salesforce stores them: references in their 18-character form."""
        stored = dict(fields)
        for key, value in fields.items():
            if (sobject, key) in REFERENCES and isinstance(value, str) and value:
                stored[key] = canonical_id(value) or value
        return stored

    def _check_write(
        self,
        sobject: str,
        fields: dict[str, Any],
        *,
        merged: dict[str, Any],
        record_id: str | None = None,
    ) -> httpx.Response | None:
        known = self._known_fields(sobject)
        for key in fields:
            if key not in known:
                if key in _SYSTEM_FIELDS:
                    return sf_error(
                        400,
                        "INVALID_FIELD_FOR_INSERT_UPDATE",
                        f"Unable to create/update fields: {key}.",
                        [key],
                    )
                return sf_error(
                    400, "INVALID_FIELD", f"No such column '{key}' on sobject of type {sobject}", [key]
                )
        missing = [name for name in REQUIRED.get(sobject, ()) if merged.get(name) in (None, "")]
        if missing:
            return sf_error(
                400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing
            )
        for key, value in fields.items():
            problem = self._check_value(sobject, key, value)
            if problem is not None:
                return problem
        if sobject == "Task":
            problem = _lead_rule(merged)
            if problem is not None:
                return problem
        value = fields.get(self.external_id_field)
        if value not in (None, "") and self.external_id_unique:
            for other in self.records.values():
                if (
                    other["attributes"]["type"] == sobject
                    and not other["IsDeleted"]
                    and other["Id"] != record_id
                    and other.get(self.external_id_field) == value
                ):
                    return sf_error(
                        400,
                        "DUPLICATE_VALUE",
                        f"duplicate value found: {self.external_id_field} duplicates value on record "
                        f"with id: {other['Id']}",
                        [self.external_id_field],
                    )
        for rule in self.validation_rules:
            text = merged.get(rule.field)
            if rule.sobject == sobject and isinstance(text, str) and rule.contains.lower() in text.lower():
                return sf_error(400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", rule.message, [rule.field])
        return None

    def _check_value(self, sobject: str, field: str, value: Any) -> httpx.Response | None:
        """References and restricted picklists, one field at a time."""
        allowed = REFERENCES.get((sobject, field))
        label = FIELD_LABELS.get(field, field)
        if allowed is not None and value not in (None, ""):
            key = canonical_id(value) if isinstance(value, str) else None
            if key is None:
                return sf_error(400, "MALFORMED_ID", f"{label}: id value of incorrect type: {value}", [field])
            if OBJECTS_BY_PREFIX.get(key[:3]) not in allowed:
                return sf_error(
                    400, "FIELD_INTEGRITY_EXCEPTION", f"{label}: id value of incorrect type: {value}", [field]
                )
            target = self.records.get(key)
            if target is None:
                return sf_error(
                    400,
                    "INVALID_CROSS_REFERENCE_KEY",
                    f"{label}: invalid cross reference id",
                    [field],
                )
            if target["IsDeleted"]:
                return sf_error(400, "ENTITY_IS_DELETED", "entity is deleted", [field])
        values = self._picklist(sobject, field)
        if values is not None and value not in values:
            return sf_error(
                400,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{label}: bad value for restricted picklist field: {value}",
                [field],
            )
        return None

    def _shape(self, record: dict[str, Any], request: httpx.Request, version: str) -> httpx.Response:
        sobject = record["attributes"]["type"]
        body: dict[str, Any] = {
            "attributes": {
                "type": sobject,
                "url": f"/services/data/v{version}/sobjects/{sobject}/{record['Id']}",
            }
        }
        wanted = request.url.params.get("fields")
        names = (
            ["Id", *[f.strip() for f in wanted.split(",") if f.strip()]]
            if wanted
            else [k for k in record if k != "attributes"]
        )
        for name in names:
            if name in record:
                body[name] = copy.deepcopy(record[name])
            elif name in self._known_fields(sobject):
                body[name] = None
            else:
                return sf_error(
                    400, "INVALID_FIELD", f"No such column '{name}' on entity '{sobject}'", [name]
                )
        return json_response(200, body)


def _lead_rule(task: dict[str, Any]) -> httpx.Response | None:
    """A Task whose WhoId is a Lead relates to nothing else: its WhatId must be empty."""
    who, what = task.get("WhoId"), task.get("WhatId")
    lead = isinstance(who, str) and who.startswith(KEY_PREFIXES["Lead"])
    if lead and what not in (None, ""):
        return sf_error(
            400,
            "FIELD_INTEGRITY_EXCEPTION",
            "Related To ID: a task whose Name ID is a lead cannot be related to another record",
            ["WhatId"],
        )
    return None


def _unsupported(sobject: str) -> httpx.Response:
    return sf_error(
        400,
        "INVALID_TYPE",
        f"sObject type '{sobject}' is not supported. If you are attempting to use a custom object, be sure "
        "to append the '__c' after the entity name.",
    )


def _soql_value(literal: str) -> Any:
    lowered = literal.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    if literal.startswith("'"):
        return re.sub(r"\\(.)", r"\1", literal[1:-1])
    return float(literal)


def _soql_equal(actual: Any, expected: Any) -> bool:
    if isinstance(actual, str) and isinstance(expected, str):
        a, b = canonical_id(actual), canonical_id(expected)
        if a is not None and b is not None and actual[:3] == expected[:3]:
            return a == b
        return actual.lower() == expected.lower()  # SOQL's = on text is case-insensitive
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return float(actual) == float(expected)
    return bool(actual == expected)


def _origin(request: httpx.Request) -> str:
    port = request.url.port
    return f"{request.url.scheme}://{request.url.host}" + (f":{port}" if port else "")


def _basic_auth(request: httpx.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[len("Basic ") :]).decode("utf-8").partition(":")
    except (ValueError, binascii.Error):
        return None
    return user, password


def _not_an_object() -> httpx.Response:
    return sf_error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")


def _oauth_error(code: str, description: str) -> httpx.Response:
    return json_response(400, {"error": code, "error_description": description})


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
