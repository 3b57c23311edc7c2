"""A small, faithful Google Calendar emulator: token endpoint and events insert/get/delete.

Behaviour follows Google's documentation:

* ``POST /token`` — OAuth 2.0 token endpoint: ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``
  with an RS256 ``assertion`` (service account, signature checked against the registered public key)
  or ``grant_type=refresh_token``; answers ``{"access_token", "expires_in", "token_type": "Bearer"}``
  or ``{"error": "invalid_grant", ...}``
  (https://developers.google.com/identity/protocols/oauth2/service-account#httprest).
* ``POST /calendar/v3/calendars/{calendarId}/events`` — honours a client ``id`` (base32hex ``a-v0-9``,
  5–1024 characters, else 400 ``invalid``); an id already used on that calendar — even by a deleted
  event — answers 409 ``duplicate`` "The requested identifier already exists."
  (https://developers.google.com/workspace/calendar/api/v3/reference/events#id).
* ``GET …/events/{eventId}`` — the event; a deleted one is still returned with ``status: "cancelled"``.
* ``DELETE …/events/{eventId}`` — 204; deleting again answers 410 ``deleted`` "Resource has been deleted".
* Errors use Google's JSON shape
  ``{"error": {"errors": [{"domain", "reason", "message"}], "code", "message"}}``
  (https://developers.google.com/workspace/calendar/api/guides/errors).

It also records who WOULD have been notified, so tests can assert a draft notified nobody:
``notifications`` lists every (event, recipients) an ``sendUpdates`` other than ``none`` would have mailed,
and ``inserts_with_attendees`` counts inserts that carried an ``attendees`` list at all.
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sandbox.base import Emulator, json_response, request_json

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")
EVENTS_PATH = r"/calendar/v3/calendars/(?P<calendar_id>[^/]+)/events"
EVENT_PATH = EVENTS_PATH + r"/(?P<event_id>[^/]+)"


def google_error(code: int, reason: str, message: str, *, domain: str = "global") -> httpx.Response:
    """A Calendar API error response in Google's documented JSON shape."""
    body = {
        "error": {
            "errors": [{"domain": domain, "reason": reason, "message": message}],
            "code": code,
            "message": message,
        }
    }
    return json_response(code, body)


@dataclass
class IssuedToken:
    """An access token the emulator handed out."""

    subject: str
    scope: str
    expires_at: float


@dataclass
class Notification:
    """Mail the real Calendar would have sent: to whom, about which event."""

    event_id: str
    send_updates: str
    recipients: list[str] = field(default_factory=list)


