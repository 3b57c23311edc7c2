"""A small, faithful Salesforce REST emulator: token endpoint, upsert by external id, get/patch/delete.

Behaviour follows Salesforce's documentation:

* ``POST /services/oauth2/token`` — ``grant_type=client_credentials`` (``client_id`` + ``client_secret``
  in the form or as HTTP Basic) and ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` with an
  RS256 ``assertion`` whose ``iss`` is the consumer key, ``sub`` a username, ``aud`` the login host and
  ``exp`` in the future (the signature is checked only when a public key was registered). Answers
  ``{"access_token", "instance_url", "id", "token_type": "Bearer", "issued_at", "signature"}`` or
  ``{"error": "invalid_client" | "invalid_grant", "error_description"}`` with 400
  (https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm).
* ``PATCH /services/data/vXX.X/sobjects/{Object}/{ExternalIdField}/{value}`` — upsert: 201
  ``{"id", "success": true, "errors": [], "created": true}`` when nothing matches, 200 with
  ``"created": false`` after updating the one match, 300 with the matching record URLs when several match;
  the body must not carry ``Id`` or the external id field
  (https://developer.salesforce.com/docs/platform/api-rest/guide/dome-upsert.html).
* ``GET`` on the same path — the matching record (``?fields=`` honoured); 404 ``NOT_FOUND`` otherwise.
* ``GET|PATCH|DELETE /services/data/vXX.X/sobjects/{Object}/{id}`` — read (``?fields=a,b``), update
  (204) and delete (204). A deleted record reads as 404 ``NOT_FOUND``; patching or deleting it again
  answers 404 ``ENTITY_IS_DELETED``. Deleting a record also deletes the Tasks whose ``WhatId`` is it, as
  Salesforce deletes a record's activities with it.
* Errors are JSON arrays ``[{"message", "errorCode", "fields"}]``; an unknown field is 400
  ``INVALID_FIELD``, a missing required one 400 ``REQUIRED_FIELD_MISSING``, a configured validation rule
  400 ``FIELD_CUSTOM_VALIDATION_EXCEPTION``, a bad token 401 ``INVALID_SESSION_ID``
  (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm).
* Every REST answer carries ``Sforce-Limit-Info: api-usage=used/limit``; past the limit the API answers
  403 ``REQUEST_LIMIT_EXCEEDED``.

Ids are 18 characters with the object's key prefix (001 Account, 003 Contact, 006 Opportunity,
00Q Lead, 00T Task). Seeded: the Account ``001Hs00002abcDEF`` and the Opportunity ``006Hs00001xyz``
(StageName ``Proposal/Price Quote``) used by the contract's test vectors.
"""

from __future__ import annotations

import base64
import binascii
import copy
import itertools
import json
import secrets
import time
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
SEED_ACCOUNT_ID = "001Hs00002abcDEF"
SEED_OPPORTUNITY_ID = "006Hs00001xyz"
ORG_ID = "00DHs0000000001EAA"
USER_ID = "005Hs0000000001AAA"

KEY_PREFIXES = {"Account": "001", "Contact": "003", "Opportunity": "006", "Lead": "00Q", "Task": "00T"}
_SYSTEM_FIELDS = {"Id", "IsDeleted", "CreatedDate", "CreatedById", "LastModifiedDate", "SystemModstamp"}
# The writable fields each emulated object knows (plus the configured external id field).
FIELDS: dict[str, set[str]] = {
    "Account": {"Name", "Type", "Industry", "Phone", "Website", "Description", "OwnerId", "AnnualRevenue"},
    "Contact": {"FirstName", "LastName", "Email", "Phone", "Title", "AccountId", "Description", "OwnerId"},
    "Lead": {"FirstName", "LastName", "Company", "Email", "Status", "Rating", "Description", "OwnerId"},
    "Opportunity": {
        "Name",
        "StageName",
        "CloseDate",
        "Amount",
        "CurrencyIsoCode",
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
REQUIRED = {"Opportunity": ("Name", "StageName", "CloseDate"), "Account": ("Name",), "Contact": ("LastName",)}
DEFAULTS: dict[str, dict[str, Any]] = {"Task": {"Status": "Not Started", "Priority": "Normal"}}
LOGIN_AUDIENCES = {"https://login.salesforce.com", "https://test.salesforce.com"}


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
        external_id_field: The External ID + Unique field present on every object.
        api_limit: The org's daily API request limit reported in ``Sforce-Limit-Info``.
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
        api_limit: int = 15000,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.jwt_public_key = jwt_public_key
        self.instance_url = instance_url
        self.external_id_field = external_id_field
        self.api_limit = api_limit
        self.api_usage = 0
        self.tokens: dict[str, str] = {}
        """Issued access tokens -> the user they act as."""
        self.records: dict[str, dict[str, Any]] = {}
        """Every record by id, deleted ones included (``IsDeleted: true``, as in the recycle bin)."""
        self.validation_rules: list[ValidationRule] = []
        self._ids = itertools.count(1)
        super().__init__()
        self._seed()

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
        """Put a record straight into the org (bypassing rules and uniqueness); returns its id."""
        with self._lock:
            new_id = record_id or self._new_id(sobject)
            self.records[new_id] = {
                "attributes": {"type": sobject},
                "Id": new_id,
                "IsDeleted": False,
                **DEFAULTS.get(sobject, {}),
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
        """A copy of one record (deleted or not), or ``None``."""
        with self._lock:
            found = self.records.get(record_id)
            return copy.deepcopy(found) if found is not None else None

    # -- routes ----------------------------------------------------------------------------
    def register_routes(self) -> None:
        """The token endpoint and the sObject resources."""
        sobject = r"/services/data/v(?P<version>\d+\.\d+)/sobjects/(?P<sobject>[A-Za-z0-9_]+)"
        self.route("POST", r"/services/oauth2/token", self._token)
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
        problem = self._check_write(sobject, fields, merged={**record, **fields})
        if problem is not None:
            return self._limited(problem)
        record.update(fields)
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
            if other["attributes"]["type"] == "Task" and other.get("WhatId") == record_id:
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
        merged = {**(matches[0] if matches else DEFAULTS.get(sobject, {})), **fields}
        problem = self._check_write(sobject, fields, merged=merged)
        if problem is not None:
            return self._limited(problem)
        if matches:
            matches[0].update(fields)
            body = {"id": matches[0]["Id"], "success": True, "errors": [], "created": False}
            return self._limited(json_response(200, body))
        new_id = self.insert(sobject, {**fields, field: value})
        return self._limited(
            json_response(201, {"id": new_id, "success": True, "errors": [], "created": True})
        )

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

    def _new_id(self, sobject: str) -> str:
        prefix = KEY_PREFIXES.get(sobject, "a00")
        return f"{prefix}Hs{next(self._ids):010d}AAE"

    def _find(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        record = self.records.get(record_id)
        if record is None or record["attributes"]["type"] != sobject:
            return None
        return record

    def _known_fields(self, sobject: str) -> set[str]:
        return FIELDS.get(sobject, set()) | {self.external_id_field}

    def _matches(
        self, sobject: str, field: str, value: str
    ) -> tuple[list[dict[str, Any]], httpx.Response | None]:
        if sobject not in FIELDS:
            return [], sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        if field != self.external_id_field:
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

    def _check_write(
        self, sobject: str, fields: dict[str, Any], *, merged: dict[str, Any]
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
        for rule in self.validation_rules:
            value = merged.get(rule.field)
            if rule.sobject == sobject and isinstance(value, str) and rule.contains.lower() in value.lower():
                return sf_error(400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", rule.message, [rule.field])
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
