"""Conformance cases for the Google Calendar connector, wired to the in-process emulator."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from blocks.google_calendar import GoogleCalendarCredentials
from connectors.base import Connector
from connectors.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ProviderUnavailable,
    RateLimitedError,
    ValidationRejected,
)
from connectors.google_calendar import GoogleCalendarConnector
from sandbox.base import Fault
from sandbox.google_calendar import GoogleCalendarEmulator
from tests.connectors.conformance import ConformanceCase, ErrorCase

API = "https://www.googleapis.com"
TOKEN_URI = "https://oauth2.googleapis.com/token"
SERVICE_ACCOUNT = "fulfill-drafts@acme-prod.iam.gserviceaccount.com"
ORGANIZER = "jordan@acme.example"
#: The Workspace user the service account acts as: the block's configuration, never the organizer.
SUBJECT = "drafts@acme.example"
EVENTS_PATH = r"^/calendar/v3/calendars/[^/]+/events$"

PARAMS: dict[str, Any] = {
    "title": "Renewal pricing review",
    "start": "2026-12-03T16:00:00+01:00",
    "end": "2026-12-03T16:30:00+01:00",
    "organizer": ORGANIZER,
    "attendees": ["casey@customer.example", "riley@customer.example"],
    "description": "Walk through the renewal options.",
    "location": "Zoom",
}


@lru_cache(maxsize=1)
def service_account_key() -> rsa.RSAPrivateKey:
    """One RSA key per test session (generation is the slow part)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_key_pem() -> str:
    """The session key as the PEM text a Google key file carries."""
    return (
        service_account_key()
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode("ascii")
    )


def make_credentials(**overrides: Any) -> GoogleCalendarCredentials:
    """Service-account credentials pointing at the fake Google hosts, acting as :data:`SUBJECT`."""
    values: dict[str, Any] = {
        "auth_mode": "service_account",
        "service_account_email": SERVICE_ACCOUNT,
        "private_key": private_key_pem(),
        "private_key_id": "k1",
        "subject": SUBJECT,
        "token_uri": TOKEN_URI,
        "api_base_url": API,
    }
    values.update(overrides)
    return GoogleCalendarCredentials(**values)


def make_emulator() -> GoogleCalendarEmulator:
    """An emulator that trusts the session's service account."""
    emulator = GoogleCalendarEmulator()
    emulator.add_service_account(SERVICE_ACCOUNT, service_account_key().public_key())
    return emulator


@dataclass
class GoogleCalendarEnv:
    """The connector wired to the emulator through a MockTransport."""

    emulator: GoogleCalendarEmulator = field(default_factory=make_emulator)
    connector: Connector = field(init=False)

    def __post_init__(self) -> None:
        client = httpx.Client(transport=self.emulator.transport(), base_url=API)
        self.connector = GoogleCalendarConnector(client, make_credentials())

    def observe(self) -> Any:
        return self.emulator.live_event_ids()

    def drop_next_write(self) -> None:
        self.emulator.inject(Fault(kind="drop", method="POST", path=EVENTS_PATH))

    def fail_next(self, status: int, body: Any, headers: dict[str, str]) -> None:
        self.emulator.inject(
            Fault(kind="status", method="POST", path=EVENTS_PATH, status=status, body=body, headers=headers)
        )


def _google(code: int, reason: str, message: str, domain: str = "global") -> dict[str, Any]:
    return {
        "error": {
            "errors": [{"domain": domain, "reason": reason, "message": message}],
            "code": code,
            "message": message,
        }
    }


def _env(_: Path) -> GoogleCalendarEnv:
    return GoogleCalendarEnv()


CASES = [
    ConformanceCase(
        id="google_calendar:calendar.draft_meeting:draft_meeting",
        action_type="calendar.draft_meeting",
        step="draft_meeting",
        params=PARAMS,
        make_env=_env,
        bad_params={**PARAMS, "end": "2026-12-03T15:00:00+01:00"},
        bad_field="parameters.end",
        error_cases=[
            ErrorCase(
                403,
                _google(403, "rateLimitExceeded", "Rate Limit Exceeded", "usageLimits"),
                RateLimitedError,
                id="403-rateLimitExceeded",
            ),
            ErrorCase(
                403,
                _google(403, "userRateLimitExceeded", "User Rate Limit Exceeded", "usageLimits"),
                RateLimitedError,
                id="403-userRateLimitExceeded",
            ),
            ErrorCase(
                429,
                _google(429, "rateLimitExceeded", "Rate Limit Exceeded", "usageLimits"),
                RateLimitedError,
                headers={"Retry-After": "7"},
                id="429-rateLimitExceeded",
            ),
            ErrorCase(
                403,
                _google(403, "requiredAccessLevel", "You need to have writer access to this calendar."),
                Forbidden,
                id="403-requiredAccessLevel",
            ),
            ErrorCase(
                400,
                _google(400, "timeRangeEmpty", "The specified time range is empty.", "calendar"),
                ValidationRejected,
                id="400-timeRangeEmpty",
            ),
            ErrorCase(404, _google(404, "notFound", "Not Found"), NotFound, id="404-notFound"),
            ErrorCase(
                409,
                _google(409, "duplicate", "The requested identifier already exists."),
                Conflict,
                id="409-duplicate-unreadable",
            ),
            ErrorCase(
                500, _google(500, "backendError", "Backend Error"), ProviderUnavailable, id="500-backendError"
            ),
            ErrorCase(503, _google(503, "backendError", "Backend Error"), ProviderUnavailable, id="503"),
        ],
    )
]
