"""Conformance cases for the Salesforce connector, wired to the in-process emulator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from blocks.salesforce import SalesforceCredentials
from connectors.base import Connector, ExternalRef
from connectors.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ProviderUnavailable,
    RateLimitedError,
    TransientError,
    ValidationRejected,
)
from connectors.salesforce import SalesforceConnector
from sandbox.base import Fault
from sandbox.salesforce import SEED_ACCOUNT_ID, SEED_OPPORTUNITY_ID, SalesforceEmulator
from tests.connectors.conformance import ConformanceCase, ConformanceEnv, ErrorCase

INSTANCE = "https://acme.my.salesforce.com"
# Record and upsert resources, not the describe and query reads a fresh connector makes first.
API_PATH = r"^/services/data/v[0-9.]+/sobjects/[A-Za-z0-9_]+/(?!describe$)[^/]+"
SOBJECTS_PATH = r"^/services/data/v[0-9.]+/sobjects/"

TASK_PARAMS: dict[str, Any] = {
    "subject": "Follow up on renewal pricing",
    "due_date": "2026-12-04",
    "description": "Customer asked for a 3-year quote.",
    "priority": "High",
}
UPDATE_PARAMS: dict[str, Any] = {
    "object": "Opportunity",
    "record_id": SEED_OPPORTUNITY_ID,
    "field": "StageName",
    "value": "Negotiation/Review",
    "previous_value": "Proposal/Price Quote",
}
OPPORTUNITY_PARAMS: dict[str, Any] = {
    "name": "Acme – 3-year renewal",
    "stage": "Prospecting",
    "close_date": "2027-01-31",
    "amount": 1234567.5,
    "currency": "EUR",
    "follow_up_task": {"subject": "Send 3-year quote", "due_date": "2026-12-05"},
}


def sf_error(code: str, message: str, fields: list[str] | None = None) -> list[dict[str, Any]]:
    """Salesforce's documented error body."""
    return [{"message": message, "errorCode": code, "fields": fields or []}]


def credentials(**overrides: Any) -> SalesforceCredentials:
    """Client-credentials block pointing at the emulator's default consumer key and secret."""
    values: dict[str, Any] = {
        "auth_mode": "client_credentials",
        "login_url": INSTANCE,
        "client_id": "fulfill-emulator-client",
        "client_secret": SecretStr("fulfill-emulator-secret"),
    }
    values.update(overrides)
    return SalesforceCredentials(**values)


@dataclass
class SalesforceEnv:
    """A :class:`SalesforceConnector` on a :class:`SalesforceEmulator` through ``httpx.MockTransport``."""

    connector: Connector
    emulator: SalesforceEmulator
    snapshot: Callable[[SalesforceEmulator], Any]

    def observe(self) -> Any:
        """What the step affects, as seen at the emulated org."""
        return self.snapshot(self.emulator)

    def drop_next_write(self) -> None:
        """The next PATCH commits, then its response is lost."""
        self.emulator.inject(Fault(kind="drop", method="PATCH", path=SOBJECTS_PATH))

    def fail_next(self, status: int, body: Any, headers: dict[str, str]) -> None:
        """The next record or upsert call (never the token, describe or query) gets this answer, unprocessed."""
        self.emulator.inject(Fault(kind="status", path=API_PATH, status=status, body=body, headers=headers))


def make_env(
    snapshot: Callable[[SalesforceEmulator], Any], *, org_read: bool = False
) -> Callable[[Path], ConformanceEnv]:
    """An env factory observing ``snapshot`` of the emulator.

    ``org_read``: the connector has read the org already (``check()``), as the one that ran an
    opportunity's first step has when its follow-up task runs.
    """

    def factory(_: Path) -> ConformanceEnv:
        emulator = SalesforceEmulator(currencies=("USD", "EUR"))
        client = httpx.Client(transport=emulator.transport(), base_url=INSTANCE)
        connector = SalesforceConnector(client, credentials())
        if org_read:
            connector.check()
            emulator.requests.clear()
        return SalesforceEnv(connector, emulator, snapshot)

    return factory


def _tasks(emulator: SalesforceEmulator) -> Any:
    return emulator.live_ids("Task")


def _opportunities(emulator: SalesforceEmulator) -> Any:
    return emulator.live_ids("Opportunity")


def _stage(emulator: SalesforceEmulator) -> Any:
    record = emulator.record(SEED_OPPORTUNITY_ID)
    assert record is not None
    return record["StageName"]


