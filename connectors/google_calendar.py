"""Google Calendar connector: ``calendar.draft_meeting`` as a DRAFT that notifies nobody.

One step, ``draft_meeting``: ``events.insert`` on the draft calendar (the block's ``draft_calendar_id``,
else the intent's organizer) with ``sendUpdates=none`` and WITHOUT ``attendees`` — the proposed attendees
are written into the description and into ``extendedProperties.private``, so no invitation can go out.

Whom the requests act as is operator configuration, never the intent's: in ``service_account`` mode
(domain-wide delegation) the block's ``subject`` is the one user impersonated, and a block without it is
refused (``NotConfigured``) before anything is sent; in ``oauth_refresh_token`` mode the refresh token's
user. The organizer only names the calendar, percent-encoded as ONE path segment (``/``, ``?``, ``#``,
``%`` and dot-only segments such as ``..`` included), so it can never change the request path; Google's
ACLs decide whether the configured user may write there.

Idempotency by construction (ARCHITECTURE §2): the event ``id`` is chosen by us, base32hex of
sha256(idempotency key) — Google allows client ids of base32hex characters (a-v, 0-9), 5–1024 long
(https://developers.google.com/workspace/calendar/api/v3/reference/events#id). A repeated insert answers
409 ``duplicate`` ("The requested identifier already exists."); we then GET the event and look at its
``status`` FIRST: a deleted event is "only guaranteed to have the id field populated" (Event.status in the
Calendar v3 discovery document), so its content proves nothing. A live event is reused when its
``fulfill_intent_key`` matches; a deleted one means an earlier attempt of this very step (same key, same
generation) created the draft and someone deleted it since — it is NOT recreated (``Conflict``
``deleted``): a person's deletion is not overridden silently. Our own compensation never meets this:
a compensated failure reruns under a new generation, hence a new key and a new event id. Google warns it
"cannot guarantee that ID collisions will be detected at event creation time", so :meth:`lookup` always
confirms with a GET by id, and reads a deleted event as "nothing to find" (the same status-first rule).

:meth:`check` reads, never writes: the block's fields for its auth mode, the impersonated user, and
``events.list`` (``maxResults=1``) on the draft calendar (else the user's ``primary``), whose
``accessRole`` must be ``writer`` or ``owner``. The result is cached on the connector; :meth:`execute`
refuses with ``NotConfigured`` (naming what to set up) when it disabled the action type.

Validation is the contract schema (:func:`connectors.base.validate_contract`: lengths, RFC 3339 times
with an offset, end after start, at most 50 attendee emails, unknown keys) plus what Google needs beyond
it: a title that is not blank, an organizer that is ``primary`` or an email-form calendar id, at most
nine fractional-second digits and attendee addresses of a stricter form.

Deleted events stay readable with ``status: "cancelled"`` ("The get method always returns them");
deleting one again answers 410 ``deleted`` ("Resource has been deleted") — both count as already undone.
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
from enum import StrEnum
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from blocks.google_calendar import GoogleCalendarCredentials
from connectors.base import (
    Connector,
    ConnectorCheck,
    ExternalRef,
    Guarantee,
    Precondition,
    ProviderRequest,
    StepCall,
    StepResult,
    validate_contract,
)
from connectors.errors import Conflict, NotConfigured, NotFound, RateLimitedError, ValidationRejected
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
#: The calendar :meth:`GoogleCalendarConnector.check` reads when the block names no draft calendar.
PRIMARY = "primary"
#: ``accessRole`` values that may insert and delete events (Events.accessRole in the discovery document).
WRITER_ROLES = frozenset({"writer", "owner"})

# Stricter than the contract, which allows any number of fractional-second digits.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|z|[+-]\d{2}:\d{2})$")
_EMAIL = re.compile(r"^[^@\s,;<>\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")
_EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")


class Found(StrEnum):
    """What a GET by our deterministic event id found, read status first."""

    OURS = "a live event holding this step's key"
    DELETED = "a deleted event (only its id is guaranteed)"
    FOREIGN = "a live event holding another key"


def event_id_for(idempotency_key: str) -> str:
    """The deterministic Google event id of one step: base32hex(sha256(key)), lowercase, unpadded.

    Args:
        idempotency_key: The step's idempotency key.

    Returns:
        52 characters from ``a-v0-9`` — a valid client-supplied event id.
    """
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).digest()
    return base64.b32hexencode(digest).decode("ascii").rstrip("=").lower()


def path_segment(value: str) -> str:
    """``value`` percent-encoded as exactly ONE URL path segment.

    Every reserved character is encoded (``/``, ``?``, ``#``, ``%``, ``@``…); a segment made only of dots
    (``.``, ``..``) is encoded too (``%2E``), since clients and servers remove dot segments
    (RFC 3986 §5.2.4) and it would otherwise climb out of its place in the path.

    Raises:
        ValidationRejected: ``value`` is empty (an empty segment would change the path too).
    """
    if not value:
        raise ValidationRejected("calendar id: must not be empty")
    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if set(encoded) == {"."} else encoded


class GoogleCalendarConnector(Connector):
    """Drafts meetings in Google Calendar without inviting anyone.

    Args:
        client: The block's ``get_client()``, or any client (tests pass one with a mock transport): when it
            has no auth of its own, the block's ``auth()`` is used. URLs are absolute, taken from the
            credentials block, so its ``base_url`` is not used. In service-account mode each request names
            the block's ``subject`` as the user it acts as (``blocks.auth.SUBJECT``) — never the intent's
            organizer.
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
        self._checked: ConnectorCheck | None = None

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
        organizer = params["organizer"]
        if organizer != PRIMARY and not _EMAIL.fullmatch(organizer):
            raise ValidationRejected("parameters.organizer: must be 'primary' or an email-form calendar id")
        for index, email in enumerate(params.get("attendees") or []):
            if not _EMAIL.fullmatch(email):
                raise ValidationRejected(f"parameters.attendees[{index}]: not a valid email address")

    # -- self-check ------------------------------------------------------------------------
    def check(self) -> ConnectorCheck:
        """Read (never write) what drafting relies on; the result is cached for :meth:`execute`.

        Preconditions, in order (a failed one stops the reads after it): the block has every field its
        ``auth_mode`` needs; in service-account mode it names the user to act as (``subject``); the
        calendar drafts go to (``draft_calendar_id``, else the user's ``primary``) answers
        ``events.list`` as that user; and its ``accessRole`` there is ``writer`` or ``owner``.

        Raises:
            ConnectorError: Google could not be read (credentials refused, network, outage).
        """
        found: list[Precondition] = []
        credentials = self._credentials
        # subject has its own precondition below, with the sentence that explains it.
        missing = [name for name in credentials.missing_fields() if name != "subject"]
        found.append(
            _precondition(
                f"the block has every field auth_mode {credentials.auth_mode!r} needs",
                not missing,
                f"Set {', '.join(missing)} on the Google Calendar credentials block." if missing else "",
            )
        )
        if not missing:
            problem = _subject_problem(credentials)
            found.append(
                _precondition(
                    "the block names the user fulfill acts as (subject; never the intent's organizer)",
                    problem is None,
                    problem or "",
                )
            )
        if all(p.ok for p in found):
            found.extend(self._check_calendar())
        enabled = all(p.ok for p in found if p.required)
        checked = ConnectorCheck(
            system=self.system,
            preconditions=tuple(found),
            guarantees={ACTION_TYPE: Guarantee.PROVIDER_KEY if enabled else Guarantee.DISABLED},
        )
        self._checked = checked
        return checked

    def _check_calendar(self) -> list[Precondition]:
        calendar_id = self._credentials.draft_calendar_id or PRIMARY
        who = self._credentials.subject if self._credentials.auth_mode == "service_account" else None
        as_whom = who or "the refresh token's user"
        try:
            # https://developers.google.com/workspace/calendar/api/v3/reference/events/list
            response = self._http.send(
                ProviderRequest(
                    "GET",
                    self._events_url(calendar_id),
                    "GET events (check)",
                    False,
                    params={"maxResults": "1"},
                    subject=who,
                )
            )
        except NotConfigured as exc:  # e.g. a private key that does not parse: configuration, not outage
            return [_precondition("the block's credentials can be used", False, f"{exc.detail}.")]
        reachable = response.status_code not in (403, 404)
        where = f"calendar {calendar_id!r}"
        results = [
            _precondition(
                f"{where} is reachable as {as_whom}",
                reachable,
                ""
                if reachable
                else f"Share {where} with {as_whom}, or set draft_calendar_id to a calendar it can reach.",
            )
        ]
        if not reachable:
            return results
        _raise_for_status(response)
        role = _json(response).get("accessRole")
        may_write = role in WRITER_ROLES
        results.append(
            _precondition(
                f"{as_whom} may write events on {where} (accessRole writer or owner)",
                may_write,
                ""
                if may_write
                else f"Give {as_whom} 'Make changes to events' on {where} (its access role is "
                f"{str(role)[:32]!r}).",
            )
        )
        if not self._credentials.draft_calendar_id:
            results.append(
                Precondition(
                    "drafts go to each intent's organizer calendar: the user needs write access to each "
                    "(Google checks it per draft)",
                    True,
                    frozenset({ACTION_TYPE}),
                    required=False,
                )
            )
        return results

    def _require_enabled(self) -> None:
        """Refuse before any write when the configuration or the cached :meth:`check` disabled drafting."""
        self._subject()
        checked = self._checked
        if checked is not None and not checked.enabled(ACTION_TYPE):
            problems = " ".join(checked.problems(ACTION_TYPE)) or "Run `fulfill tenant check`."
            raise NotConfigured(f"{ACTION_TYPE} is not enabled for this tenant: {problems}")

    # -- the step --------------------------------------------------------------------------
    def execute(self, call: StepCall) -> StepResult:
        """Insert the draft event with our deterministic id; a 409 duplicate is reconciled by GET.

        Raises:
            NotConfigured: the block lacks the user to act as, or :meth:`check` disabled drafting.
            Conflict: the id is held by another event, or the draft was created and deleted since.
            ConnectorError: classified transient or permanent.
        """
        _require_step(call)
        self._require_enabled()
        calendar_id = self._calendar_id(call.params)
        event_id = event_id_for(call.idempotency_key)
        response = self._http.send(self._insert(call))
        if response.status_code != 409:
            _raise_for_status(response)
            return self._result(call, calendar_id, _json(response), created=True)
        existing = self._get_event(calendar_id, event_id)
        if existing is None:
            raise Conflict(
                "Google Calendar reported the draft's id as taken but the event cannot be read",
                status_code=409,
                provider_code="duplicate",
            )
        found = _found(existing, call.idempotency_key)
        if found is Found.DELETED:
            raise Conflict(
                f"the draft event {event_id} was created by an earlier attempt of this step and has been "
                "deleted in Google Calendar since; it is not recreated (approve a new intent to draft it "
                "again)",
                seller_message=(
                    "This meeting draft was created earlier and then deleted in Google Calendar, so it "
                    "was not created again."
                ),
                status_code=409,
                provider_code="deleted",
            )
        if found is Found.FOREIGN:
            raise Conflict(
                "another event already holds this draft's id", status_code=409, provider_code="duplicate"
            )
        return self._result(call, calendar_id, existing, created=False)

    def lookup(self, call: StepCall) -> StepResult | None:
        """GET the event by its deterministic id, status first: missing or deleted is ``None``.

        Raises:
            Conflict: a live event with this id exists but was not made by this step.
        """
        _require_step(call)
        calendar_id = self._calendar_id(call.params)
        event = self._get_event(calendar_id, event_id_for(call.idempotency_key))
        if event is None:
            return None
        found = _found(event, call.idempotency_key)
        if found is Found.DELETED:
            return None
        if found is Found.FOREIGN:
            raise Conflict("an event holds this draft's id but was not made by this step", status_code=200)
        return self._result(call, calendar_id, event, created=False)

    def compensate(self, call: StepCall, result: StepResult) -> None:
        """Delete the draft with ``sendUpdates=none``, as the configured user; 404/410 mean it is already gone.

        Raises:
            ValidationRejected: the recorded id is not an event id this connector makes.
        """
        calendar_id = str(result.undo.get("calendar_id") or self._calendar_id(call.params))
        if not _EVENT_ID.fullmatch(result.ref.id):
            raise ValidationRejected("result.ref.id: not a Google event id made by fulfill")
        # https://developers.google.com/workspace/calendar/api/v3/reference/events/delete
        response = self._http.send(
            ProviderRequest(
                "DELETE",
                f"{self._events_url(calendar_id)}/{path_segment(result.ref.id)}",
                "DELETE event",
                True,
                params={"sendUpdates": "none"},
                subject=self._subject(),
            )
        )
        if response.status_code in (404, 410):
            return
        _raise_for_status(response)

    def describe(self, call: StepCall) -> list[ProviderRequest]:
        """The insert of the draft, as the configured user. No I/O.

        Raises:
            NotConfigured: the block lacks the user to act as.
        """
        _require_step(call)
        note = (
            "a 409 duplicate reads the event back by its id: a live event holding this step's key is "
            "reused; a deleted one is not recreated"
        )
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
            subject=self._subject(),
        )

    def _calendar_id(self, params: Mapping[str, Any]) -> str:
        return self._credentials.draft_calendar_id or str(params["organizer"])

    def _subject(self) -> str | None:
        """The user requests act as: the block's ``subject`` (service account), else none to name.

        Raises:
            NotConfigured: service-account mode without ``subject`` — the intent never chooses it.
        """
        problem = _subject_problem(self._credentials)
        if problem is not None:
            raise NotConfigured(problem)
        return self._credentials.subject if self._credentials.auth_mode == "service_account" else None

    def _events_url(self, calendar_id: str) -> str:
        base = self._credentials.api_base_url.rstrip("/")
        return f"{base}/calendar/v3/calendars/{path_segment(calendar_id)}/events"

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

    def _get_event(self, calendar_id: str, event_id: str) -> dict[str, Any] | None:
        # https://developers.google.com/workspace/calendar/api/v3/reference/events/get
        response = self._http.send(
            ProviderRequest(
                "GET",
                f"{self._events_url(calendar_id)}/{path_segment(event_id)}",
                "GET event",
                False,
                subject=self._subject(),
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
        undo: dict[str, Any] = {"calendar_id": calendar_id}
        subject = self._subject()
        if subject:
            undo["subject"] = subject
        return StepResult(
            ref=ExternalRef(system=self.system, object="event", id=event_id, url=str(link) if link else None),
            created=created,
            undo=undo,
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


def _subject_problem(credentials: GoogleCalendarCredentials) -> str | None:
    """The sentence saying what to set when service-account mode names no user to act as, else ``None``."""
    if credentials.auth_mode != "service_account" or (credentials.subject or "").strip():
        return None
    return (
        "The Google Calendar block uses a service account with domain-wide delegation but names no user "
        "to act as: set its subject to the Workspace user the drafts are written as (fulfill never "
        "impersonates the intent's organizer), and draft_calendar_id to a calendar that user may write."
    )


def _precondition(name: str, ok: bool, fix: str) -> Precondition:
    return Precondition(name=name, ok=ok, action_types=frozenset({ACTION_TYPE}), fix="" if ok else fix)


def _found(event: Mapping[str, Any], idempotency_key: str) -> Found:
    """Classify an event read by our id: its ``status`` first, its content only when it is live."""
    if event.get("status") == "cancelled":
        key = _intent_key(event)
        # A deleted event may carry nothing but its id; one that still names ANOTHER key is not ours.
        return Found.FOREIGN if key is not None and key != idempotency_key else Found.DELETED
    return Found.OURS if _intent_key(event) == idempotency_key else Found.FOREIGN


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
    properties = event.get("extendedProperties")
    private = properties.get("private") if isinstance(properties, dict) else None
    value = private.get(KEY_PROPERTY) if isinstance(private, dict) else None
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
