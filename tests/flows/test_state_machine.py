"""A property-based state machine over the life of intents (issue 12, item 2).

Hypothesis drives a few intents per example (internal tasks, Salesforce tasks and two-step
Salesforce opportunities) through any interleaving of: submit, receive only (as the webhook intake
does before its run starts), duplicate delivery, a worker crash at each recovery point, reconcile
after the lease ran out, operator rerun, cancel, a tenant kill switch engaged/released, expiry of
the approval, the expire sweeper, and provider faults (503, lost answers, timeouts, a permanent
rejection). The flows run in this process (``ExecutionService`` → ``execute-intent``) against a
real Prefect test server, the tenant's CRM is the Salesforce emulator served on loopback, and
each test runs on SQLite and on PostgreSQL.

After every step these invariants are checked against the database and the emulator's own store
(never the flows' reports):

1. at most one provider-side effect per intent and step: per (step, generation) at most one
   object, per step at most one LIVE object over all generations; a SUCCEEDED execution holds
   exactly one live object per step, the one its external refs name; an EXPIRED or CANCELLED one
   that owes no undo and flags nobody holds none;
2. every terminal execution has exactly one outcome and one signal for its attempt (and every
   outcome has exactly one signal and one finishing ledger fact);
3. the tenant's ledger chain verifies;
4. no provider create after the intent's expiry was set, and no request at all at the provider
   while the tenant's kill switch is engaged (compensations stop too, contract §8);
5. ``needs_human`` is cleared only by a completed rerun: a later attempt that started, ran, and
   ended in a terminal state through the flow (not a claim refused by a kill switch, not a crash).

The model only remembers what the test did (which intents exist, when an expiry or a kill switch
took effect in the emulators' request order, which attempts belonged to a dead worker).

How "time passes": every TTL check in fulfill reads ``executions.expires_at_epoch`` against the
database clock (claim, the guard before each provider call, the retry condition, the sweeper), so
``expire`` moves that column to the past — to the code, exactly the approval running out. A lease
running out is ``lease_until`` moved to the past, as tests/flows/test_maintenance.py does.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlmodel import col, select

from flows.hooks import record_flow_end
from flows.maintenance import expire_sweeper, reconcile
from fulfill import executions, ledger
from fulfill.controls import blocked_reason
from fulfill.db import db_now, transaction
from fulfill.executions import (
    FINISH_EVENT,
    SIGNAL_NAMESPACE,
    TERMINAL,
    AlreadyFinished,
    NotRerunnable,
    Refusal,
)
from fulfill.states import ExecutionStatus
from fulfill.tables import Execution, LedgerEntry, Outcome, Signal
from fulfill.tenants import configure
from sandbox.base import Fault
from sandbox.local import Sandbox, start_sandbox
from surfaces.service import ExecutionService, IntentRejected
from tasks.admit import Admitted, verify_and_register
from tests.flows.machine_support import (
    CRASH_POINTS,
    KINDS,
    SF_CREATE_PATH,
    CrashedState,
    Effect,
    RequestLog,
    internal_effects,
    new_ids,
    salesforce_effects,
    sf_key_values,
    signed_intent,
    work_until_death,
)

pytestmark = pytest.mark.usefixtures("prefect_server")

MAX_INTENTS = 4
NEVER_AGAIN = (ExecutionStatus.SUCCEEDED, ExecutionStatus.EXPIRED, ExecutionStatus.CANCELLED)
SF_ERROR = [{"message": "Server unavailable", "errorCode": "SERVER_UNAVAILABLE"}]
REJECTED = [
    {"message": "Rejected by an org rule", "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "fields": []}
]
#: The next provider create(s) misbehave: name -> the fault queued at the Salesforce emulator.
FAULTS: dict[str, Fault] = {
    "503": Fault(kind="status", method="PATCH", path=SF_CREATE_PATH, status=503, body=SF_ERROR),
    "drop": Fault(kind="drop", method="PATCH", path=SF_CREATE_PATH),
    "timeout": Fault(kind="timeout", method="PATCH", path=SF_CREATE_PATH),
    "drop_every_retry": Fault(kind="drop", method="PATCH", path=SF_CREATE_PATH, times=4),
    "timeout_every_retry": Fault(kind="timeout", method="PATCH", path=SF_CREATE_PATH, times=4),
    "reject": Fault(kind="status", method="PATCH", path=SF_CREATE_PATH, status=400, body=REJECTED),
}
ACTOR = "ops@acme.example"


@dataclass
class Tracked:
    """What the test knows about one intent: its signed document, and when its expiry took effect."""

    raw: dict[str, Any]
    expired_after: int | None = None  # request-log mark: no provider create of this intent after it


@dataclass(frozen=True)
class World:
    """What outlives one example: the database, the emulators, their request log, the saved blocks."""

    engine: Any
    sandbox: Sandbox
    log: RequestLog
    blocks: dict[str, str]


class LifecycleMachine(RuleBasedStateMachine):
    """Rules are operations on a fresh tenant; invariants read the database and the emulator."""

    world: ClassVar[World]
    intents = Bundle("intents")

    def __init__(self) -> None:
        super().__init__()
        world = self.world
        self.engine = world.engine
        self.sandbox = world.sandbox
        self.log = world.log
        self.tenant = f"sm-{uuid.uuid4().hex[:10]}"
        self.ids = new_ids(uuid.uuid4().hex[:10])
        for emulator in self.sandbox.emulators().values():
            emulator.reset()
        with transaction(self.engine) as session:
            configure(
                session,
                self.tenant,
                actor="state-machine",
                crm_provider="salesforce",
                crm_block=world.blocks["salesforce"],
                calendar_provider="google_calendar",
                calendar_block=world.blocks["google_calendar"],
            )
        self.service = ExecutionService(self.engine)
        self.model: dict[str, Tracked] = {}
        self.switch_windows: list[tuple[int, int | None]] = []  # (engaged after, released at) marks
        self.dead_attempts: set[tuple[str, int]] = set()
        self.flagged_at: dict[str, int] = {}  # intent -> attempt when needs_human was last seen set

    # -- helpers ------------------------------------------------------------------------------
    def _new(self, action_type: str, *, expired: bool) -> str:
        intent_id = next(self.ids)
        expires = 1_000_000_000 if expired else None
        raw = signed_intent(self.tenant, intent_id, action_type, expires_at_epoch=expires)
        self.model[intent_id] = Tracked(raw, expired_after=self.log.mark() if expired else None)
        return intent_id

    def _execution(self, intent_id: str) -> Execution:
        with transaction(self.engine) as session:
            return executions.get(session, self.tenant, intent_id)

    def _deliver(self, intent_id: str) -> None:
        try:
            self.service.execute_action_intent(self.model[intent_id].raw)
        except IntentRejected as refused:  # pragma: no cover - a failure of the system under test
            raise AssertionError(f"a signed intent was refused on delivery: {refused.code}") from None

    def _engaged(self) -> bool:
        return bool(self.switch_windows) and self.switch_windows[-1][1] is None

    def _expire_leases(self) -> None:
        """Every lease of this tenant ran out (its worker is gone): what a missed heartbeat (15 s of silence) does."""
        with transaction(self.engine) as session:
            session.execute(
                sa.update(Execution)
                .where(col(Execution.tenant_id) == self.tenant, col(Execution.lease_until).is_not(None))
                .values(lease_until=db_now(session) - timedelta(minutes=10))
            )

    def _reconcilable(self) -> bool:
        """Whether the reconciler has anything of this tenant to look at (a crash, an owed undo)."""
        with transaction(self.engine) as session:
            return (
                session.exec(
                    select(Execution.action_intent_id).where(
                        col(Execution.tenant_id) == self.tenant,
                        sa.or_(
                            col(Execution.status) == ExecutionStatus.EXECUTING,
                            col(Execution.compensation_pending).is_(True),
                        ),
                    )
                ).first()
                is not None
            )

    def _any_pending(self) -> bool:
        with transaction(self.engine) as session:
            return (
                session.exec(
                    select(Execution.action_intent_id).where(
                        col(Execution.tenant_id) == self.tenant,
                        col(Execution.status) == ExecutionStatus.PENDING,
                    )
                ).first()
                is not None
            )

    # -- rules --------------------------------------------------------------------------------
    @initialize(target=intents, action_type=st.sampled_from(sorted(KINDS)))
    def first_submit(self, action_type: str) -> str:
        """Every example starts with one intent submitted and run."""
        return self.submit(action_type)

    @precondition(lambda self: len(self.model) < MAX_INTENTS)
    @rule(target=intents, action_type=st.sampled_from(sorted(KINDS)))
    def submit(self, action_type: str) -> str:
        """A new approved intent, delivered and run through the service (the flow, in process)."""
        intent_id = self._new(action_type, expired=False)
        self._deliver(intent_id)
        return intent_id

    @precondition(lambda self: len(self.model) < MAX_INTENTS)
    @rule(target=intents, action_type=st.sampled_from(sorted(KINDS)), expired=st.booleans())
    def receive(self, action_type: str, expired: bool) -> str:
        """A new intent received and registered (PENDING) whose run has not started; maybe expired already."""
        intent_id = self._new(action_type, expired=expired)
        admission = verify_and_register(self.model[intent_id].raw)
        assert isinstance(admission, Admitted) and admission.created, admission
        assert self._execution(intent_id).status == ExecutionStatus.PENDING
        return intent_id

    @rule(intent_id=intents)
    def duplicate(self, intent_id: str) -> None:
        """The same approval delivered again (also how a received intent gets run, and a FAILED one rerun)."""
        before = self._execution(intent_id)
        requests_before = self.log.mark()
        self._deliver(intent_id)
        after = self._execution(intent_id)
        if before.status in NEVER_AGAIN:
            assert after.status == before.status, f"{intent_id}: {before.status} ran again"
            assert after.attempt == before.attempt
            assert self.log.after(requests_before) == [], f"{intent_id}: {before.status} called the provider"

    @precondition(lambda self: len(self.model) < MAX_INTENTS)
    @rule(
        target=intents,
        action_type=st.sampled_from(sorted(KINDS)),
        point=st.sampled_from(CRASH_POINTS),
        noticed_by_hook=st.booleans(),
    )
    def submit_and_crash(self, action_type: str, point: str, noticed_by_hook: bool) -> str:
        """A new intent whose first run dies at ``point`` (see :meth:`crash`)."""
        intent_id = self._new(action_type, expired=False)
        self.crash(intent_id, point, noticed_by_hook)
        return intent_id

    @rule(intent_id=intents, point=st.sampled_from(CRASH_POINTS), noticed_by_hook=st.booleans())
    def crash(self, intent_id: str, point: str, noticed_by_hook: bool) -> None:
        """A worker admits and claims the intent, works up to ``point`` and dies there.

        Noticed either by Prefect's ``on_crashed`` hook at once, or by nobody: the execution stays
        EXECUTING under a dead lease until ``reconcile_after_lease_expiry``.
        """
        raw = self.model[intent_id].raw
        assert isinstance(verify_and_register(raw), Admitted)
        run_id = uuid.uuid4()
        with transaction(self.engine) as session:
            lease = executions.claim(
                session,
                intent_id,
                owner=f"{run_id}/dead-worker",
                blocked=blocked_reason(session, self.tenant, raw["action_type"]),
            )
        if isinstance(lease, Refusal):
            return  # the claim said no (finished, busy, expired, paused): the worker had nothing to do
        self.dead_attempts.add((intent_id, lease.attempt))
        provider = KINDS[raw["action_type"]][2]
        inject = self.sandbox.emulators()[provider].inject if provider else None
        work_until_death(lease, raw, point, inject)
        if noticed_by_hook:
            run = type("Run", (), {"id": run_id, "parameters": {"action_intent_id": intent_id}})()
            record_flow_end(None, run, CrashedState())

    @precondition(lambda self: self._reconcilable())
    @rule()
    def reconcile_after_lease_expiry(self) -> None:
        """The dead workers' leases run out; the reconciler settles what they left behind."""
        self._expire_leases()
        reconcile(tenant_id=self.tenant, pending_grace_seconds=3600.0)

    @rule(intent_id=intents)
    def rerun(self, intent_id: str) -> None:
        """An operator reruns the intent: only a FAILED execution that owes no undo may run again."""
        before = self._execution(intent_id)
        rerunnable = before.status == ExecutionStatus.FAILED and not before.compensation_pending
        try:
            self.service.rerun_execution(intent_id, self.tenant, actor=ACTOR)
        except NotRerunnable:
            assert not rerunnable, f"{intent_id}: a FAILED execution was refused a rerun"
            return
        assert rerunnable, f"{intent_id}: a {before.status} execution was rerun"

    @rule(intent_id=intents)
    def cancel(self, intent_id: str) -> None:
        """A person cancels the intent: refused once it is terminal."""
        before = self._execution(intent_id)
        try:
            self.service.cancel_execution(intent_id, self.tenant, actor=ACTOR)
        except AlreadyFinished:
            assert before.status in TERMINAL, f"{intent_id}: a {before.status} execution refused the cancel"
            return
        assert before.status not in TERMINAL, f"{intent_id}: a {before.status} execution was cancelled"
        after = self._execution(intent_id)
        assert after.status == ExecutionStatus.CANCELLED
        assert after.compensation_pending == (before.status == ExecutionStatus.EXECUTING)

    @rule()
    def kill_switch(self) -> None:
        """The tenant's kill switch flips: engaged if it was released, released if it was engaged."""
        engage = not self._engaged()
        self.service.set_kill_switch(
            "tenant", self.tenant, enabled=not engage, reason="state machine", actor=ACTOR
        )
        if engage:
            self.switch_windows.append((self.log.mark(), None))
        else:
            self.switch_windows[-1] = (self.switch_windows[-1][0], self.log.mark())

    @rule(intent_id=intents)
    def expire(self, intent_id: str) -> None:
        """The intent's approval runs out now (database clock; see the module doc)."""
        with transaction(self.engine) as session:
            executions.get(session, self.tenant, intent_id)  # this tenant's, or the test is wrong
            now = int(db_now(session).timestamp())
            session.execute(
                sa.update(Execution)
                .where(col(Execution.action_intent_id) == intent_id, col(Execution.expires_at_epoch) >= now)
                .values(expires_at_epoch=now - 1)
            )
        tracked = self.model[intent_id]
        if tracked.expired_after is None:
            tracked.expired_after = self.log.mark()

    @precondition(lambda self: self._any_pending())
    @rule()
    def sweep_expired(self) -> None:
        """The expire sweeper: PENDING intents past their expiry become EXPIRED."""
        expire_sweeper(tenant_id=self.tenant)

    @rule(fault=st.sampled_from(sorted(FAULTS)))
    def provider_fault(self, fault: str) -> None:
        """The next Salesforce create(s) misbehave (queued until a create comes)."""
        template = FAULTS[fault]
        self.sandbox.salesforce.inject(Fault(**{**template.__dict__}))

    # -- invariants ---------------------------------------------------------------------------
    @invariant()
    def invariants_hold(self) -> None:
        with transaction(self.engine) as session:
            rows = {
                e.action_intent_id: e
                for e in session.exec(select(Execution).where(col(Execution.tenant_id) == self.tenant))
            }
            outcomes = list(session.exec(select(Outcome).where(col(Outcome.tenant_id) == self.tenant)))
            signals = list(session.exec(select(Signal).where(col(Signal.tenant_id) == self.tenant)))
            entries = list(session.exec(select(LedgerEntry).where(col(LedgerEntry.tenant_id) == self.tenant)))
            chains = ledger.verify_chains(session, [self.tenant])
        assert set(rows) == set(self.model), "every intent the test made is registered, and only those"
        self._one_effect_per_step(rows)
        self._one_outcome_and_signal(rows, outcomes, signals, entries)
        assert chains and all(report.ok for report in chains), chains
        self._no_call_after_expiry_or_kill_switch()
        self._needs_human_cleared_only_by_a_completed_rerun(rows, entries)

    def _effects(self, intent_id: str) -> list[Effect]:
        if KINDS[self.model[intent_id].raw["action_type"]][2] is None:
            return internal_effects(self.engine, intent_id)
        return salesforce_effects(self.sandbox.salesforce, intent_id)

    def _one_effect_per_step(self, rows: dict[str, Execution]) -> None:
        for intent_id, execution in rows.items():
            effects = self._effects(intent_id)
            per_key = Counter((e.step, e.generation) for e in effects)
            assert all(n == 1 for n in per_key.values()), f"{intent_id}: duplicates at the provider {effects}"
            live = Counter(e.step for e in effects if e.live)
            assert all(n == 1 for n in live.values()), f"{intent_id}: two live objects for one step {effects}"
            plan = KINDS[execution.action_type][1]
            if execution.status == ExecutionStatus.SUCCEEDED:
                assert set(live) == set(plan), f"{intent_id}: SUCCEEDED but live objects are {effects}"
                refs = {ref["id"] for ref in (self._latest_refs(intent_id))}
                assert refs == {e.id for e in effects if e.live}, f"{intent_id}: refs {refs} vs {effects}"
            elif (
                execution.status in (ExecutionStatus.EXPIRED, ExecutionStatus.CANCELLED)
                and not execution.compensation_pending
                and not execution.needs_human
            ):
                assert not live, (
                    f"{intent_id}: {execution.status} ({execution.explanation!r}) owes no undo and flags "
                    f"nobody, yet the provider holds live objects {effects}"
                )

    def _latest_refs(self, intent_id: str) -> list[dict[str, Any]]:
        with transaction(self.engine) as session:
            latest = executions.latest_outcome(session, intent_id)
        assert latest is not None
        return list(latest.external_refs)

    def _one_outcome_and_signal(
        self,
        rows: dict[str, Execution],
        outcomes: list[Outcome],
        signals: list[Signal],
        entries: list[LedgerEntry],
    ) -> None:
        signal_ids = Counter(s.signal_id for s in signals)
        finishing = Counter(e.action_intent_id for e in entries if e.event_type in set(FINISH_EVENT.values()))
        for intent_id, execution in rows.items():
            mine = [o for o in outcomes if o.action_intent_id == intent_id]
            by_attempt = Counter(o.attempt for o in mine)
            assert all(n == 1 for n in by_attempt.values()), f"{intent_id}: outcomes {by_attempt}"
            for outcome in mine:
                expected = str(
                    uuid.uuid5(SIGNAL_NAMESPACE, f"{intent_id}:{outcome.attempt}:{outcome.status}")
                )
                assert signal_ids[expected] == 1, (
                    f"{intent_id}: attempt {outcome.attempt} has no single signal"
                )
            assert sum(1 for s in signals if s.action_intent_id == intent_id) == len(mine), intent_id
            assert finishing[intent_id] == len(mine), f"{intent_id}: ledger finish facts vs outcomes"
            current = [o for o in mine if o.attempt == execution.attempt]
            if execution.status in TERMINAL:
                assert len(current) == 1 and current[0].status == execution.status, (
                    f"{intent_id}: {execution.status} at attempt {execution.attempt}, outcomes "
                    f"{[(o.attempt, o.status) for o in mine]}"
                )
            else:
                assert current == [], (
                    f"{intent_id}: {execution.status} but attempt {execution.attempt} has an outcome"
                )

    def _no_call_after_expiry_or_kill_switch(self) -> None:
        for intent_id, tracked in self.model.items():
            if tracked.expired_after is None:
                continue
            values = sf_key_values(intent_id)
            late = [e for e in self.log.after(tracked.expired_after) if e.create_key_value in values]
            assert late == [], f"{intent_id}: provider creates after its approval expired: {late}"
        for engaged_after, released_at in self.switch_windows:
            during = self.log.after(engaged_after, released_at)
            assert during == [], f"requests at the provider while the kill switch was engaged: {during}"

    def _needs_human_cleared_only_by_a_completed_rerun(
        self, rows: dict[str, Execution], entries: list[LedgerEntry]
    ) -> None:
        for intent_id, execution in rows.items():
            if execution.needs_human:
                self.flagged_at[intent_id] = execution.attempt
                continue
            flagged_at = self.flagged_at.pop(intent_id, None)
            if flagged_at is None:
                continue
            started = {
                e.details.get("attempt")
                for e in entries
                if e.action_intent_id == intent_id and e.event_type == "EXECUTION_STARTED"
            }
            completed_rerun = (
                execution.status in TERMINAL
                and execution.attempt > flagged_at
                and execution.attempt in started
                and (intent_id, execution.attempt) not in self.dead_attempts
            )
            assert completed_rerun, (
                f"{intent_id}: needs_human (set at attempt {flagged_at}) was cleared at attempt "
                f"{execution.attempt} ({execution.status}, {execution.failure_code}) without a completed rerun"
            )

    def teardown(self) -> None:
        """Release everything and let the reconciler settle: no intent is lost (non-terminal, unflagged)."""
        self.service.set_kill_switch(
            "tenant", self.tenant, enabled=True, reason="end of example", actor=ACTOR
        )
        if self._engaged():
            self.switch_windows[-1] = (self.switch_windows[-1][0], self.log.mark())
        if self._reconcilable():
            self._expire_leases()
            reconcile(tenant_id=self.tenant, pending_grace_seconds=3600.0)
        for intent_id in self.model:
            execution = self._execution(intent_id)
            if execution.status == ExecutionStatus.PENDING:
                continue  # received, its run never started: still the runner's (no lease was taken)
            assert execution.status in TERMINAL, f"{intent_id}: lost in {execution.status}"
            assert not execution.compensation_pending, f"{intent_id}: an undo is still owed after release"
        self.invariants_hold()


SETTINGS = settings(
    max_examples=20,
    stateful_step_count=10,
    deadline=None,
    derandomize=True,  # the same examples on every run and machine: CI is reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    print_blob=True,
)


@pytest.fixture(scope="module")
def sandbox() -> Any:
    """The emulators on loopback for this module, with every request they answer logged in order."""
    served = start_sandbox()
    log = RequestLog()
    for provider, emulator in served.emulators().items():
        log.install(provider, emulator)
    try:
        yield served, log
    finally:
        served.shutdown()


@pytest.fixture(scope="module")
def block_names(sandbox: Any, prefect_server: str) -> dict[str, str]:
    return dict(sandbox[0].save_credentials(f"sm-{uuid.uuid4().hex[:8]}"))


def test_lifecycle_state_machine(engine: Any, sandbox: Any, block_names: dict[str, str]) -> None:
    served, log = sandbox
    machine = type(
        "LifecycleMachineHere", (LifecycleMachine,), {"world": World(engine, served, log, block_names)}
    )
    run_state_machine_as_test(machine, settings=SETTINGS)
