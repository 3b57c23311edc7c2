"""Every SaaS connector end to end: the real flow, a real Prefect server, emulators served on loopback.

The emulators are real HTTP servers on 127.0.0.1 (``sandbox.local.start_sandbox``); the
tenant's credentials blocks are saved to the test Prefect server and loaded by name inside the flow,
exactly as in production. Each test runs on SQLite and on PostgreSQL (the ``engine`` fixture).
Emulator state is reset before every test, and every assertion about the provider is made by
reading the emulator's own records, never the flow's report of them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlmodel import SQLModel, col, select

from blocks.salesforce import SalesforceCredentials
from connectors.base import StepCall, idempotency_key
from connectors.errors import OutcomeUnknown
from connectors.salesforce import external_id_for
from flows.execute_intent import ExecutionFailed, execute_intent
from flows.maintenance import reconcile
from fulfill import executions, ledger
from fulfill.db import db_now, transaction
from fulfill.intent import parse_intent
from fulfill.tables import Execution, LedgerEntry, StepRecord
from fulfill.tenants import configure
from sandbox.base import Fault
from sandbox.hubspot import rate_limit_fault
from sandbox.local import Sandbox, start_sandbox
from sandbox.salesforce import SalesforceEmulator
from surfaces.service import ExecutionService
from tasks.admit import verify_and_register
from tasks.resolve import clear_cache, resolve_connector
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("prefect_server")

SF_ACCOUNT = "001Hs00002abcDEIAY"  # sandbox.salesforce.SEED_ACCOUNT_ID: a valid 18-character id
HS_COMPANY = "1001"
CRM_ACTIONS = ("crm.create_task", "crm.create_opportunity")
STEPS = ("create_task", "create_opportunity", "create_follow_up_task", "draft_meeting")

# Where each provider's create requests go (method, path regex), by created kind.
SF_TASK = ("PATCH", r"/sobjects/Task/Fulfill_Intent_Key__c/")
SF_OPPORTUNITY = ("PATCH", r"/sobjects/Opportunity/Fulfill_Intent_Key__c/")
HS_TASKS = ("POST", r"/crm/v3/objects/tasks$")
HS_DEALS = ("POST", r"/crm/v3/objects/deals$")
GC_EVENTS = ("POST", r"/calendar/v3/calendars/[^/]+/events$")

TASK = {"subject": "Follow up on renewal pricing", "due_date": "2026-12-04", "priority": "High"}
OPPORTUNITY = {
    "name": "Acme – 3-year renewal",
    "stage": "Prospecting",
    "close_date": "2027-01-31",
    "amount": 120000,
    "follow_up_task": {"subject": "Send the quote", "due_date": "2026-12-05"},
}
HS_OPPORTUNITY = {**OPPORTUNITY, "stage": "appointmentscheduled"}
MEETING = {
    "title": "Renewal pricing review",
    "start": "2026-12-03T16:00:00+01:00",
    "end": "2026-12-03T16:30:00+01:00",
    "organizer": "jordan@acme.example",
    "attendees": ["cfo@customer.example"],
}


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """The three emulators, served on loopback for this module, then shut down."""
    served = start_sandbox()
    try:
        yield served
    finally:
        served.shutdown()


@pytest.fixture(scope="module")
def block_names(sandbox: Sandbox, prefect_server: str) -> dict[str, str]:
    """The sandbox credentials blocks, saved to the test Prefect server under names unique to this module."""
    suffix = uuid.uuid4().hex[:8]
    names = {}
    for provider, block in sandbox.credentials().items():
        name = f"e2e-{provider.replace('_', '-')}-{suffix}"
        block.save(name, overwrite=True)
        names[provider] = name
    return names


@pytest.fixture(autouse=True)
def fresh_emulators(sandbox: Sandbox) -> Iterator[None]:
    """Each test starts with reseeded emulators and no queued faults."""
    for emulator in sandbox.emulators().values():
        emulator.reset()
    yield
    for emulator in sandbox.emulators().values():
        emulator.reset()


@pytest.fixture
def configured(engine: Any, tenant: str, block_names: dict[str, str]) -> Callable[[str], None]:
    """Point ``tenant`` at the sandbox: ``configured("hubspot")`` picks its CRM; the calendar is Google."""

    def apply(crm: str) -> None:
        with transaction(engine) as session:
            configure(
                session,
                tenant,
                actor="e2e-test",
                name=f"E2E ({crm})",
                crm_provider=crm,
                crm_block=block_names[crm],
                calendar_provider="google_calendar",
                calendar_block=block_names["google_calendar"],
            )

    return apply


# -- reading the emulators' own state ---------------------------------------------------------
@dataclass(frozen=True)
class ProviderObject:
    """One object at an emulator: its kind, id, whether it is live, and the step key it holds."""

    kind: str
    id: str
    live: bool
    key: str | None


def provider_objects(sandbox: Sandbox, provider: str) -> dict[tuple[str, str], ProviderObject]:
    """Every object the emulator holds (deleted/archived/cancelled ones too), by (kind, id)."""
    found: dict[tuple[str, str], ProviderObject] = {}
    if provider == "salesforce":
        sf = sandbox.salesforce
        for record_id in list(sf.records):
            record = sf.record(record_id)
            assert record is not None
            kind = record["attributes"]["type"]
            found[(kind, record_id)] = ProviderObject(
                kind, record_id, not record["IsDeleted"], record.get(sf.external_id_field)
            )
    elif provider == "hubspot":
        hs = sandbox.hubspot
        for kind in ("companies", "deals", "contacts", "tasks"):
            for record_id in list(hs.objects[kind]):
                record = hs.record(kind, record_id)
                assert record is not None
                key = record["properties"].get("fulfill_intent_key")
                found[(kind, record_id)] = ProviderObject(kind, record_id, not record["archived"], key)
    else:
        gc = sandbox.google_calendar
        for (_, event_id), event in list(gc.events.items()):
            private = (event.get("extendedProperties") or {}).get("private") or {}
            found[("event", event_id)] = ProviderObject(
                "event", event_id, event["status"] != "cancelled", private.get("fulfill_intent_key")
            )
    return found


def intent_keys(provider: str, intent_id: str) -> dict[str, str]:
    """The value each step of ``intent_id`` leaves at the provider (any generation 0–2) → step name."""
    keys: dict[str, str] = {}
    for step in STEPS:
        for generation in range(3):
            key = idempotency_key(intent_id, step, generation)
            keys[external_id_for(key) if provider == "salesforce" else key] = step
    return keys


def objects_of_intent(sandbox: Sandbox, provider: str, intent_id: str) -> list[ProviderObject]:
    """The emulator's objects that carry one of this intent's step keys."""
    keys = intent_keys(provider, intent_id)
    return [o for o in provider_objects(sandbox, provider).values() if o.key in keys]


def kinds(objects: list[ProviderObject]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for item in objects:
        counted[item.kind] = counted.get(item.kind, 0) + 1
    return counted


def events(engine: Any, tenant: str, intent_id: str) -> list[str]:
    with transaction(engine) as session:
        return [row.event_type for row in ledger.entries_for_intent(session, tenant, intent_id)]


def step_rows(engine: Any, intent_id: str) -> list[StepRecord]:
    with transaction(engine) as session:
        return list(
            session.exec(
                select(StepRecord)
                .where(StepRecord.action_intent_id == intent_id)
                .order_by(col(StepRecord.generation), col(StepRecord.seq))
            )
        )


def inject(sandbox: Sandbox, provider: str, fault: Fault) -> None:
    sandbox.emulators()[provider].inject(fault)


# -- a. a lost answer after the provider committed: exactly one object ------------------------
@dataclass(frozen=True)
class DropCase:
    """One create operation whose every create request commits and then loses its answer."""

    provider: str
    crm: str
    action_type: str
    params: dict[str, Any]
    account_id: str
    drops: tuple[tuple[str, str], ...]
    expected: dict[str, int] = field(default_factory=dict)


DROP_CASES = {
    "salesforce-create_task": DropCase(
        "salesforce", "salesforce", "crm.create_task", TASK, SF_ACCOUNT, (SF_TASK,), {"Task": 1}
    ),
    "salesforce-create_opportunity+follow_up": DropCase(
        "salesforce",
        "salesforce",
        "crm.create_opportunity",
        OPPORTUNITY,
        SF_ACCOUNT,
        (SF_OPPORTUNITY, SF_TASK),
        {"Opportunity": 1, "Task": 1},
    ),
    "hubspot-create_task": DropCase(
        "hubspot", "hubspot", "crm.create_task", TASK, HS_COMPANY, (HS_TASKS,), {"tasks": 1}
    ),
    "hubspot-create_opportunity+follow_up": DropCase(
        "hubspot",
        "hubspot",
        "crm.create_opportunity",
        HS_OPPORTUNITY,
        HS_COMPANY,
        (HS_DEALS, HS_TASKS),
        {"deals": 1, "tasks": 1},
    ),
    "google_calendar-draft_meeting": DropCase(
        "google_calendar",
        "salesforce",
        "calendar.draft_meeting",
        MEETING,
        SF_ACCOUNT,
        (GC_EVENTS,),
        {"event": 1},
    ),
}


@pytest.mark.parametrize("case", list(DROP_CASES.values()), ids=list(DROP_CASES))
def test_lost_answer_after_commit_leaves_exactly_one_object(
    engine: Any, make_intent: Any, tenant: str, sandbox: Sandbox, configured: Any, case: DropCase
) -> None:
    configured(case.crm)
    for method, path in case.drops:
        inject(sandbox, case.provider, Fault(kind="drop", method=method, path=path))
    before = set(provider_objects(sandbox, case.provider))
    intent = make_intent(case.action_type, case.params, account_id=case.account_id)
    intent_id = intent["action_intent_id"]

    result = execute_intent(intent)

    assert result.status == "SUCCEEDED", result
    mine = objects_of_intent(sandbox, case.provider, intent_id)
    assert kinds(mine) == case.expected, "exactly one object per create step, at the provider"
    assert all(o.live for o in mine)
    created = set(provider_objects(sandbox, case.provider)) - before
    assert created == {(o.kind, o.id) for o in mine}, "nothing else was created at the provider"
    assert sorted(ref["id"] for ref in result.external_refs) == sorted(o.id for o in mine)
    history = events(engine, tenant, intent_id)
    assert history.count("ACTION_EXECUTED") == 1
    assert history.count("STEP_RETRY_SCHEDULED") == len(case.drops), "each lost answer was retried once"
    for row in step_rows(engine, intent_id):
        assert row.status == "SUCCEEDED"
        assert row.attempts == 2, f"{row.step}: the dropped attempt and the retry that found its write"
        assert row.result_json is not None and row.result_json["created"] is False, (
            f"{row.step}: the retry reused the write the lost answer had committed"
        )
    with transaction(engine) as session:
        assert all(report.ok for report in ledger.verify_chains(session, [tenant]))


# -- b. transient errors are retried with the same key ----------------------------------------
def _sf_503() -> Fault:
    return Fault(
        kind="status",
        method=SF_TASK[0],
        path=SF_TASK[1],
        status=503,
        body=[{"message": "Server unavailable", "errorCode": "SERVER_UNAVAILABLE"}],
    )


def _hs_429() -> Fault:
    fault = rate_limit_fault(retry_after=1)
    fault.method, fault.path = HS_TASKS
    return fault


@pytest.mark.parametrize(
    ("crm", "account_id", "make_fault", "error", "retry_after"),
    [
        ("salesforce", SF_ACCOUNT, _sf_503, "ProviderUnavailable", None),
        ("hubspot", HS_COMPANY, _hs_429, "RateLimitedError", 1.0),
    ],
    ids=["salesforce-503", "hubspot-429-retry-after"],
)
def test_transient_error_is_retried_and_succeeds(
    engine: Any,
    make_intent: Any,
    tenant: str,
    sandbox: Sandbox,
    configured: Any,
    crm: str,
    account_id: str,
    make_fault: Callable[[], Fault],
    error: str,
    retry_after: float | None,
) -> None:
    configured(crm)
    inject(sandbox, crm, make_fault())
    intent = make_intent("crm.create_task", TASK, account_id=account_id)
    intent_id = intent["action_intent_id"]

    assert execute_intent(intent).status == "SUCCEEDED"

    assert kinds(objects_of_intent(sandbox, crm, intent_id)) == {
        "Task" if crm == "salesforce" else "tasks": 1
    }
    with transaction(engine) as session:
        rows = ledger.entries_for_intent(session, tenant, intent_id)
    retries = [row.details for row in rows if row.event_type == "STEP_RETRY_SCHEDULED"]
    assert len(retries) == 1
    assert retries[0]["error"]["error"] == error
    assert retries[0]["error"]["retry_after"] == retry_after
    service = ExecutionService(engine)
    timeline = service.get_timeline(intent_id, tenant)
    assert any("succeeded after 2 attempts" in event.detail for event in timeline.events), timeline
    assert service.get_execution_status(intent_id, tenant).attempts == 2


def test_a_refusal_whose_text_postgresql_cannot_store_still_fails_cleanly(
    engine: Any, make_intent: Any, tenant: str, sandbox: Sandbox, configured: Any
) -> None:
    """Salesforce's error array is provider text: NUL in its code, fields and message (PostgreSQL
    refuses it in text and jsonb) still ends the execution FAILED, explained and ledgered."""
    configured("salesforce")
    poison = [{"message": "No\x00pe", "errorCode": "BAD_\x00VALUE", "fields": ["Sub\x00ject"]}]
    inject(
        sandbox,
        "salesforce",
        Fault(kind="status", method=SF_TASK[0], path=SF_TASK[1], status=400, body=poison),
    )
    intent = make_intent("crm.create_task", TASK, account_id=SF_ACCOUNT)
    intent_id = intent["action_intent_id"]

    with pytest.raises(ExecutionFailed):
        execute_intent(intent)

    status = ExecutionService(engine).get_execution_status(intent_id, tenant)
    assert status.status == "FAILED", status
    assert "STEP_FAILED" in events(engine, tenant, intent_id)
    with transaction(engine) as session:
        assert all(report.ok for report in ledger.verify_chains(session, [tenant]))


# -- c. a permanent error fails with a seller-readable message and compensates ----------------
SECRET_PROVIDER_TEXT = "Org rule 7 (internal): quotes need VP sign-off"


def _block_follow_up(sandbox: Sandbox, crm: str, marker: str) -> None:
    if crm == "salesforce":
        sandbox.salesforce.add_validation_rule("Task", "Subject", marker, SECRET_PROVIDER_TEXT)
        return
    sandbox.hubspot.inject(
        Fault(
            kind="status",
            method=HS_TASKS[0],
            path=HS_TASKS[1],
            status=400,
            body={
                "status": "error",
                "message": f"Property values were not valid: {SECRET_PROVIDER_TEXT}",
                "correlationId": str(uuid.uuid4()),
                "category": "VALIDATION_ERROR",
                "errors": [
                    {"message": SECRET_PROVIDER_TEXT, "context": {"propertyName": ["hs_task_subject"]}}
                ],
            },
        )
    )


@pytest.mark.parametrize("crm", ["salesforce", "hubspot"])
def test_permanent_error_fails_readably_and_undoes_the_opportunity(
    engine: Any, make_intent: Any, tenant: str, sandbox: Sandbox, configured: Any, crm: str
) -> None:
    configured(crm)
    marker = f"[blocked-{uuid.uuid4().hex[:6]}]"
    _block_follow_up(sandbox, crm, marker)
    params = {
        **(OPPORTUNITY if crm == "salesforce" else HS_OPPORTUNITY),
        "follow_up_task": {"subject": f"Send the quote {marker}", "due_date": "2026-12-05"},
    }
    intent = make_intent(
        "crm.create_opportunity", params, account_id=SF_ACCOUNT if crm == "salesforce" else HS_COMPANY
    )
    intent_id = intent["action_intent_id"]

    with pytest.raises(ExecutionFailed) as raised:
        execute_intent(intent)

    assert raised.value.code == "VALIDATION_FAILED"
    status = ExecutionService(engine).get_execution_status(intent_id, tenant)
    assert status.status == "FAILED"
    assert status.failure is not None
    assert status.failure.code == "VALIDATION_FAILED"
    assert status.failure.compensation == "COMPENSATED"
    assert status.failure.needs_human is False
    message = status.failure.message
    assert message == (
        "The connected system rejected the values in this action. Everything done before the failure was undone."
    )
    for shown in (message, status.explanation, str(raised.value)):
        for leak in (
            SECRET_PROVIDER_TEXT,
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "VALIDATION_ERROR",
            "Traceback",
        ):
            assert leak not in shown
        assert not set(shown) & set("{}[]<>"), f"no raw provider body or repr: {shown!r}"
    assert status.external_refs == []
    mine = objects_of_intent(sandbox, crm, intent_id)
    opportunity_kind = "Opportunity" if crm == "salesforce" else "deals"
    assert kinds(mine) == {opportunity_kind: 1}, "the opportunity was made, the follow-up task never was"
    assert not any(o.live for o in mine), "the opportunity was compensated: none is live at the provider"
    history = events(engine, tenant, intent_id)
    assert history.index("STEP_FAILED") < history.index("COMPENSATED") < history.index("ACTION_FAILED")
    assert "STEP_RETRY_SCHEDULED" not in history, "a permanent error is not retried"
    with transaction(engine) as session:
        rows = ledger.entries_for_intent(session, tenant, intent_id)
    assert SECRET_PROVIDER_TEXT not in json.dumps([row.details for row in rows])
    outcome = ExecutionService(engine).get_timeline(intent_id, tenant).events[-1]
    assert (outcome.stage, outcome.title) == ("outcome", "Failed")
    assert outcome.detail == message, "the undo is said once, as in the status"


# -- d. a credential never leaks anywhere ------------------------------------------------------
CANARY = f"canary-secret-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def canary_salesforce() -> Iterator[tuple[SalesforceEmulator, str]]:
    """A Salesforce emulator that only accepts the canary as the client secret, served on loopback."""
    emulator = SalesforceEmulator(client_id="canary-client", client_secret=CANARY)
    url = emulator.serve()
    try:
        yield emulator, url
    finally:
        emulator.shutdown()


def _everything_in_the_database(engine: Any) -> str:
    dumped = []
    with engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            rows = connection.execute(sa.select(table)).all()
            dumped.append(f"{table.name}: {[tuple(row) for row in rows]!r}")
    return "\n".join(dumped)


def _prefect_records(flow_run_id: str) -> tuple[str, int]:
    """Everything the Prefect API holds about the flow run: run, states, task runs, results, logs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    seen: list[str] = []
    results = 0
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(flow_run_id))
        seen.append(run.model_dump_json())
        seen.append(json.dumps(run.parameters, default=str))
        seen.extend(state.model_dump_json() for state in client.read_flow_run_states(run.id))
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])), limit=200
        )
        assert task_runs, "the flow ran its tasks on the Prefect server"
        for task_run in task_runs:
            seen.append(task_run.model_dump_json())
            for state in client.read_task_run_states(task_run.id):
                seen.append(state.model_dump_json())
            if task_run.state is not None and task_run.state.is_completed():
                try:
                    value = task_run.state.result(raise_on_failure=False)
                except Exception as exc:  # a result that cannot be read back is not a leak
                    seen.append(repr(exc))
                else:
                    results += 1
                    seen.append(repr(value))
                    dump = getattr(value, "model_dump_json", None)
                    if callable(dump):
                        seen.append(dump())
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
        seen.extend(log.model_dump_json() for log in logs)
    return "\n".join(seen), results


