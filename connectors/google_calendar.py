"""Google Calendar connector: ``calendar.draft_meeting`` as a DRAFT that notifies nobody.

One step, ``draft_meeting``: ``events.insert`` on the draft calendar (the block's ``draft_calendar_id``,
else the intent's organizer) with ``sendUpdates=none`` and WITHOUT ``attendees`` — the proposed attendees
are written into the description and into ``extendedProperties.private``, so no invitation can go out.

Idempotency by construction (ARCHITECTURE §2): the event ``id`` is chosen by us, base32hex of
sha256(idempotency key) — Google allows client ids of base32hex characters (a-v, 0-9), 5–1024 long
(https://developers.google.com/workspace/calendar/api/v3/reference/events#id). A repeated insert answers
409 ``duplicate`` ("The requested identifier already exists."); we then GET the event and reuse it when
its ``fulfill_intent_key`` matches. Google warns it "cannot guarantee that ID collisions will be detected
at event creation time", so :meth:`lookup` always confirms with a GET by id.

Validation is the contract schema (:func:`connectors.base.validate_contract`: lengths, RFC 3339 times
with an offset, end after start, at most 50 attendee emails, unknown keys) plus what Google needs beyond
it: a title that is not blank, an organizer without whitespace, at most nine fractional-second digits and
attendee addresses of a stricter form.

Deleted events stay readable with ``status: "cancelled"``; deleting one again answers 410 ``deleted``
("Resource has been deleted") — both count as already undone.
Errors: https://developers.google.com/workspace/calendar/api/guides/errors
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from blocks.google_calendar import GoogleCalendarCredentials
from connectors.base import Connector, ExternalRef, ProviderRequest, StepCall, StepResult, validate_contract
from connectors.errors import Conflict, NotFound, RateLimitedError, ValidationRejected
from connectors.http import ProviderClient, error_class_for_status, json_object, json_or_none, retry_after

ACTION_TYPE = "calendar.draft_meeting"
STEP = "draft_meeting"
KEY_PROPERTY = "fulfill_intent_key"
INTENT_PROPERTY = "fulfill_action_intent_id"
ATTENDEES_PROPERTY = "fulfill_proposed_attendees"
# Extended property values are limited to 1024 characters each
# (https://developers.google.com/workspace/calendar/api/guides/extended-properties#limits).
PROPERTY_VALUE_LIMIT = 1024
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
PROVIDER = "Google Calendar"

# Stricter than the contract, which allows any number of fractional-second digits.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|z|[+-]\d{2}:\d{2})$")
_EMAIL = re.compile(r"^[^@\s,;<>\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")


def event_id_for(idempotency_key: str) -> str:
    """The deterministic Google event id of one step: base32hex(sha256(key)), lowercase, unpadded.

    Args:
        idempotency_key: The step's idempotency key.

    Returns:
        52 characters from ``a-v0-9`` — a valid client-supplied event id.
    """
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).digest()
    return base64.b32hexencode(digest).decode("ascii").rstrip("=").lower()


class GoogleCalendarConnector(Connector):
    """Drafts meetings in Google Calendar without inviting anyone.

    Args:
        client: The block's ``get_client()``, or any client (tests pass one with a mock transport): when it
            has no auth of its own, the block's ``auth()`` is used. URLs are absolute, taken from the
            credentials block, so its ``base_url`` is not used. Each request names the user it acts as
            (``blocks.auth.SUBJECT``): the block's ``subject``, else the intent's organizer.
        credentials: The tenant's :class:`GoogleCalendarCredentials` block.
        clock: Seconds since the epoch, injectable for token-expiry tests.
    """

    system: ClassVar[str] = "google_calendar"
    action_types: ClassVar[frozenset[str]] = frozenset({ACTION_TYPE})

    def __init__(
        self,
        client: httpx.Client,
        credentials: GoogleCalendarCredentials,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = ProviderClient(client, credentials, provider=PROVIDER, clock=clock)
        self._credentials = credentials

    # -- plan and validation ---------------------------------------------------------------
    def steps(self, action_type: str, params: Mapping[str, Any]) -> list[str]:
        """One step: ``draft_meeting``."""
        _require_action(action_type)
        return [STEP]

    def validate(self, action_type: str, params: Mapping[str, Any]) -> None:
        """Check a draft meeting's parameters against the contract, then Google's forms; no I/O.

        Raises:
            ValidationRejected: naming the field, e.g. ``parameters.end: must be after start``.
        """
        _require_action(action_type)
        validate_contract(action_type, params)
        if not params["title"].strip():
            raise ValidationRejected("parameters.title: must be a non-empty string")
        for field in ("start", "end"):
            if not _RFC3339.fullmatch(params[field]):
                raise ValidationRejected(f"parameters.{field}: must be an RFC 3339 date-time with an offset")
        if any(c.isspace() for c in params["organizer"]):
            raise ValidationRejected("parameters.organizer: must be a calendar id or email address")
        for index, email in enumerate(params.get("attendees") or []):
            if not _EMAIL.fullmatch(email):
                raise ValidationRejected(f"parameters.attendees[{index}]: not a valid email address")

    # -- the step --------------------------------------------------------------------------
    def execute(self, call: StepCall) -> StepResult:
        """Insert the draft event with our deterministic id; a 409 duplicate is reconciled by GET.

        Raises:
            ConnectorError: classified transient or permanent.
        """
        _require_step(call)
        calendar_id = self._calendar_id(call.params)
        event_id = event_id_for(call.idempotency_key)
        response = self._http.send(self._insert(call))
        if response.status_code == 409:
            existing = self._get_event(calendar_id, event_id, subject=self._subject(call.params))
            if existing is None:
                raise Conflict(
                    "Google Calendar reported the draft's id as taken but the event cannot be read",
                    status_code=409,
                    provider_code="duplicate",
                )
            if _intent_key(existing) != call.idempotency_key:
                raise Conflict(
                    "another event already holds this draft's id", status_code=409, provider_code="duplicate"
                )
            if existing.get("status") == "cancelled":
                raise Conflict(
                    "this draft was created and then deleted; a new generation is needed",
                    status_code=409,
                    provider_code="deleted",
                )
            return self._result(call, calendar_id, existing, created=False)
        _raise_for_status(response)
        return self._result(call, calendar_id, _json(response), created=True)

    def lookup(self, call: StepCall) -> StepResult | None:
        """GET the event by its deterministic id; a missing, deleted or foreign event is ``None``/Conflict.

        Raises:
            Conflict: an event with this id exists but was not made by this step.
        """
        _require_step(call)
        calendar_id = self._calendar_id(call.params)
        event = self._get_event(
            calendar_id, event_id_for(call.idempotency_key), subject=self._subject(call.params)
        )
        if event is None or event.get("status") == "cancelled":
            return None
        if _intent_key(event) != call.idempotency_key:
            raise Conflict("an event holds this draft's id but was not made by this step", status_code=200)
        return self._result(call, calendar_id, event, created=False)

    def compensate(self, call: StepCall, result: StepResult) -> None:
        """Delete the draft with ``sendUpdates=none``; 404/410 mean it is already gone."""
        calendar_id = str(result.undo.get("calendar_id") or self._calendar_id(call.params))
        # https://developers.google.com/workspace/calendar/api/v3/reference/events/delete
        response = self._http.send(
            ProviderRequest(
                "DELETE",
                f"{self._events_url(calendar_id)}/{quote(result.ref.id, safe='')}",
                "DELETE event",
                True,
                params={"sendUpdates": "none"},
                subject=str(result.undo.get("subject") or self._subject(call.params)),
            )
        )
        if response.status_code in (404, 410):
            return
        _raise_for_status(response)

    def describe(self, call: StepCall) -> list[ProviderRequest]:
        """The insert of the draft, as the calendar's owner (the impersonated user). No I/O."""
        _require_step(call)
        note = "a 409 duplicate reads the event back by its id and reuses it when it holds this step's key"
        return [replace(self._insert(call), note=note)]

    # -- building blocks -------------------------------------------------------------------
    def _insert(self, call: StepCall) -> ProviderRequest:
        # https://developers.google.com/workspace/calendar/api/v3/reference/events/insert
        return ProviderRequest(
            "POST",
            self._events_url(self._calendar_id(call.params)),
            "POST event",
            True,
            params={"sendUpdates": "none"},
            body=self._event_body(call, event_id_for(call.idempotency_key)),
            subject=self._subject(call.params),
        )

    def _calendar_id(self, params: Mapping[str, Any]) -> str:
        return self._credentials.draft_calendar_id or str(params["organizer"])

    def _subject(self, params: Mapping[str, Any]) -> str:
        return self._credentials.subject or str(params["organizer"])

    def _events_url(self, calendar_id: str) -> str:
        base = self._credentials.api_base_url.rstrip("/")
        return f"{base}/calendar/v3/calendars/{quote(calendar_id, safe='')}/events"

    def _event_body(self, call: StepCall, event_id: str) -> dict[str, Any]:
        params = call.params
        attendees = [str(a) for a in params.get("attendees") or []]
        private = {KEY_PROPERTY: call.idempotency_key, INTENT_PROPERTY: call.action_intent_id}
        private.update(_chunked(ATTENDEES_PROPERTY, ", ".join(attendees)))
        body: dict[str, Any] = {
            "id": event_id,
            "summary": params["title"],
            "description": _description(params.get("description"), attendees),
            "start": {"dateTime": params["start"]},
            "end": {"dateTime": params["end"]},
            # No "attendees" key: a draft invites nobody.
            "extendedProperties": {"private": private},
        }
        if params.get("location"):
            body["location"] = params["location"]
        return body

    def _get_event(self, calendar_id: str, event_id: str, *, subject: str) -> dict[str, Any] | None:
        # https://developers.google.com/workspace/calendar/api/v3/reference/events/get
        response = self._http.send(
            ProviderRequest(
                "GET",
                f"{self._events_url(calendar_id)}/{quote(event_id, safe='')}",
                "GET event",
                False,
                subject=subject,
            )
        )
        if response.status_code in (404, 410):
            return None
        _raise_for_status(response)
        return _json(response)

    def _result(
        self, call: StepCall, calendar_id: str, event: Mapping[str, Any], *, created: bool
    ) -> StepResult:
        event_id = str(event.get("id") or event_id_for(call.idempotency_key))
        link = event.get("htmlLink")
        title = str(call.params["title"])
        when = _when(str(call.params["start"]))
        return StepResult(
            ref=ExternalRef(system=self.system, object="event", id=event_id, url=str(link) if link else None),
            created=created,
            undo={"calendar_id": calendar_id, "subject": self._subject(call.params)},
            summary=f"Drafted the meeting “{title}” ({when}) in Google Calendar; nobody was invited.",
        )