def _seeded_opportunity(env: ConformanceEnv) -> dict[str, ExternalRef]:
    return {
        "create_opportunity": ExternalRef(system="salesforce", object="Opportunity", id=SEED_OPPORTUNITY_ID)
    }


COMMON_ERRORS = [
    ErrorCase(
        403,
        sf_error("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
        RateLimitedError,
        id="request-limit-exceeded-403",
    ),
    ErrorCase(
        429,
        sf_error("REQUEST_LIMIT_EXCEEDED", "Too many requests"),
        RateLimitedError,
        headers={"Retry-After": "7"},
        id="429",
    ),
    ErrorCase(
        503, sf_error("SERVER_UNAVAILABLE", "Server temporarily unavailable"), ProviderUnavailable, id="503"
    ),
    ErrorCase(
        500, sf_error("UNKNOWN_EXCEPTION", "An unexpected error occurred"), ProviderUnavailable, id="500"
    ),
    ErrorCase(
        400,
        sf_error("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record"),
        TransientError,
        id="unable-to-lock-row",
    ),
    ErrorCase(
        403,
        sf_error("INSUFFICIENT_ACCESS_OR_READONLY", "insufficient access rights on object id"),
        Forbidden,
        id="insufficient-access",
    ),
    ErrorCase(
        400,
        sf_error("INVALID_FIELD", "No such column 'Bogus__c' on sobject", ["Bogus__c"]),
        ValidationRejected,
        id="invalid-field",
    ),
]
CREATE_ERRORS = [
    *COMMON_ERRORS,
    ErrorCase(
        400,
        sf_error("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Subject must not mention pricing", ["Subject"]),
        ValidationRejected,
        id="validation-rule",
    ),
    ErrorCase(
        400,
        sf_error("REQUIRED_FIELD_MISSING", "Required fields are missing: [CloseDate]", ["CloseDate"]),
        ValidationRejected,
        id="required-field-missing",
    ),
    ErrorCase(
        300,
        [
            "/services/data/v62.0/sobjects/Task/00THs0000000001AAE",
            "/services/data/v62.0/sobjects/Task/00THs0000000002AAE",
        ],
        Conflict,
        id="multiple-matches-300",
    ),
]
UPDATE_ERRORS = [
    *COMMON_ERRORS,
    ErrorCase(404, sf_error("NOT_FOUND", "The requested resource does not exist"), NotFound, id="not-found"),
    ErrorCase(404, sf_error("ENTITY_IS_DELETED", "entity is deleted"), NotFound, id="entity-is-deleted"),
]

CASES = [
    ConformanceCase(
        id="salesforce:crm.create_task:create_task",
        action_type="crm.create_task",
        step="create_task",
        params=TASK_PARAMS,
        make_env=make_env(_tasks),
        bad_params={**TASK_PARAMS, "subject": "x" * 256},
        bad_field="subject",
        error_cases=CREATE_ERRORS,
        account_id=SEED_ACCOUNT_ID,
    ),
    ConformanceCase(
        id="salesforce:crm.update_field:update_field",
        action_type="crm.update_field",
        step="update_field",
        params=UPDATE_PARAMS,
        make_env=make_env(_stage),
        bad_params={**UPDATE_PARAMS, "object": "Campaign"},
        bad_field="object",
        error_cases=UPDATE_ERRORS,
        account_id=SEED_ACCOUNT_ID,
    ),
    ConformanceCase(
        id="salesforce:crm.create_opportunity:create_opportunity",
        action_type="crm.create_opportunity",
        step="create_opportunity",
        params=OPPORTUNITY_PARAMS,
        make_env=make_env(_opportunities),
        bad_params={**OPPORTUNITY_PARAMS, "close_date": "31/01/2027"},
        bad_field="close_date",
        error_cases=CREATE_ERRORS,
        account_id=SEED_ACCOUNT_ID,
    ),
    ConformanceCase(
        id="salesforce:crm.create_opportunity:create_follow_up_task",
        action_type="crm.create_opportunity",
        step="create_follow_up_task",
        params=OPPORTUNITY_PARAMS,
        make_env=make_env(_tasks, org_read=True),
        bad_params={**OPPORTUNITY_PARAMS, "follow_up_task": {"due_date": "2026-12-05"}},
        bad_field="follow_up_task.subject",
        error_cases=CREATE_ERRORS,
        prior=_seeded_opportunity,
        account_id=SEED_ACCOUNT_ID,
    ),
]