def _result_files() -> str:
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    root = Path(str(PREFECT_LOCAL_STORAGE_PATH.value())).expanduser()
    return "\n".join(
        repr(path.read_bytes()) + path.read_bytes().decode("utf-8", "replace")
        for path in root.rglob("*")
        if path.is_file()
    )


def test_canary_secret_appears_nowhere(
    engine: Any,
    make_intent: Any,
    tenant: str,
    canary_salesforce: tuple[SalesforceEmulator, str],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emulator, url = canary_salesforce
    emulator.reset()
    block_name = f"e2e-canary-{uuid.uuid4().hex[:8]}"
    SalesforceCredentials(
        auth_mode="client_credentials",
        login_url=url,
        instance_url=url,
        client_id="canary-client",
        client_secret=SecretStr(CANARY),
    ).save(block_name, overwrite=True)
    with transaction(engine) as session:
        configure(session, tenant, actor="e2e-test", crm_provider="salesforce", crm_block=block_name)
    # A transient failure first, so retry, error and ledger paths all run with the secret loaded.
    emulator.inject(_sf_503())
    capture = logging.getLogger("prefect")
    capture.addHandler(caplog.handler)
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "httpx", "httpcore", "fulfill"):
        caplog.set_level(logging.DEBUG, logger=name)
    try:
        intent = make_intent("crm.create_task", TASK, account_id=SF_ACCOUNT)
        assert execute_intent(intent).status == "SUCCEEDED"
    finally:
        capture.removeHandler(caplog.handler)

    # The canary really was the credential in use: the emulator received it in the token request.
    token_requests = [r for r in emulator.requests if r.url.path == "/services/oauth2/token"]
    assert token_requests and all(CANARY in r.content.decode() for r in token_requests)
    assert len(emulator.live_ids("Task")) == 1

    database = _everything_in_the_database(engine)
    assert intent["action_intent_id"] in database and "STEP_RETRY_SCHEDULED" in database
    assert CANARY not in database, "a database row holds the secret"

    with transaction(engine) as session:
        execution = session.get(Execution, intent["action_intent_id"])
        assert execution is not None and execution.flow_run_id
        flow_run_id = execution.flow_run_id
    prefect_view, results = _prefect_records(flow_run_id)
    assert intent["action_intent_id"] in prefect_view
    assert results > 0, "persisted task results were read back"
    assert CANARY not in prefect_view, "the Prefect API holds the secret"
    stored = _result_files()
    assert stored, "task results were persisted"
    assert CANARY not in stored, "a persisted task result holds the secret"

    logged = "\n".join(
        f"{record.name} {record.getMessage()} {record.exc_text or ''}" for record in caplog.records
    )
    assert logged, "logs were captured"
    assert CANARY not in logged, "a log line holds the secret"
    out, err = capsys.readouterr()
    assert CANARY not in out and CANARY not in err, "stdout/stderr hold the secret"


