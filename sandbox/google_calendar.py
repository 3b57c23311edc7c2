"""A small, strict Google Calendar emulator: token endpoint and events insert/get/list/patch/update/delete.

Every rule follows Google's documentation or the Calendar v3 discovery document shipped in
google-api-python-client (``googleapiclient/discovery_cache/documents/calendar.v3.json``); each one is
listed with its reference in ``docs/emulators.md`` (Google Calendar). In short:

* ``POST /token`` — OAuth 2.0 token endpoint: the service-account JWT grant (RS256 signature checked
  against the registered public key, ``aud`` the token URI, at most an hour) or ``refresh_token``.
* Paths are matched on the RAW path and each segment is percent-decoded once, as Google does: a calendar
  id such as ``a%2Fb`` is one segment, ``..`` never climbs.
* ``primary`` is the token's user; a calendar registered with :meth:`GoogleCalendarEmulator.add_calendar`
  answers only the users of its ACL (others get 404 ``notFound``, readers get 403 ``requiredAccessLevel``
  on writes); an unregistered calendar is open to every authenticated user (``owner`` when it is the
  user's own address, else ``writer``).
* ``events.insert`` honours a client ``id`` (base32hex ``a-v0-9``, 5–1024, else 400 ``invalid``); an id
  used before on that calendar — even by a deleted event — answers 409 ``duplicate``. ``start``/``end``
  are required, a ``dateTime`` needs an offset unless ``timeZone`` is given, ``end`` before ``start`` is
  400 ``timeRangeEmpty``; extended properties are strings within Google's limits.
* ``events.get`` always returns a deleted event, ``status: "cancelled"`` — with its details (the
  organizer's calendar keeps them so it can be restored) unless ``deleted_details=False``, which leaves
  only what Google guarantees (``id``); :meth:`GoogleCalendarEmulator.purge_deleted` makes deleted events
  disappear (404) while their ids stay taken.
* ``events.list`` hides deleted events unless ``showDeleted=true``; ``maxResults``, ``pageToken``,
  ``privateExtendedProperty``; the answer carries the caller's ``accessRole``.
* ``events.delete`` answers 204, then 410 ``deleted``; ``patch``/``update`` change a (possibly deleted)
  event in place.
* ``sendUpdates`` must be ``all``, ``externalOnly`` or ``none``; booleans ``true``/``false``; integers
  within their minimum.
* Every error, for every method and path, is Google's JSON shape
  ``{"error": {"code", "message", "errors": [{"domain", "reason", "message"}], "status"}}``.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sandbox.base import Emulator, json_response

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")
# Matched against the RAW path (segments still percent-encoded), then each group is decoded once.
EVENTS_PATH = r"/calendar/v3/calendars/(?P<calendar_id>[^/]+)/events"
EVENT_PATH = EVENTS_PATH + r"/(?P<event_id>[^/]+)"
SEND_UPDATES = ("all", "externalOnly", "none")
#: Scopes that may write events, and those that may only read them (discovery document, method scopes).
WRITE_SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/calendar",
        "https://www.googleapis.com/auth/calendar.events",
        "https://www.googleapis.com/auth/calendar.events.owned",
        "https://www.googleapis.com/auth/calendar.app.created",
    }
)
READ_SCOPES = WRITE_SCOPES | {
    "https://www.googleapis.com/auth/calendar.readonly",
    "https://www.googleapis.com/auth/calendar.events.readonly",
    "https://www.googleapis.com/auth/calendar.events.owned.readonly",
}
#: Roles that may change events (Events.accessRole in the discovery document).
WRITER_ROLES = frozenset({"owner", "writer", "writerWithoutPrivateAccess"})
READER_ROLES = WRITER_ROLES | {"reader"}
# https://developers.google.com/workspace/calendar/api/guides/extended-properties#limits
PROPERTY_KEY_LIMIT = 44
PROPERTY_VALUE_LIMIT = 1024
PROPERTY_COUNT_LIMIT = 300
PROPERTY_TOTAL_LIMIT = 32 * 1024
#: The status of Google's JSON error per HTTP code (google.rpc.Code mapping, AIP-193).
ERROR_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "ALREADY_EXISTS",
    410: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?P<offset>Z|z|[+-]\d{2}:\d{2})?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_STRING_FIELDS = ("summary", "description", "location", "colorId")
_EVENT_STATUSES = ("confirmed", "tentative", "cancelled")
#: What Google guarantees of a deleted event ("Deleted events are only guaranteed to have the id field").
_DELETED_KEEPS = ("kind", "etag", "id", "status", "updated")


def google_error(
    code: int,
    reason: str,
    message: str,
    *,
    domain: str = "global",
    location: str | None = None,
    location_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A Calendar API error response in Google's JSON shape (errors guide + google.rpc status)."""
    detail: dict[str, str] = {"domain": domain, "reason": reason, "message": message}
    if location is not None:
        detail["locationType"] = location_type or "parameter"
        detail["location"] = location
    error: dict[str, Any] = {"code": code, "message": message, "errors": [detail]}
    if code in ERROR_STATUS:
        error["status"] = ERROR_STATUS[code]
    return json_response(code, {"error": error}, headers=headers)