# -- helpers (module-private) -------------------------------------------------------------------
def _require_action(action_type: str) -> None:
    if action_type != ACTION_TYPE:
        raise ValidationRejected(f"action_type: {action_type!r} is not handled by Google Calendar")


def _require_step(call: StepCall) -> None:
    _require_action(call.action_type)
    if call.step != STEP:
        raise ValidationRejected(f"step: {call.step!r} is not a step of {ACTION_TYPE}")


def _when(start: str) -> str:
    moment = datetime.fromisoformat(start.replace("z", "Z"))
    return f"{moment:%b} {moment.day}, {moment:%H:%M}"


def _description(description: Any, attendees: list[str]) -> str:
    parts = [str(description).strip()] if description else []
    note = "Draft created by fulfill. Nobody has been invited."
    if attendees:
        note += f"\nProposed attendees (not invited): {', '.join(attendees)}"
    parts.append(note)
    return "\n\n".join(parts)


def _chunked(key: str, value: str) -> dict[str, str]:
    """Split a long value over ``key``, ``key_2``, … so each stays within Google's value limit."""
    if not value:
        return {}
    chunks = [value[i : i + PROPERTY_VALUE_LIMIT] for i in range(0, len(value), PROPERTY_VALUE_LIMIT)]
    return {(key if n == 0 else f"{key}_{n + 1}"): chunk for n, chunk in enumerate(chunks)}