# -- e. reconcile: after every retry lost its answer, and after a worker died mid-step ---------
def test_every_answer_lost_then_lookup_finds_the_single_write(
    engine: Any, make_intent: Any, tenant: str, sandbox: Sandbox, configured: Any
) -> None:
    """Retries run out on lost answers (each attempt committed); the provider lookup settles it."""
    configured("salesforce")
    inject(sandbox, "salesforce", Fault(kind="drop", method=SF_TASK[0], path=SF_TASK[1], times=10))
    intent = make_intent("crm.create_task", TASK, account_id=SF_ACCOUNT)
    intent_id = intent["action_intent_id"]

    assert execute_intent(intent).status == "SUCCEEDED"

    mine = objects_of_intent(sandbox, "salesforce", intent_id)
    assert len(mine) == 1 and mine[0].live, "four committed attempts, one object (same upsert key)"
    history = events(engine, tenant, intent_id)
    assert history.count("STEP_RETRY_SCHEDULED") == 3 and history.count("ACTION_EXECUTED") == 1
    [row] = step_rows(engine, intent_id)
    assert row.attempts == 4 and row.result_json is not None and row.result_json["created"] is False


@pytest.mark.parametrize(
    ("provider", "crm", "action_type", "params", "account_id", "drop"),
    [
        ("salesforce", "salesforce", "crm.create_task", TASK, SF_ACCOUNT, SF_TASK),
        ("hubspot", "hubspot", "crm.create_task", TASK, HS_COMPANY, HS_TASKS),
    ],
    ids=["salesforce", "hubspot"],
)
def test_reconcile_finishes_a_step_whose_worker_died_after_the_provider_committed(
    engine: Any,
    make_intent: Any,
    tenant: str,
    sandbox: Sandbox,
    configured: Any,
    provider: str,
    crm: str,
    action_type: str,
    params: dict[str, Any],
    account_id: str,
    drop: tuple[str, str],
) -> None:
    configured(crm)
    intent = make_intent(action_type, params, account_id=account_id)
    intent_id = intent["action_intent_id"]
    # The dead worker: admitted, claimed, checkpointed, called the provider (which committed) ...
    assert verify_and_register(intent).admitted
    with transaction(engine) as session:
        lease = executions.claim(
            session, intent_id, owner=f"dead-worker/{uuid.uuid4().hex[:8]}", blocked=None
        )
    assert isinstance(lease, executions.Lease)
    parsed = parse_intent(intent)
    parameters = parsed.normalized_parameters()
    connector = resolve_connector(tenant, action_type)
    step = connector.steps(action_type, parameters)[0]
    call = StepCall(
        action_intent_id=intent_id,
        tenant_id=tenant,
        account_id=parsed.account_id,
        action_type=action_type,
        step=step,
        idempotency_key=idempotency_key(intent_id, step, lease.generation),
        params=parameters,
    )
    with transaction(engine) as session:
        executions.checkpoint(session, lease, seq=0, system=connector.system, call=call)
        executions.count_attempt(session, lease, step)
    inject(sandbox, provider, Fault(kind="drop", method=drop[0], path=drop[1]))
    with pytest.raises(OutcomeUnknown):
        connector.execute(call)
    assert len(objects_of_intent(sandbox, provider, intent_id)) == 1, "the provider committed"
    # ... and died before recording it: the execution stays EXECUTING until its lease runs out.
    with transaction(engine) as session:
        session.execute(
            sa.update(Execution)
            .where(col(Execution.action_intent_id) == intent_id)
            .values(lease_until=db_now(session) - timedelta(minutes=5))
        )
    clear_cache()  # the next worker builds its own connector

    results = reconcile()

    mine = [r for r in results if r.action_intent_id == intent_id]
    assert len(mine) == 1 and mine[0].status == "SUCCEEDED", results
    status = ExecutionService(engine).get_execution_status(intent_id, tenant)
    assert status.status == "SUCCEEDED"
    objects = objects_of_intent(sandbox, provider, intent_id)
    assert len(objects) == 1 and objects[0].live, "exactly one object at the provider"
    assert [ref.id for ref in status.external_refs] == [objects[0].id]
    rows = step_rows(engine, intent_id)
    assert [(r.step, r.status) for r in rows] == [(step, "SUCCEEDED")]
    assert rows[0].result_json is not None and rows[0].result_json["created"] is False
    with transaction(engine) as session:
        entries = ledger.entries_for_intent(session, tenant, intent_id)
        started = [e.details for e in entries if e.event_type == "EXECUTION_STARTED"]
        assert [s["took_over_expired_lease"] for s in started] == [False, True]
        assert [e.event_type for e in entries].count("ACTION_EXECUTED") == 1
        assert session.exec(select(LedgerEntry).where(LedgerEntry.tenant_id == tenant)).first() is not None