class GoogleError(Exception):
    """Raised inside a handler to answer with :func:`google_error`."""

    def __init__(self, code: int, reason: str, message: str, **options: Any) -> None:
        super().__init__(message)
        self.response = google_error(code, reason, message, **options)


@dataclass
class IssuedToken:
    """An access token the emulator handed out."""

    subject: str
    scope: str
    expires_at: float

    def scopes(self) -> set[str]:
        """The granted scopes."""
        return set(self.scope.split())


@dataclass
class Notification:
    """Mail the real Calendar would have sent: to whom, about which event."""

    event_id: str
    send_updates: str
    recipients: list[str] = field(default_factory=list)


class GoogleCalendarEmulator(Emulator):
    """Google Calendar API v3 (events insert/get/list/patch/update/delete) plus Google's OAuth token endpoint.

    Args:
        html_base: Base of the ``htmlLink`` of events, as Google builds it.
        token_lifetime: ``expires_in`` of issued access tokens, in seconds.
        deleted_details: Whether a deleted event still shows its details (as on its organizer's
            calendar); ``False`` leaves only what Google guarantees: ``id`` and ``status``.
    """

    name = "google_calendar"

    def __init__(
        self,
        *,
        html_base: str = "https://www.google.com/calendar/event",
        token_lifetime: int = 3599,
        deleted_details: bool = True,
    ):
        self.html_base = html_base
        self.token_lifetime = token_lifetime
        self.deleted_details = deleted_details
        self.service_accounts: dict[str, rsa.RSAPublicKey] = {}
        self.oauth_clients: dict[str, tuple[str, str, str]] = {}  # client_id -> (secret, refresh, subject)
        self.tokens: dict[str, IssuedToken] = {}
        self.calendars: dict[str, dict[str, str]] = {}  # calendar id -> {user: role}
        self.events: dict[tuple[str, str], dict[str, Any]] = {}
        self.taken_ids: set[tuple[str, str]] = set()
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

    def add_calendar(self, calendar_id: str, acl: Mapping[str, str]) -> None:
        """Register ``calendar_id`` with an ACL (user → ``owner``/``writer``/``reader``/``freeBusyReader``).

        Only the users listed reach it; everyone else gets 404 ``notFound``, as Google answers for a
        calendar the caller cannot see.
        """
        with self._lock:
            self.calendars[calendar_id] = dict(acl)

    def revoke_tokens(self) -> None:
        """Invalidate every access token issued so far (the next API call answers 401)."""
        with self._lock:
            self.tokens.clear()

    def purge_deleted(self) -> None:
        """Let deleted events "eventually disappear" (GET answers 404); their ids stay taken (409)."""
        with self._lock:
            for key in [k for k, event in self.events.items() if event["status"] == "cancelled"]:
                del self.events[key]

    def reset(self) -> None:
        """Forget events, tokens, notifications and faults (registered credentials and calendars stay)."""
        super().reset()
        with self._lock:
            self.tokens.clear()
            self.events.clear()
            self.taken_ids.clear()
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
        self.route("GET", EVENTS_PATH, self._api(self._list, write=False))
        self.route("POST", EVENTS_PATH, self._api(self._insert, write=True))
        self.route("GET", EVENT_PATH, self._api(self._get, write=False))
        self.route("PATCH", EVENT_PATH, self._api(self._patch, write=True))
        self.route("PUT", EVENT_PATH, self._api(self._update, write=True))
        self.route("DELETE", EVENT_PATH, self._api(self._delete, write=True))

    def _dispatch(self, request: httpx.Request) -> httpx.Response:
        """Route on the raw path, decoding each captured segment once; anything else is Google's 404."""
        raw = request.url.raw_path.decode("ascii").split("?", 1)[0]
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(raw)
            if match is not None and method == request.method.upper():
                groups = {name: unquote(value) for name, value in match.groupdict().items()}
                with self._lock:
                    return handler(request, **groups)
        return self.not_found(request)

    def not_found(self, request: httpx.Request) -> httpx.Response:
        """Unknown paths and methods answer Google's 404 shape."""
        return google_error(404, "notFound", "Not Found")

    def _api(self, handler: Any, *, write: bool) -> Any:
        """Wrap an events handler: bearer token, scope, calendar access, Google's error shape."""

        def answer(request: httpx.Request, calendar_id: str, **path: str) -> httpx.Response:
            token = self._authorised(request)
            if token is None:
                return _auth_error()
            if not token.scopes() & (WRITE_SCOPES if write else READ_SCOPES):
                return google_error(
                    403, "insufficientPermissions", "Request had insufficient authentication scopes."
                )
            calendar = token.subject if calendar_id == "primary" else calendar_id
            role = self._role(token.subject, calendar)
            if role not in READER_ROLES:
                return google_error(404, "notFound", "Not Found")
            if write and role not in WRITER_ROLES:
                return google_error(
                    403, "requiredAccessLevel", "You need to have writer access to this calendar."
                )
            try:
                response: httpx.Response = handler(request, token, calendar, role, **path)
            except GoogleError as error:
                return error.response
            return response

        return answer

    def _role(self, user: str, calendar_id: str) -> str | None:
        acl = self.calendars.get(calendar_id)
        if acl is None:
            return "owner" if calendar_id == user else "writer"
        return acl.get(user)

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
    def _insert(
        self, request: httpx.Request, token: IssuedToken, calendar_id: str, role: str
    ) -> httpx.Response:
        send_updates = _send_updates(request)
        _boolean(request, "sendNotifications")
        body = _body(request)
        _validate_event(body)
        event_id = body.get("id")
        if event_id is None:
            event_id = secrets.token_hex(13)
        elif not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
            raise GoogleError(400, "invalid", "Invalid resource id value.")
        if (calendar_id, event_id) in self.taken_ids:
            raise GoogleError(409, "duplicate", "The requested identifier already exists.")
        self.send_updates_seen.append(send_updates)
        attendees = body.get("attendees")
        if attendees:
            self.inserts_with_attendees += 1
            self._notify(event_id, attendees, send_updates)
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
        self.taken_ids.add((calendar_id, event_id))
        return json_response(200, copy.deepcopy(event))

    def _get(
        self, request: httpx.Request, token: IssuedToken, calendar_id: str, role: str, event_id: str
    ) -> httpx.Response:
        return json_response(200, self._shown(self._event(calendar_id, event_id)))

    def _list(
        self, request: httpx.Request, token: IssuedToken, calendar_id: str, role: str
    ) -> httpx.Response:
        show_deleted = _boolean(request, "showDeleted")
        max_results = min(_integer(request, "maxResults", default=250, minimum=1), 2500)
        offset = _page_token(request)
        wanted = [_property(value) for value in request.url.params.get_list("privateExtendedProperty")]
        matching = []
        for (calendar, _), event in self.events.items():  # insertion order: oldest first
            if calendar != calendar_id or (event["status"] == "cancelled" and not show_deleted):
                continue
            private = (event.get("extendedProperties") or {}).get("private") or {}
            if all(private.get(name) == value for name, value in wanted):
                matching.append(self._shown(event))
        page = matching[offset : offset + max_results]
        answer: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": f'"{next(self._sequence)}"',
            "summary": calendar_id,
            "updated": _rfc3339_now(),
            "timeZone": "UTC",
            "accessRole": role,
            "defaultReminders": [],
            "items": page,
        }
        if offset + max_results < len(matching):
            answer["nextPageToken"] = base64.urlsafe_b64encode(str(offset + max_results).encode()).decode()
        else:
            answer["nextSyncToken"] = secrets.token_urlsafe(12)
        return json_response(200, answer)

    def _patch(
        self, request: httpx.Request, token: IssuedToken, calendar_id: str, role: str, event_id: str
    ) -> httpx.Response:
        return self._change(request, calendar_id, event_id, replace_all=False)

    def _update(
        self, request: httpx.Request, token: IssuedToken, calendar_id: str, role: str, event_id: str
    ) -> httpx.Response:
        return self._change(request, calendar_id, event_id, replace_all=True)

    def _change(
        self, request: httpx.Request, calendar_id: str, event_id: str, *, replace_all: bool
    ) -> httpx.Response:
        send_updates = _send_updates(request)
        body = _body(request)
        event = self._event(calendar_id, event_id)
        if "id" in body and body["id"] != event_id:
            raise GoogleError(400, "invalid", "Invalid resource id value.")
        kept = {k: event[k] for k in ("kind", "id", "htmlLink", "created", "creator", "organizer", "iCalUID")}
        changed = {**kept, **body} if replace_all else _merge(event, body)
        _validate_event(changed)
        changed.update(kept)
        changed["updated"] = _rfc3339_now()
        changed["etag"] = f'"{next(self._sequence)}"'
        changed["sequence"] = int(event.get("sequence", 0)) + 1
        changed.setdefault("status", "confirmed")
        if changed.get("attendees"):
            self._notify(event_id, changed["attendees"], send_updates)
        self.events[(calendar_id, event_id)] = changed
        return json_response(200, copy.deepcopy(changed))

    def _delete(
        self, request: httpx.Request, token: IssuedToken, calendar_id: str, role: str, event_id: str
    ) -> httpx.Response:
        send_updates = _send_updates(request)
        _boolean(request, "sendNotifications")
        event = self._event(calendar_id, event_id)
        if event["status"] == "cancelled":
            raise GoogleError(410, "deleted", "Resource has been deleted")
        if event.get("attendees"):
            self._notify(event_id, event["attendees"], send_updates)
        event["status"] = "cancelled"
        event["updated"] = _rfc3339_now()
        event["etag"] = f'"{next(self._sequence)}"'
        return httpx.Response(204)

    # -- helpers ---------------------------------------------------------------------------
    def _event(self, calendar_id: str, event_id: str) -> dict[str, Any]:
        event = self.events.get((calendar_id, event_id))
        if event is None:
            raise GoogleError(404, "notFound", "Not Found")
        return event

    def _shown(self, event: dict[str, Any]) -> dict[str, Any]:
        """An event as answered: a deleted one keeps only what Google guarantees unless details are kept."""
        if event["status"] == "cancelled" and not self.deleted_details:
            return {key: event[key] for key in _DELETED_KEEPS if key in event}
        return copy.deepcopy(event)

    def _notify(self, event_id: str, attendees: Any, send_updates: str | None) -> None:
        if send_updates in ("all", "externalOnly") and isinstance(attendees, list):
            recipients = [str(a.get("email")) for a in attendees if isinstance(a, dict)]
            self.notifications.append(Notification(event_id, send_updates, recipients))

    def _html_link(self, calendar_id: str, event_id: str) -> str:
        # Google's htmlLink carries eid = base64("<eventId> <calendarId>").
        eid = base64.urlsafe_b64encode(f"{event_id} {calendar_id}".encode()).decode("ascii").rstrip("=")
        return f"{self.html_base}?eid={eid}"


