"""Support for ``test_state_machine.py``: signed intents, a request log at the emulators, a dead
worker that does exactly what the flow does up to the point where it dies, and the provider-side
effects of an intent read from the emulator's own store.

Nothing here decides an outcome: every verdict in the state machine is read from the database
and from the emulators.
"""

from __future__ import annotations

import copy
import itertools
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from sqlmodel import col, select

from connectors.base import StepCall, StepResult, idempotency_key
from connectors.errors import ConnectorError
from connectors.salesforce import external_id_for
from fulfill import executions
from fulfill.approval import sign_intent
from fulfill.db import get_engine, transaction
from fulfill.executions import Failure, Lease, LeaseLost
from fulfill.intent import parse_intent
from fulfill.states import StepStatus
from fulfill.tables import InternalTask
from sandbox.base import Emulator, Fault
from sandbox.salesforce import DEFAULT_EXTERNAL_ID_FIELD, SEED_ACCOUNT_ID, SalesforceEmulator
from tasks.connector_step import Halted, run_step
from tasks.plan import Plan, plan
from tasks.record import checkpoint, record_step_succeeded, step_records
from tests.conftest import KEYS

SF_ACCOUNT = SEED_ACCOUNT_ID  # the emulated org's seeded account (18-character id)
TASK = {"subject": "Follow up on renewal pricing", "due_date": "2026-12-04", "priority": "High"}
OPPORTUNITY = {
    "name": "Acme - 3-year renewal",
    "stage": "Prospecting",
    "close_date": "2027-01-31",
    "amount": 120000,
    "follow_up_task": {"subject": "Send the quote", "due_date": "2026-12-05"},
}

#: action type -> (parameters, the connector's plan, the emulator it writes to or None for internal)
KINDS: dict[str, tuple[dict[str, Any], tuple[str, ...], str | None]] = {
    "internal.create_task": ({"title": "Prepare the QBR deck"}, ("create_task",), None),
    "crm.create_task": (TASK, ("create_task",), "salesforce"),
    "crm.create_opportunity": (OPPORTUNITY, ("create_opportunity", "create_follow_up_task"), "salesforce"),
}
#: The Salesforce object each create step upserts.
SF_OBJECT = {"create_task": "Task", "create_opportunity": "Opportunity", "create_follow_up_task": "Task"}
GENERATIONS = range(6)  # a generation is bumped once per compensated failure; a few examples reach 2

#: Where a provider-side create goes: ``PATCH …/sobjects/{Object}/{ExternalIdField}/{value}`` (upsert).
SF_UPSERT = re.compile(rf"/sobjects/(?P<object>\w+)/{DEFAULT_EXTERNAL_ID_FIELD}/(?P<value>[0-9a-f]{{64}})$")
SF_CREATE_PATH = rf"/sobjects/(Task|Opportunity)/{DEFAULT_EXTERNAL_ID_FIELD}/"


def signed_intent(
    tenant: str, intent_id: str, action_type: str, *, expires_at_epoch: int | None = None
) -> dict[str, Any]:
    """A signed ActionIntentV1 of ``action_type`` (``KINDS``), valid for a week unless told otherwise."""
    parameters = copy.deepcopy(KINDS[action_type][0])
    key = KEYS["keys"][0]
    intent = {
        "schema_version": "action_intent.v1",
        "action_intent_id": intent_id,
        "tenant_id": tenant,
        "account_id": SF_ACCOUNT,
        "decision_id": f"dec_{intent_id}",
        "action_type": action_type,
        "parameters": parameters,
        "approval": {
            "approval_id": f"apr_{intent_id}",
            "approved_by": "jordan@acme.example",
            "approved_at": "2026-11-27T15:02:11Z",
            "edited": False,
            "key_id": key["key_id"],
        },
        "created_at": "2026-11-27T15:00:00Z",
        "expires_at_epoch": expires_at_epoch
        if expires_at_epoch is not None
        else int(time.time()) + 7 * 86400,
    }
    return sign_intent(intent, key_id=key["key_id"], seed_b64url=key["private_key_seed_b64url_TEST_ONLY"])


# -- what reached the emulators -----------------------------------------------------------------
@dataclass(frozen=True)
class Seen:
    """One request an emulator received, in the order all emulators received them."""

    seq: int
    provider: str
    method: str
    path: str

    @property
    def create_key_value(self) -> str | None:
        """The External ID value of a Salesforce upsert (the provider-side create of one step)."""
        if self.provider != "salesforce" or self.method != "PATCH":
            return None
        match = SF_UPSERT.search(self.path)
        return match["value"] if match else None


class RequestLog:
    """Every request the emulators answer (faulted ones too), numbered in arrival order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self.entries: list[Seen] = []

    def install(self, provider: str, emulator: Emulator) -> None:
        """Record each request ``emulator`` handles (the loopback server calls ``emulator.handle``)."""
        inner = emulator.handle

        def handle(request: httpx.Request) -> httpx.Response:
            with self._lock:
                self.entries.append(
                    Seen(next(self._numbers), provider, request.method.upper(), request.url.path)
                )
            return inner(request)

        emulator.handle = handle  # type: ignore[method-assign]

    def mark(self) -> int:
        """The number of the newest request so far: later requests have a larger one."""
        with self._lock:
            return self.entries[-1].seq if self.entries else 0

    def after(self, mark: int, until: int | None = None) -> list[Seen]:
        """Requests received after ``mark`` (and up to ``until``)."""
        with self._lock:
            return [e for e in self.entries if e.seq > mark and (until is None or e.seq <= until)]


# -- provider-side effects ------------------------------------------------------------------------
@dataclass(frozen=True)
class Effect:
    """One object an intent's step left somewhere: at the emulator, or an internal row."""

    step: str
    generation: int
    id: str
    live: bool