# -- f. previous_value: null means "the field was empty when approved" ------------------------
NULL_GUARD_CASES = {
    # The seeded records hold these fields filled: the approver saw them empty, so nothing is written.
    "salesforce": ("salesforce", "Account", SF_ACCOUNT, "Type", "Customer - Direct"),
    "hubspot": ("hubspot", "Account", HS_COMPANY, "domain", "acme.example"),
}


def _current(sandbox: Sandbox, crm: str, record_id: str, field_name: str) -> Any:
    if crm == "salesforce":
        record = sandbox.salesforce.record(record_id)
        assert record is not None
        return record[field_name]
    company = sandbox.hubspot.record("companies", record_id)
    assert company is not None
    return company["properties"][field_name]


@pytest.mark.parametrize("case", list(NULL_GUARD_CASES.values()), ids=list(NULL_GUARD_CASES))
def test_previous_value_null_refuses_to_overwrite_a_filled_field(
    engine: Any, make_intent: Any, tenant: str, sandbox: Sandbox, configured: Any, case: tuple[str, ...]
) -> None:
    crm, sobject, record_id, field_name, filled = case
    configured(crm)
    params = {
        "object": sobject,
        "record_id": record_id,
        "field": field_name,
        "value": "written by fulfill",
        "previous_value": None,
    }
    intent = make_intent("crm.update_field", params, account_id=record_id)
    assert parse_intent(intent).normalized_parameters()["previous_value"] is None, "null is kept, not dropped"

    with pytest.raises(ExecutionFailed) as raised:
        execute_intent(intent)

    assert raised.value.code == "STALE_PRECONDITION"
    assert _current(sandbox, crm, record_id, field_name) == filled, "nothing was written"
    status = ExecutionService(engine).get_execution_status(intent["action_intent_id"], tenant)
    assert status.failure is not None and status.failure.code == "STALE_PRECONDITION"