# -- request checks (module-private) ------------------------------------------------------------
def _invalid_parameter(name: str, value: str, expected: str) -> GoogleError:
    return GoogleError(
        400,
        "invalidParameter",
        f"Invalid value '{value[:64]}'. Values must match the following regular expression: '{expected}'",
        location=name,
    )


def _send_updates(request: httpx.Request) -> str | None:
    value: str | None = request.url.params.get("sendUpdates")
    if value is not None and value not in SEND_UPDATES:
        raise _invalid_parameter("sendUpdates", value, "(" + "|".join(SEND_UPDATES) + ")")
    return value


def _boolean(request: httpx.Request, name: str) -> bool:
    value: str | None = request.url.params.get(name)
    if value is None:
        return False
    if value not in ("true", "false"):
        raise _invalid_parameter(name, value, "(true|false)")
    return value == "true"


def _integer(request: httpx.Request, name: str, *, default: int, minimum: int) -> int:
    value = request.url.params.get(name)
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or int(value) < minimum:
        raise GoogleError(400, "invalid", f"Invalid value '{value[:32]}' for {name}.", location=name)
    return int(value)


def _page_token(request: httpx.Request) -> int:
    token = request.url.params.get("pageToken")
    if token is None:
        return 0
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode())
    except (ValueError, binascii.Error):
        raise GoogleError(400, "invalid", "Invalid page token value.", location="pageToken") from None