class GoogleCalendarEmulator(Emulator):
    """Google Calendar API v3 (events insert/get/delete) plus Google's OAuth token endpoint.

    Args:
        html_base: Base of the ``htmlLink`` of events, as Google builds it.
        token_lifetime: ``expires_in`` of issued access tokens, in seconds.
    """

    name = "google_calendar"

    def __init__(
        self, *, html_base: str = "https://www.google.com/calendar/event", token_lifetime: int = 3599
    ):
        self.html_base = html_base
        self.token_lifetime = token_lifetime
        self.service_accounts: dict[str, rsa.RSAPublicKey] = {}
        self.oauth_clients: dict[str, tuple[str, str, str]] = {}  # client_id -> (secret, refresh, subject)
        self.tokens: dict[str, IssuedToken] = {}
        self.events: dict[tuple[str, str], dict[str, Any]] = {}
        self.notifications: list[Notification] = []
        self.inserts_with_attendees = 0
        self.send_updates_seen: list[str | None] = []
        self._sequence = itertools.count(1)
        super().__init__()

    # -- configuration ---------------------------------------------------------------------
    def add_service_account(self, email: str, public_key: rsa.RSAPublicKey | bytes) -> None:
        """Trust JWT assertions from ``email`` signed by the matching private key."""
        key = serialization.load_pem_public_key(public_key) if isinstance(public_key, bytes) else public_key
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("service account keys are RSA")
        self.service_accounts[email] = key

    def add_oauth_client(self, client_id: str, client_secret: str, refresh_token: str, subject: str) -> None:
        """Accept ``refresh_token`` grants for this client, acting as ``subject``."""
        self.oauth_clients[client_id] = (client_secret, refresh_token, subject)

    def revoke_tokens(self) -> None:
        """Invalidate every access token issued so far (the next API call answers 401)."""
        with self._lock:
            self.tokens.clear()

    def reset(self) -> None:
        """Forget events, tokens, notifications and faults (registered credentials stay)."""
        super().reset()
        with self._lock:
            self.tokens.clear()
            self.events.clear()
            self.notifications.clear()
            self.inserts_with_attendees = 0
            self.send_updates_seen.clear()

    # -- state inspection ------------------------------------------------------------------
    def live_events(self, calendar_id: str | None = None) -> list[dict[str, Any]]:
        """Events not deleted (``status != "cancelled"``), optionally on one calendar."""
        with self._lock:
            return [
                copy.deepcopy(event)
                for (calendar, _), event in sorted(self.events.items())
                if event["status"] != "cancelled" and (calendar_id is None or calendar == calendar_id)
            ]

    def live_event_ids(self) -> tuple[str, ...]:
        """Sorted ids of live events on every calendar."""
        return tuple(sorted(event["id"] for event in self.live_events()))

    # -- routes ----------------------------------------------------------------------------
    def register_routes(self) -> None:
        """Token endpoint and the events subset."""
        self.route("POST", r"/token", self._token)
        self.route("POST", EVENTS_PATH, self._insert)
        self.route("GET", EVENT_PATH, self._get)
        self.route("DELETE", EVENT_PATH, self._delete)

    def not_found(self, request: httpx.Request) -> httpx.Response:
        """Unknown paths answer Google's 404 shape."""
        return google_error(404, "notFound", "Not Found")

    # -- token endpoint --------------------------------------------------------------------
    def _token(self, request: httpx.Request) -> httpx.Response:
        form = {key: values[0] for key, values in parse_qs(request.content.decode("utf-8")).items()}
        grant = form.get("grant_type")
        if grant == JWT_BEARER_GRANT:
            return self._jwt_grant(request, form.get("assertion", ""))
        if grant == "refresh_token":
            client = self.oauth_clients.get(form.get("client_id", ""))
            if client is None or not secrets.compare_digest(client[0], form.get("client_secret", "")):
                return json_response(401, {"error": "invalid_client", "error_description": "Unauthorized"})
            if not secrets.compare_digest(client[1], form.get("refresh_token", "")):
                return _oauth_error("invalid_grant", "Bad Request")
            return self._issue(client[2], "https://www.googleapis.com/auth/calendar.events")
        return _oauth_error("unsupported_grant_type", "Invalid grant_type: " + str(grant)[:40])

    def _jwt_grant(self, request: httpx.Request, assertion: str) -> httpx.Response:
        parts = assertion.split(".")
        if len(parts) != 3:
            return _oauth_error("invalid_grant", "Invalid JWT: Token must be a short-lived token")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (ValueError, binascii.Error):
            return _oauth_error("invalid_grant", "Invalid JWT.")
        if header.get("alg") != "RS256":
            return _oauth_error("invalid_grant", "Invalid JWT: algorithm must be RS256")
        key = self.service_accounts.get(str(claims.get("iss")))
        if key is None:
            return _oauth_error("invalid_grant", "Invalid grant: account not found")
        try:
            key.verify(
                signature, f"{parts[0]}.{parts[1]}".encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or exp - iat > 3600 or exp < now:
            return _oauth_error(
                "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes)"
            )
        if not str(claims.get("aud", "")).endswith(request.url.path):
            return _oauth_error("invalid_grant", "Invalid JWT: audience is not the token URI")
        if not claims.get("scope"):
            return _oauth_error("invalid_scope", "Empty or missing scope not allowed.")
        return self._issue(str(claims.get("sub") or claims["iss"]), str(claims["scope"]))

    def _issue(self, subject: str, scope: str) -> httpx.Response:
        token = "ya29.emulated-" + secrets.token_urlsafe(24)
        self.tokens[token] = IssuedToken(subject, scope, time.time() + self.token_lifetime)
        return json_response(
            200, {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        )

    def _authorised(self, request: httpx.Request) -> IssuedToken | None:
        header = request.headers.get("Authorization", "")
        token = (
            self.tokens.get(header.removeprefix("Bearer ").strip()) if header.startswith("Bearer ") else None
        )
        if token is None or token.expires_at < time.time():
            return None
        return token

    # -- events ----------------------------------------------------------------------------
    def _insert(self, request: httpx.Request, calendar_id: str) -> httpx.Response:
        token = self._authorised(request)
        if token is None:
            return _auth_error()
        body = request_json(request)
        if not isinstance(body, dict):
            return google_error(400, "parseError", "Parse Error")
        for edge in ("start", "end"):
            if not isinstance(body.get(edge), dict) or not (
                body[edge].get("dateTime") or body[edge].get("date")
            ):
                return google_error(
                    400, "required", "Missing end time." if edge == "end" else "Missing start time."
                )
        event_id = body.get("id")
        if event_id is None:
            event_id = secrets.token_hex(13)
        elif not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
            return google_error(400, "invalid", "Invalid resource id value.")
        if (calendar_id, event_id) in self.events:
            return google_error(409, "duplicate", "The requested identifier already exists.")
        send_updates = request.url.params.get("sendUpdates")
        self.send_updates_seen.append(send_updates)
        attendees = body.get("attendees")
        if attendees:
            self.inserts_with_attendees += 1
            if send_updates in ("all", "externalOnly"):
                recipients = [str(a.get("email")) for a in attendees if isinstance(a, dict)]
                self.notifications.append(Notification(event_id, send_updates, recipients))
        now = _rfc3339_now()
        event = {
            "kind": "calendar#event",
            "etag": f'"{next(self._sequence)}"',
            "id": event_id,
            "status": body.get("status", "confirmed"),
            "htmlLink": self._html_link(calendar_id, event_id),
            "created": now,
            "updated": now,
            "summary": body.get("summary", ""),
            "creator": {"email": token.subject},
            "organizer": {"email": calendar_id, "self": True},
            "start": body["start"],
            "end": body["end"],
            "iCalUID": f"{event_id}@google.com",
            "sequence": 0,
            "reminders": {"useDefault": True},
            "eventType": "default",
        }
        for optional in ("description", "location", "extendedProperties", "attendees", "transparency"):
            if optional in body:
                event[optional] = body[optional]
        self.events[(calendar_id, event_id)] = event
        return json_response(200, copy.deepcopy(event))

    def _get(self, request: httpx.Request, calendar_id: str, event_id: str) -> httpx.Response:
        if self._authorised(request) is None:
            return _auth_error()
        event = self.events.get((calendar_id, event_id))
        if event is None:
            return google_error(404, "notFound", "Not Found")
        return json_response(200, copy.deepcopy(event))

    def _delete(self, request: httpx.Request, calendar_id: str, event_id: str) -> httpx.Response:
        if self._authorised(request) is None:
            return _auth_error()
        event = self.events.get((calendar_id, event_id))
        if event is None:
            return google_error(404, "notFound", "Not Found")
        if event["status"] == "cancelled":
            return google_error(410, "deleted", "Resource has been deleted")
        send_updates = request.url.params.get("sendUpdates")
        if event.get("attendees") and send_updates in ("all", "externalOnly"):
            recipients = [str(a.get("email")) for a in event["attendees"] if isinstance(a, dict)]
            self.notifications.append(Notification(event_id, send_updates, recipients))
        event["status"] = "cancelled"
        event["updated"] = _rfc3339_now()
        event["etag"] = f'"{next(self._sequence)}"'
        return httpx.Response(204)

    def _html_link(self, calendar_id: str, event_id: str) -> str:
        # Google's htmlLink carries eid = base64("<eventId> <calendarId>").
        eid = base64.urlsafe_b64encode(f"{event_id} {calendar_id}".encode()).decode("ascii").rstrip("=")
        return f"{self.html_base}?eid={eid}"


def _auth_error() -> httpx.Response:
    body = {
        "error": {
            "errors": [
                {
                    "domain": "global",
                    "reason": "authError",
                    "message": "Invalid Credentials",
                    "locationType": "header",
                    "location": "Authorization",
                }
            ],
            "code": 401,
            "message": "Invalid Credentials",
        }
    }
    return json_response(
        401, body, headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}
    )


def _oauth_error(code: str, description: str) -> httpx.Response:
    return json_response(400, {"error": code, "error_description": description})


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _rfc3339_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