@pytest.mark.parametrize("crm", ["salesforce", "hubspot"])
def test_absent_previous_value_still_writes(
    engine: Any, make_intent: Any, tenant: str, sandbox: Sandbox, configured: Any, crm: str
) -> None:
    _, sobject, record_id, field_name, _ = NULL_GUARD_CASES[crm]
    configured(crm)
    params = {"object": sobject, "record_id": record_id, "field": field_name, "value": "written by fulfill"}
    intent = make_intent("crm.update_field", params, account_id=record_id)
    assert "previous_value" not in parse_intent(intent).normalized_parameters(), "absent stays absent"

    assert execute_intent(intent).status == "SUCCEEDED"

    assert _current(sandbox, crm, record_id, field_name) == "written by fulfill"


# -- g. cancel, kill switches and late commits while undoing ----------------------------------
def _requests(sandbox: Sandbox, method: str, path: str) -> list[Any]:
    return [r for r in sandbox.salesforce.requests if r.method == method and re.search(path, r.url.path)]


def _execution(engine: Any, intent_id: str) -> Execution:
    with transaction(engine) as session:
        return executions.get(session, None, intent_id)


def _executor_in_flight(
    intent: dict[str, Any], database_url: str, prefect_server: str, sandbox: Sandbox, tmp_path: Path
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Run the flow for ``intent`` in another process; return once its Salesforce Task call is in flight."""
    intent_file = tmp_path / "intent.json"
    intent_file.write_text(json.dumps(intent))
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    (barrier / "go").touch()
    env = {
        **os.environ,
        "FULFILL_DATABASE_URL": database_url,
        "FULFILL_DATA_DIR": str(tmp_path / "data"),
        "PREFECT_API_URL": prefect_server,
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
        "PYTHONPATH": str(REPO),
    }
    executor = subprocess.Popen(
        [sys.executable, "-m", "tests.flows.race_worker", str(intent_file), str(barrier), "executor"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not _requests(sandbox, *SF_TASK):
        assert executor.poll() is None, executor.communicate()
        assert time.monotonic() < deadline, "the executor never called the provider"
        time.sleep(0.05)
    return executor, env


def test_cancel_during_an_in_flight_call_records_and_undoes_the_write(
    engine: Any,
    database_url: str,
    prefect_server: str,
    make_intent: Any,
    tenant: str,
    sandbox: Sandbox,
    configured: Any,
    tmp_path: Path,
) -> None:
    """Real processes: the executor's provider call commits AFTER `fulfill cancel` returned."""
    configured("salesforce")
    inject(sandbox, "salesforce", Fault(kind="latency", method=SF_TASK[0], path=SF_TASK[1], delay=6.0))
    intent = make_intent("crm.create_task", TASK, account_id=SF_ACCOUNT)
    intent_id = intent["action_intent_id"]
    executor, env = _executor_in_flight(intent, database_url, prefect_server, sandbox, tmp_path)

    cancelled = subprocess.run(
        [str(Path(sys.executable).with_name("fulfill")), "cancel", intent_id, "--actor", "ops@acme.example"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cancelled.returncode == 0, cancelled.stderr
    assert not [o for o in objects_of_intent(sandbox, "salesforce", intent_id) if o.live], (
        "the cancel returned while the provider call was still in flight"
    )
    out, err = executor.communicate(timeout=120)

    assert executor.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    mine = objects_of_intent(sandbox, "salesforce", intent_id)
    assert kinds(mine) == {"Task": 1}, "the in-flight call committed one Task"
    assert not any(o.live for o in mine), "and it was undone"
    status = ExecutionService(engine).get_execution_status(intent_id, tenant)
    assert status.status == "CANCELLED"
    assert status.failure is not None
    assert status.failure.compensation == "COMPENSATED"
    assert status.failure.needs_human is False
    assert "undone" in status.explanation and "being undone" not in status.explanation
    assert _execution(engine, intent_id).compensation_pending is False
    history = events(engine, tenant, intent_id)
    assert history.index("ACTION_CANCELLED") < history.index("STEP_SUCCEEDED") < history.index("COMPENSATED")
    with transaction(engine) as session:
        assert all(report.ok for report in ledger.verify_chains(session, [tenant]))


def test_a_kill_switch_stops_compensation_until_it_is_released(
    engine: Any, make_intent: Any, tenant: str, sandbox: Sandbox, configured: Any
) -> None:
    configured("salesforce")
    marker = f"[blocked-{uuid.uuid4().hex[:6]}]"
    _block_follow_up(sandbox, "salesforce", marker)
    inject(sandbox, "salesforce", Fault(kind="latency", method=SF_TASK[0], path=SF_TASK[1], delay=2.0))
    params = {
        **OPPORTUNITY,
        "follow_up_task": {"subject": f"Send the quote {marker}", "due_date": "2026-12-05"},
    }
    intent = make_intent("crm.create_opportunity", params, account_id=SF_ACCOUNT)
    intent_id = intent["action_intent_id"]
    service = ExecutionService(engine)

    def engage_while_the_follow_up_is_in_flight() -> None:
        deadline = time.monotonic() + 60
        while not _requests(sandbox, *SF_TASK) and time.monotonic() < deadline:
            time.sleep(0.02)
        service.set_kill_switch(
            "tenant", tenant, enabled=False, reason="incident 42", actor="ops@acme.example"
        )

    switch = threading.Thread(target=engage_while_the_follow_up_is_in_flight)
    switch.start()
    with pytest.raises(ExecutionFailed) as raised:
        execute_intent(intent)
    switch.join()

    assert raised.value.code == "VALIDATION_FAILED"
    opportunity = [o for o in objects_of_intent(sandbox, "salesforce", intent_id) if o.kind == "Opportunity"]
    assert len(opportunity) == 1 and opportunity[0].live, "the switch stopped the compensating DELETE"
    assert _requests(sandbox, "DELETE", r"/sobjects/") == []
    status = service.get_execution_status(intent_id, tenant)
    assert status.status == "FAILED" and status.failure is not None
    assert status.failure.needs_human is True, "a person is flagged"
    assert _execution(engine, intent_id).compensation_pending is True
    history = events(engine, tenant, intent_id)
    assert "EXECUTION_HALTED" in history and "COMPENSATED" not in history

    reconcile(tenant_id=tenant)  # still engaged: nothing happens, nothing is ledgered again
    assert events(engine, tenant, intent_id) == history
    assert _requests(sandbox, "DELETE", r"/sobjects/") == []

    service.set_kill_switch("tenant", tenant, enabled=True, reason="resolved", actor="ops@acme.example")
    reconcile(tenant_id=tenant)

    assert not any(o.live for o in objects_of_intent(sandbox, "salesforce", intent_id)), (
        "undone after release"
    )
    status = service.get_execution_status(intent_id, tenant)
    assert status.failure is not None
    assert status.failure.compensation == "COMPENSATED"
    assert status.failure.message == (
        "The connected system rejected the values in this action. Everything done before the failure was undone."
    )
    assert status.failure.needs_human is True, "only a completed rerun clears the flag"
    assert _execution(engine, intent_id).compensation_pending is False
    with transaction(engine) as session:
        assert all(report.ok for report in ledger.verify_chains(session, [tenant]))


def test_a_write_that_commits_late_is_undone_too(
    engine: Any,
    make_intent: Any,
    tenant: str,
    sandbox: Sandbox,
    configured: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first request times out but commits 2.5 s later: after the retry made the opportunity and the
    follow-up failed. The undo waits out the late-commit window, then deletes and confirms by lookup."""
    monkeypatch.setenv("FULFILL_LATE_COMMIT_SECONDS", "4")
    configured("salesforce")
    marker = f"[blocked-{uuid.uuid4().hex[:6]}]"
    _block_follow_up(sandbox, "salesforce", marker)
    inject(
        sandbox,
        "salesforce",
        Fault(kind="late", method=SF_OPPORTUNITY[0], path=SF_OPPORTUNITY[1], delay=2.5),
    )
    params = {
        **OPPORTUNITY,
        "follow_up_task": {"subject": f"Send the quote {marker}", "due_date": "2026-12-05"},
    }
    intent = make_intent("crm.create_opportunity", params, account_id=SF_ACCOUNT)
    intent_id = intent["action_intent_id"]

    with pytest.raises(ExecutionFailed):
        execute_intent(intent)

    time.sleep(3.0)  # the late commit (2.5 s after the first attempt, before the flow ended) has landed
    mine = objects_of_intent(sandbox, "salesforce", intent_id)
    assert mine and not any(o.live for o in mine), f"no orphan at the provider: {mine}"
    status = ExecutionService(engine).get_execution_status(intent_id, tenant)
    assert status.failure is not None and status.failure.compensation == "COMPENSATED"


def test_a_really_crashed_run_is_closed_by_its_state_hook(
    engine: Any,
    database_url: str,
    prefect_server: str,
    make_intent: Any,
    tenant: str,
    sandbox: Sandbox,
    configured: Any,
    tmp_path: Path,
) -> None:
    """The executing process is terminated while its provider call is in flight: Prefect marks the run
    CRASHED and runs ``on_crashed``, which closes the execution: FAILED, AMBIGUOUS_OUTCOME, needs a
    person; and the rerun (here: the reconciler) finds the write by its key instead of making another."""
    from prefect.client.orchestration import get_client

    configured("salesforce")
    inject(sandbox, "salesforce", Fault(kind="latency", method=SF_TASK[0], path=SF_TASK[1], delay=3.0))
    intent = make_intent("crm.create_task", TASK, account_id=SF_ACCOUNT)
    intent_id = intent["action_intent_id"]
    executor, _ = _executor_in_flight(intent, database_url, prefect_server, sandbox, tmp_path)

    executor.terminate()  # SIGTERM, mid-call
    executor.communicate(timeout=120)

    execution = _execution(engine, intent_id)
    assert execution.status == "FAILED", "the on_crashed hook closed the execution"
    assert execution.failure_code == "AMBIGUOUS_OUTCOME" and execution.needs_human
    assert execution.flow_run_id is not None
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(uuid.UUID(execution.flow_run_id)).state
    assert state is not None and state.is_crashed(), state

    time.sleep(3.5)  # the call the crash interrupted commits at the provider meanwhile
    rerun = ExecutionService(engine).execute_action_intent(intent)  # FAILED is rerunnable, same step key

    assert rerun.status == "SUCCEEDED"
    assert rerun.failure is None, "a completed rerun is what clears needs_human"
    assert kinds(objects_of_intent(sandbox, "salesforce", intent_id)) == {"Task": 1}, "one Task, found by key"