def _property(value: str) -> tuple[str, str]:
    name, sep, wanted = value.partition("=")
    if not sep or not name:
        raise GoogleError(
            400, "invalid", "Invalid extended property filter.", location="privateExtendedProperty"
        )
    return name, wanted


def _body(request: httpx.Request) -> dict[str, Any]:
    try:
        body = json.loads(request.content) if request.content else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise GoogleError(400, "parseError", "Parse Error")
    return body


def _validate_event(body: Mapping[str, Any]) -> None:
    """What Google refuses in an event body, for every field the connectors send."""
    for name in _STRING_FIELDS:
        if name in body and not isinstance(body[name], str):
            raise GoogleError(
                400, "invalid", f"Invalid value for: {name}", location=name, location_type="body"
            )
    if "status" in body and body["status"] not in _EVENT_STATUSES:
        raise GoogleError(
            400, "invalid", "Invalid value for: status", location="status", location_type="body"
        )
    moments = [_moment(body.get(edge), edge) for edge in ("start", "end")]
    if moments[1] < moments[0]:
        raise GoogleError(400, "timeRangeEmpty", "The specified time range is empty.", domain="calendar")
    _validate_properties(body.get("extendedProperties"))


def _moment(value: Any, edge: str) -> float:
    if not isinstance(value, dict) or not (value.get("dateTime") or value.get("date")):
        raise GoogleError(400, "required", f"Missing {edge} time.")
    if value.get("dateTime"):
        text = str(value["dateTime"])
        match = _DATE_TIME.fullmatch(text)
        if match is None:
            raise GoogleError(400, "invalid", f"Invalid {edge} time.")
        if match["offset"] is None and not value.get("timeZone"):
            raise GoogleError(400, "required", f"Missing time zone definition for {edge} time.")
        try:
            moment = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise GoogleError(400, "invalid", f"Invalid {edge} time.") from None
        if moment.tzinfo is None:
            try:
                moment = moment.replace(tzinfo=ZoneInfo(str(value["timeZone"])))
            except (ValueError, OSError, ZoneInfoNotFoundError):
                raise GoogleError(400, "invalid", f"Invalid time zone definition for {edge} time.") from None
        return moment.timestamp()
    text = str(value["date"])
    try:
        if not _DATE.fullmatch(text):
            raise ValueError(text)
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise GoogleError(400, "invalid", f"Invalid {edge} time.") from None


