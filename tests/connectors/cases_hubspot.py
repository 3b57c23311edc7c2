"""Conformance cases for the HubSpot connector, wired to the in-process emulator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from blocks.hubspot import HubSpotCredentials
from connectors.base import Connector, ConnectorCheck, ExternalRef, Guarantee
from connectors.errors import (
    AuthenticationFailed,
    Conflict,
    ConnectorError,
    Forbidden,
    NotFound,
    ProviderUnavailable,
    RateLimitedError,
    ValidationRejected,
)
from connectors.hubspot import GUARANTEE_OF, HubSpotConnector, KeyStrategy, PortalFacts, forget_attempts
from sandbox.base import Fault
from sandbox.hubspot import (
    OAUTH_CLIENT_ID,
    OAUTH_CLIENT_SECRET,
    OAUTH_REFRESH_TOKEN,
    PRIVATE_APP_TOKEN,
    HubSpotEmulator,
    rate_limit_fault,
)
from tests.connectors.conformance import ConformanceCase, ErrorCase

API = "https://api.hubapi.com"
COMPANY_ID = "1001"
DEAL_ID = "2001"

TASK_PARAMS: dict[str, Any] = {
    "subject": "Follow up on renewal pricing",
    "due_date": "2026-12-03",
    "description": "Send the two renewal options.",
    "priority": "High",
}
UPDATE_PARAMS: dict[str, Any] = {
    "object": "Opportunity",
    "record_id": DEAL_ID,
    "field": "dealstage",
    "value": "contractsent",
    "previous_value": "presentationscheduled",
}
OPPORTUNITY_PARAMS: dict[str, Any] = {
    "name": "Acme expansion 2027",
    "stage": "qualifiedtobuy",
    "close_date": "2027-03-31",
    "amount": 48000,
    "currency": "EUR",
    "follow_up_task": {"subject": "Send the order form", "due_date": "2026-12-10"},
}


def make_credentials(auth_mode: str = "private_app", **overrides: Any) -> HubSpotCredentials:
    """Credentials pointing at the fake HubSpot host, accepted by the emulator."""
    values: dict[str, Any] = {"auth_mode": auth_mode, "api_base_url": API, "portal_id": "4471234"}
    if auth_mode == "private_app":
        values["private_app_token"] = PRIVATE_APP_TOKEN
    else:
        values.update(
            client_id=OAUTH_CLIENT_ID,
            client_secret=OAUTH_CLIENT_SECRET,
            refresh_token=OAUTH_REFRESH_TOKEN,
            token_url=f"{API}/oauth/v1/token",
        )
    values.update(overrides)
    return HubSpotCredentials(**values)


def portal_facts(
    *,
    tasks: KeyStrategy | None = KeyStrategy.SEARCH,
    deals: KeyStrategy | None = KeyStrategy.UNIQUE,
    currencies: tuple[str, ...] | None = ("USD", "EUR"),
    readable: frozenset[str] = frozenset({"companies", "deals", "contacts", "leads"}),
) -> PortalFacts:
    """What a check of a portal with these key properties would learn (no I/O; respx tests)."""
    strategies = {t: s for t, s in (("tasks", tasks), ("deals", deals)) if s is not None}
    guarantees = {
        "crm.create_task": GUARANTEE_OF[tasks] if tasks else Guarantee.DISABLED,
        "crm.create_opportunity": (
            Guarantee.DISABLED
            if tasks is None or deals is None
            else min((GUARANTEE_OF[tasks], GUARANTEE_OF[deals]), key=lambda g: g is Guarantee.PROVIDER_KEY)
        ),
        "crm.update_field": Guarantee.PROVIDER_KEY if readable else Guarantee.DISABLED,
    }
    check = ConnectorCheck(system="hubspot", preconditions=(), guarantees=guarantees)
    return PortalFacts(check=check, strategies=strategies, currencies=currencies, readable=readable)


@dataclass
class HubSpotEnv:
    """A HubSpot connector wired to an emulator, observing one kind of effect."""

    connector: Connector
    emulator: HubSpotEmulator
    snapshot: Callable[[HubSpotEmulator], Any]
    write_method: str
    write_path: str

    def observe(self) -> Any:
        """The live records (or field value) this case affects."""
        return self.snapshot(self.emulator)

    def drop_next_write(self) -> None:
        """The next write commits in the emulator but its answer is lost."""
        self.emulator.inject(Fault(kind="drop", method=self.write_method, path=self.write_path))

    def fail_next(self, status: int, body: Any, headers: dict[str, str]) -> None:
        """The next CRM request (never the token endpoint) gets this answer unprocessed."""
        self.emulator.inject(Fault(kind="status", path=r"^/crm/", status=status, body=body, headers=headers))


def _env_factory(
    auth_mode: str, snapshot: Callable[[HubSpotEmulator], Any], write_method: str, write_path: str
) -> Callable[[Path], HubSpotEnv]:
    def make_env(tmp_path: Path) -> HubSpotEnv:
        forget_attempts()  # every case starts from a fresh portal; the same keys recur across cases
        emulator = HubSpotEmulator()
        client = httpx.Client(transport=emulator.transport(), base_url=API)
        connector = HubSpotConnector(client, make_credentials(auth_mode))
        # The set-up check (``fulfill tenant check``) reads the portal once; a step's requests follow.
        assert connector.check().enabled("crm.create_task")
        emulator.requests.clear()
        return HubSpotEnv(connector, emulator, snapshot, write_method, write_path)

    return make_env


def _error(status: int, category: str, expected: type[ConnectorError], **extra: Any) -> ErrorCase:
    body = {
        "status": "error",
        "message": f"{category} (emulated)",
        "correlationId": "c0ffee-1",
        "category": category,
    }
    body.update(extra)
    return ErrorCase(status=status, body=body, expected=expected, id=f"{status}-{category}")


def _rate_limited(policy: str) -> ErrorCase:
    fault = rate_limit_fault(policy, retry_after=2)
    return ErrorCase(
        status=429, body=fault.body, headers=fault.headers, expected=RateLimitedError, id=f"429-{policy}"
    )


def _common_errors() -> list[ErrorCase]:
    return [
        _error(400, "VALIDATION_ERROR", ValidationRejected),
        _error(403, "MISSING_SCOPES", Forbidden),
        _error(404, "OBJECT_NOT_FOUND", NotFound),
        _rate_limited("TEN_SECONDLY_ROLLING"),
        _rate_limited("DAILY"),
        ErrorCase(
            status=500, body={"status": "error", "message": "internal error"}, expected=ProviderUnavailable
        ),
        ErrorCase(status=502, body=None, expected=ProviderUnavailable),
        ErrorCase(status=503, body=None, expected=ProviderUnavailable, headers={"Retry-After": "5"}),
    ]


def _private_app_errors() -> list[ErrorCase]:
    return [
        *_common_errors(),
        _error(401, "INVALID_AUTHENTICATION", AuthenticationFailed),
        _error(409, "CONFLICT", Conflict),
    ]


def _tasks(emulator: HubSpotEmulator) -> tuple[str, ...]:
    return emulator.live("tasks")


def _deals(emulator: HubSpotEmulator) -> tuple[str, ...]:
    return emulator.live("deals")


def _dealstage(emulator: HubSpotEmulator) -> str | None:
    return emulator.property_value("deals", DEAL_ID, "dealstage")


def _seeded_deal(env: Any) -> dict[str, ExternalRef]:
    return {"create_opportunity": ExternalRef(system="hubspot", object="deal", id=DEAL_ID)}


CASES = [
    ConformanceCase(
        id="hubspot:crm.create_task:create_task",
        action_type="crm.create_task",
        step="create_task",
        params=TASK_PARAMS,
        make_env=_env_factory("private_app", _tasks, "POST", r"^/crm/v3/objects/tasks$"),
        bad_params={"subject": "Call back", "priority": "Urgent"},
        bad_field="priority",
        error_cases=_private_app_errors(),
        account_id=COMPANY_ID,
    ),
    ConformanceCase(
        id="hubspot:crm.update_field:update_field",
        action_type="crm.update_field",
        step="update_field",
        params=UPDATE_PARAMS,
        make_env=_env_factory("oauth", _dealstage, "PATCH", rf"^/crm/v3/objects/deals/{DEAL_ID}$"),
        bad_params={
            "object": "Opportunity",
            "record_id": "006Hs00000abc",
            "field": "dealstage",
            "value": "x",
        },
        bad_field="record_id",
        error_cases=_common_errors(),
        account_id=COMPANY_ID,
    ),
    ConformanceCase(
        id="hubspot:crm.create_opportunity:create_opportunity",
        action_type="crm.create_opportunity",
        step="create_opportunity",
        params=OPPORTUNITY_PARAMS,
        make_env=_env_factory("oauth", _deals, "POST", r"^/crm/v3/objects/deals$"),
        bad_params={"name": "Acme", "stage": "qualifiedtobuy", "close_date": "2027-02-30"},
        bad_field="close_date",
        error_cases=[*_common_errors(), _error(409, "CONFLICT", Conflict)],
        account_id=COMPANY_ID,
    ),
    ConformanceCase(
        id="hubspot:crm.create_opportunity:create_follow_up_task",
        action_type="crm.create_opportunity",
        step="create_follow_up_task",
        params=OPPORTUNITY_PARAMS,
        make_env=_env_factory("private_app", _tasks, "POST", r"^/crm/v3/objects/tasks$"),
        bad_params={
            "name": "Acme",
            "stage": "qualifiedtobuy",
            "close_date": "2027-03-31",
            "follow_up_task": {"due_date": "2026-12-10"},
        },
        bad_field="follow_up_task.subject",
        error_cases=_private_app_errors(),
        prior=_seeded_deal,
        account_id=COMPANY_ID,
    ),
]