def _intent_key(event: Mapping[str, Any]) -> str | None:
    private = (event.get("extendedProperties") or {}).get("private") or {}
    value = private.get(KEY_PROPERTY)
    return value if isinstance(value, str) else None


def _json(response: httpx.Response) -> dict[str, Any]:
    return json_object(response, provider="Google")


def _google_reason(response: httpx.Response) -> str | None:
    """The first ``error.errors[].reason`` of Google's JSON error body, if any."""
    body = json_or_none(response)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    errors = error.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        reason = errors[0].get("reason")
        if isinstance(reason, str):
            return reason[:64]
    status = error.get("status")
    return status[:64] if isinstance(status, str) else None


def _raise_for_status(response: httpx.Response) -> None:
    """Map a non-2xx Calendar API answer to the error hierarchy (the 409 path is handled by the caller)."""
    status = response.status_code
    if status < 300:
        return
    reason = _google_reason(response)
    detail = f"Google Calendar answered {status}" + (f" ({reason})" if reason else "")
    if status == 429 or (status == 403 and reason in RATE_LIMIT_REASONS):
        raise RateLimitedError(
            detail, status_code=status, provider_code=reason, retry_after=retry_after(response)
        )
    error = error_class_for_status(status, overrides={410: NotFound}, default=Conflict)
    # A 503 may say when to come back; never retry before that.
    wait = retry_after(response) if status >= 500 else None
    raise error(detail, status_code=status, provider_code=reason, retry_after=wait)