def _validate_properties(properties: Any) -> None:
    if properties is None:
        return
    if not isinstance(properties, dict) or set(properties) - {"private", "shared"}:
        raise GoogleError(400, "invalid", "Invalid extended properties.", location="extendedProperties")
    count = total = 0
    for values in properties.values():
        if not isinstance(values, dict):
            raise GoogleError(400, "invalid", "Invalid extended properties.", location="extendedProperties")
        for key, value in values.items():
            if (
                not isinstance(value, str)
                or len(key) > PROPERTY_KEY_LIMIT
                or len(value) > PROPERTY_VALUE_LIMIT
            ):
                raise GoogleError(
                    400, "invalid", "Invalid extended property value.", location="extendedProperties"
                )
            count += 1
            total += len(key) + len(value)
    if count > PROPERTY_COUNT_LIMIT or total > PROPERTY_TOTAL_LIMIT:
        raise GoogleError(
            400, "invalid", "Extended properties exceed the limits.", location="extendedProperties"
        )


def _merge(event: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Patch semantics: objects merge recursively, every other value (arrays included) replaces."""
    merged = copy.deepcopy(dict(event))
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _auth_error() -> httpx.Response:
    return google_error(
        401,
        "authError",
        "Invalid Credentials",
        location="Authorization",
        location_type="header",
        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
    )


def _oauth_error(code: str, description: str) -> httpx.Response:
    return json_response(400, {"error": code, "error_description": description})


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _rfc3339_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