def sf_key_values(intent_id: str) -> dict[str, tuple[str, int]]:
    """External ID value -> (step, generation) for every key this intent may ever use at Salesforce."""
    return {
        external_id_for(idempotency_key(intent_id, step, generation)): (step, generation)
        for step in SF_OBJECT
        for generation in GENERATIONS
    }


def salesforce_effects(emulator: SalesforceEmulator, intent_id: str) -> list[Effect]:
    """The emulator's records (deleted ones too) that hold one of this intent's step keys."""
    values = sf_key_values(intent_id)
    found = []
    for record_id in list(emulator.records):
        record = emulator.record(record_id)
        assert record is not None
        held = values.get(record.get(emulator.external_id_field) or "")
        if held is not None:
            found.append(Effect(held[0], held[1], record_id, not record["IsDeleted"]))
    return found


def internal_effects(engine: Any, intent_id: str) -> list[Effect]:
    """The internal tasks an intent created (voided ones are not live)."""
    keys = {idempotency_key(intent_id, "create_task", generation): generation for generation in GENERATIONS}
    with transaction(engine) as session:
        rows = session.exec(select(InternalTask).where(col(InternalTask.action_intent_id) == intent_id)).all()
    return [
        Effect("create_task", keys.get(r.idempotency_key, -1), str(r.id), r.voided_at is None) for r in rows
    ]


# -- the dead worker --------------------------------------------------------------------------------
CRASH_POINTS = (
    "claimed",  # the lease is taken, nothing else
    "checkpointed",  # CALL_STARTED recorded with the step's key, no call yet
    "provider_committed",  # the provider committed the write and answered; not recorded
    "answer_lost",  # the provider committed the write, the answer was lost (OutcomeUnknown); not recorded
    "step_recorded",  # the first unfinished step is SUCCEEDED; the run dies before the next step or finish
    "before_finish",  # every step SUCCEEDED; the fenced finish never happened
)


def drop_fault_for(call: StepCall) -> Fault:
    """Commit this step's upsert at Salesforce, then lose the answer (this call only)."""
    value = external_id_for(call.idempotency_key)
    return Fault(
        kind="drop", method="PATCH", path=rf"/{SF_OBJECT[call.step]}/{DEFAULT_EXTERNAL_ID_FIELD}/{value}$"
    )


def work_until_death(
    lease: Lease, raw: dict[str, Any], point: str, inject: Callable[[Fault], None] | None
) -> None:
    """What ``execute-intent`` does after its claim (plan, checkpoint, guarded call, record), up to ``point``.

    The same domain calls as the flow (the step functions themselves; the provider call without Prefect's retries):
    the guard before the provider call (kill switches, TTL, lease) is the flow's own. Anything that
    would have stopped the flow (a refused guard, a provider error, a lost lease) kills the worker
    there instead. ``inject`` queues a fault at the intent's emulator (``None`` for internal actions).
    """
    intent = parse_intent(raw)
    params = intent.normalized_parameters()
    with transaction(get_engine()) as session:
        fingerprint = executions.cache_fingerprint(executions.get(session, None, lease.action_intent_id))
    the_plan: Plan | Failure = plan(lease, intent.action_type, params, fingerprint)
    if isinstance(the_plan, Failure) or point == "claimed":
        return
    recorded = {r["step"]: r for r in step_records(lease.action_intent_id, lease.generation)}
    prior: dict[str, Any] = {}
    try:
        for seq, step in enumerate(the_plan.steps):
            call = StepCall(
                action_intent_id=lease.action_intent_id,
                tenant_id=lease.tenant_id,
                account_id=intent.account_id,
                action_type=intent.action_type,
                step=step,
                idempotency_key=idempotency_key(lease.action_intent_id, step, lease.generation),
                params=params,
                prior=dict(prior),
            )
            record = recorded.get(step)
            if record is not None and record["status"] == StepStatus.SUCCEEDED:
                prior[step] = StepResult.model_validate(record["result_json"]).ref
                continue
            checkpoint(lease, seq, the_plan.system, call)
            if point == "checkpointed":
                return
            if point == "answer_lost" and inject is not None:
                inject(drop_fault_for(call))
            result = run_step.fn(call, lease, cache_key=f"dead-worker:{uuid.uuid4().hex}")
            if point in ("provider_committed", "answer_lost"):
                return
            record_step_succeeded(lease, step, result, step not in the_plan.self_ledgered_steps)
            prior[step] = result.ref
            if point == "step_recorded":
                return
    except (ConnectorError, Halted, LeaseLost):
        return  # the flow would have stopped here: the worker dies here


@dataclass
class CrashedState:
    """A Prefect ``Crashed`` state as the ``on_crashed`` hook receives it."""

    def is_cancelled(self) -> bool:
        return False

    def is_cancelling(self) -> bool:
        return False

    def is_crashed(self) -> bool:
        return True


def new_ids(prefix: str) -> Iterator[str]:
    """``ai_{prefix}_1``, ``ai_{prefix}_2``, …"""
    return (f"ai_{prefix}_{n}" for n in itertools.count(1))
