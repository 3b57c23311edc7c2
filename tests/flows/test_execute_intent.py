"""The execute-intent flow end to end, on both databases, through a real Prefect server."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import select

from connectors.base import StepCall, StepResult
from connectors.errors import ProviderUnavailable, ValidationRejected
from connectors.internal import InternalConnector
from flows.execute_intent import AdmissionRejected, ExecutionFailed, ExecutionResult, execute_intent
from fulfill import controls, ledger
from fulfill.db import transaction
from fulfill.states import ExecutionStatus, FailureCode, RefusalReason
from fulfill.storage import LocalObjectStore
from fulfill.tables import (
    Execution,
    InternalAttachment,
    InternalTask,
    LedgerEntry,
    Outcome,
    SecurityEvent,
    Signal,
    StepRecord,
)
from surfaces.service import ExecutionService
from tasks import resolve

pytestmark = pytest.mark.usefixtures("prefect_server")

BRIEF = {"title": "Account brief", "content": "# Acme\n\nARR 1.2M", "content_type": "text/markdown"}


def _events(engine: Any, tenant: str, intent_id: str) -> list[str]:
    with transaction(engine) as session:
        return [row.event_type for row in ledger.entries_for_intent(session, tenant, intent_id)]


def _count(engine: Any, table: Any, intent_id: str) -> int:
    with transaction(engine) as session:
        return len(list(session.exec(select(table).where(table.action_intent_id == intent_id))))


def _chain_ok(engine: Any, tenant: str) -> bool:
    with transaction(engine) as session:
        return all(report.ok for report in ledger.verify_chains(session, [tenant]))


def test_success_then_duplicate_executes_once(engine: Any, make_intent: Any, tenant: str) -> None:
    intent = make_intent(
        "internal.create_task", {"title": "Prepare QBR deck", "assignee": "sam@acme.example"}
    )
    first = execute_intent(intent)
    assert first.status == "SUCCEEDED" and first.executed is True
    again = execute_intent(copy.deepcopy(intent))
    assert again == ExecutionResult(
        action_intent_id=intent["action_intent_id"],
        status="SUCCEEDED",
        executed=False,
        reason="ALREADY_FINISHED",
        explanation=first.explanation,
        external_refs=first.external_refs,
    )
    assert _count(engine, InternalTask, intent["action_intent_id"]) == 1
    events = _events(engine, tenant, intent["action_intent_id"])
    assert events.count("ACTION_EXECUTED") == 1
    assert events[:2] == ["INTENT_RECEIVED", "EXECUTION_STARTED"]
    status = ExecutionService(engine).get_execution_status(intent["action_intent_id"], tenant)
    assert status.status == "SUCCEEDED"
    assert status.external_refs[0].system == "internal"
    assert "Prepare QBR deck" in status.explanation
    assert _chain_ok(engine, tenant)


def test_tampered_approval_executes_nothing(engine: Any, make_intent: Any, tenant: str) -> None:
    intent = make_intent("internal.log_note", {"body": "hello"})
    intent["parameters"]["body"] = "edited after approval"
    with pytest.raises(ExecutionFailed, match="APPROVAL_INVALID"):
        execute_intent(intent)
    with transaction(engine) as session:
        assert session.get(Execution, intent["action_intent_id"]) is None
        assert session.exec(select(LedgerEntry).where(LedgerEntry.tenant_id == tenant)).all() == []
        [logged] = session.exec(select(SecurityEvent).where(SecurityEvent.claimed_tenant_id == tenant)).all()
    assert logged.code == "APPROVAL_INVALID"  # the security log: a forgery never enters the tenant's chain


def test_invalid_schema_is_rejected_naming_the_field(engine: Any, make_intent: Any, tenant: str) -> None:
    intent = make_intent("internal.log_note", {"body": "hello", "colour": "red"})
    with pytest.raises(ExecutionFailed, match=r"VALIDATION_FAILED: parameters\.colour"):
        execute_intent(intent)
    assert _events(engine, tenant, intent["action_intent_id"]) == ["INTENT_REJECTED"]


def test_expired_intent_never_runs(engine: Any, make_intent: Any, tenant: str) -> None:
    intent = make_intent("internal.create_task", {"title": "Too late"}, expires_at_epoch=1_000_000_000)
    assert execute_intent(intent).status == "EXPIRED"
    assert execute_intent(intent).status == "EXPIRED"
    assert _count(engine, InternalTask, intent["action_intent_id"]) == 0
    assert _events(engine, tenant, intent["action_intent_id"]) == ["INTENT_RECEIVED", "ACTION_EXPIRED"]


def test_kill_switch_holds_and_rerun_after_release(engine: Any, make_intent: Any, tenant: str) -> None:
    service = ExecutionService(engine)
    service.set_kill_switch("tenant", tenant, enabled=False, reason="incident 42", actor="ops@acme.example")
    intent = make_intent("internal.create_task", {"title": "Held"})
    with pytest.raises(ExecutionFailed, match="KILL_SWITCH"):
        execute_intent(intent)
    status = service.get_execution_status(intent["action_intent_id"], tenant)
    assert status.status == "FAILED" and status.failure and status.failure.code == "KILL_SWITCH"
    assert _count(engine, InternalTask, intent["action_intent_id"]) == 0
    service.set_kill_switch("tenant", tenant, enabled=True, reason="resolved", actor="ops@acme.example")
    assert execute_intent(intent).status == "SUCCEEDED"
    assert _count(engine, InternalTask, intent["action_intent_id"]) == 1


def test_emergency_stop_env_holds_everything(engine: Any, make_intent: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("FULFILL_EMERGENCY_STOP", "1")
    intent = make_intent("internal.create_task", {"title": "Held"})
    with pytest.raises(ExecutionFailed, match="KILL_SWITCH"):
        execute_intent(intent)
    assert _count(engine, InternalTask, intent["action_intent_id"]) == 0


class _Scripted(InternalConnector):
    """The real internal connector, with scripted failures per step (an explicit test double)."""

    def __init__(self, base: InternalConnector, failures: Mapping[str, list[Exception]]) -> None:
        super().__init__(base.engine, base.store)
        self.failures = {k: list(v) for k, v in failures.items()}
        self.calls: list[str] = []
        self.compensated: list[str] = []

    def execute(self, call: StepCall) -> StepResult:
        self.calls.append(call.step)
        queue = self.failures.get(call.step)
        if queue:
            raise queue.pop(0)
        return super().execute(call)

    def compensate(self, call: StepCall, result: StepResult) -> None:
        self.compensated.append(call.step)
        super().compensate(call, result)


@pytest.fixture
def scripted(engine: Any, monkeypatch: Any, tmp_path: Any) -> Any:
    def install(failures: Mapping[str, list[Exception]]) -> _Scripted:
        connector = _Scripted(InternalConnector(engine, LocalObjectStore(tmp_path / "objects")), failures)
        monkeypatch.setattr(resolve, "resolve_connector", lambda tenant_id, action_type: connector)
        monkeypatch.setattr(
            "tasks.connector_step.resolve_connector", lambda tenant_id, action_type: connector
        )
        monkeypatch.setattr("tasks.plan.resolve_connector", lambda tenant_id, action_type: connector)
        return connector

    return install


def test_transient_failure_is_retried_and_collapsed_in_the_timeline(
    engine: Any, make_intent: Any, tenant: str, scripted: Any
) -> None:
    connector = scripted({"create_task": [ProviderUnavailable("503 from provider")]})
    intent = make_intent("internal.create_task", {"title": "Retry me"})
    assert execute_intent(intent).status == "SUCCEEDED"
    assert connector.calls == ["create_task", "create_task"]
    events = _events(engine, tenant, intent["action_intent_id"])
    assert events.count("STEP_RETRY_SCHEDULED") == 1
    timeline = ExecutionService(engine).get_timeline(intent["action_intent_id"], tenant)
    assert [e.stage for e in timeline.events] == ["decision", "approval", "execution", "execution", "outcome"]
    assert "succeeded after 2 attempts" in timeline.events[3].detail
    assert ExecutionService(engine).get_execution_status(intent["action_intent_id"], tenant).attempts == 2


def test_permanent_failure_compensates_earlier_steps_newest_first(
    engine: Any, make_intent: Any, tenant: str, scripted: Any, tmp_path: Any
) -> None:
    connector = scripted(
        {"create_attachment": [ValidationRejected("parameters.title: rejected by provider")]}
    )
    intent = make_intent("internal.attach_brief", BRIEF)
    with pytest.raises(ExecutionFailed, match="VALIDATION_FAILED"):
        execute_intent(intent)
    assert connector.calls == ["store_brief", "create_attachment"], "permanent errors are not retried"
    assert connector.compensated == ["store_brief"]
    assert not list((tmp_path / "objects").rglob("*.md")), "the stored brief was deleted"
    status = ExecutionService(engine).get_execution_status(intent["action_intent_id"], tenant)
    assert status.status == "FAILED"
    assert status.failure and status.failure.compensation == "COMPENSATED"
    assert status.failure.code == "VALIDATION_FAILED"
    events = _events(engine, tenant, intent["action_intent_id"])
    assert events.index("STEP_FAILED") < events.index("COMPENSATED") < events.index("ACTION_FAILED")
    # A rerun after a compensated failure starts a new generation: fresh keys, nothing reused.
    assert execute_intent(intent).status == "SUCCEEDED"
    assert _count(engine, InternalAttachment, intent["action_intent_id"]) == 1
    assert _chain_ok(engine, tenant)


def test_rerun_of_a_failed_execution_skips_finished_steps(
    engine: Any, make_intent: Any, tenant: str, scripted: Any
) -> None:
    """Kill switch flipped between two steps: the run halts; after release a rerun does only step 2."""
    connector = scripted({})
    original_execute = connector.execute

    def flip_after_store(call: StepCall) -> StepResult:
        result = original_execute(call)
        if call.step == "store_brief":
            with transaction(engine) as session:
                controls.set_switch(session, "tenant", tenant, enabled=False, reason="mid-run", actor="ops")
        return result

    connector.execute = flip_after_store  # type: ignore[method-assign]
    intent = make_intent("internal.attach_brief", BRIEF)
    with pytest.raises(ExecutionFailed, match="KILL_SWITCH"):
        execute_intent(intent)
    status = ExecutionService(engine).get_execution_status(intent["action_intent_id"], tenant)
    assert status.failure and status.failure.needs_human and status.failure.compensation == "NONE"
    assert "EXECUTION_HALTED" in _events(engine, tenant, intent["action_intent_id"])
    with transaction(engine) as session:
        controls.set_switch(session, "tenant", tenant, enabled=True, reason="ok", actor="ops")
    connector.calls.clear()
    assert execute_intent(intent).status == "SUCCEEDED"
    assert connector.calls == ["create_attachment"], "the finished step was skipped"
    with transaction(engine) as session:
        steps = session.exec(
            select(StepRecord).where(StepRecord.action_intent_id == intent["action_intent_id"])
        )
        assert sorted((s.step, s.status) for s in steps) == [
            ("create_attachment", "SUCCEEDED"),
            ("store_brief", "SUCCEEDED"),
        ]


def test_cancel_pending_then_the_flow_does_nothing(engine: Any, make_intent: Any, tenant: str) -> None:
    from tasks.admit import verify_and_register

    intent = make_intent("internal.create_task", {"title": "Cancel me"})
    assert verify_and_register(intent).admitted
    service = ExecutionService(engine)
    assert (
        service.cancel_execution(intent["action_intent_id"], tenant, actor="jordan@acme.example").status
        == "CANCELLED"
    )
    assert execute_intent(intent).status == "CANCELLED"
    assert _count(engine, InternalTask, intent["action_intent_id"]) == 0
    from fulfill.executions import AlreadyFinished

    with pytest.raises(AlreadyFinished):
        service.cancel_execution(intent["action_intent_id"], tenant, actor="jordan@acme.example")


def test_other_tenants_cannot_see_the_execution(engine: Any, make_intent: Any, tenant: str) -> None:
    from fulfill.executions import ExecutionNotFound

    intent = make_intent("internal.create_task", {"title": "Private"})
    execute_intent(intent)
    service = ExecutionService(engine)
    for call in (service.get_execution_status, service.get_timeline):
        with pytest.raises(ExecutionNotFound):
            call(intent["action_intent_id"], "someone-else")
    with pytest.raises(ExecutionNotFound):
        service.cancel_execution(intent["action_intent_id"], "someone-else", actor="x")
    assert service.list_executions(tenant_id="someone-else").items == []
    assert [i.action_intent_id for i in service.list_executions(tenant_id=tenant).items] == [
        intent["action_intent_id"]
    ]


def test_same_id_different_content_conflicts(engine: Any, make_intent: Any, tenant: str) -> None:
    intent = make_intent("internal.create_task", {"title": "One"})
    execute_intent(intent)
    other = make_intent("internal.create_task", {"title": "Two"}, action_intent_id=intent["action_intent_id"])
    with pytest.raises(ExecutionFailed, match="CONFLICT"):
        execute_intent(other)
    assert _count(engine, InternalTask, intent["action_intent_id"]) == 1


@pytest.mark.parametrize("kind", [ExecutionFailed, AdmissionRejected])
def test_flow_exceptions_pickle_from_their_arguments(kind: type[ExecutionFailed]) -> None:
    message = "Salesforce said: FIELD_CUSTOM_VALIDATION_EXCEPTION: the stage: is locked"
    raised = kind(FailureCode.CONNECTOR_REJECTED, message)
    again = pickle.loads(pickle.dumps(raised))
    assert type(again) is kind
    assert (again.code, again.message) == (FailureCode.CONNECTOR_REJECTED, message)
    assert str(again) == str(raised) == f"CONNECTOR_REJECTED: {message}"


def test_the_flow_returns_one_result_model_on_every_path(engine: Any, make_intent: Any, tenant: str) -> None:
    intent = make_intent("internal.create_task", {"title": "Typed"})
    first = execute_intent(intent)
    assert isinstance(first, ExecutionResult)
    assert (first.status, first.executed, first.reason, first.code) == (
        ExecutionStatus.SUCCEEDED,
        True,
        None,
        None,
    )
    again = execute_intent(intent)
    assert (again.status, again.reason) == (ExecutionStatus.SUCCEEDED, RefusalReason.ALREADY_FINISHED)
    # Prefect persists flow results: the model round-trips through pickle and JSON, as strings.
    assert pickle.loads(pickle.dumps(again)) == again
    assert ExecutionResult.model_validate_json(again.model_dump_json()) == again
    assert json.loads(again.model_dump_json())["reason"] == "ALREADY_FINISHED"


class _DiedUndoing(Exception):
    """Stands for the executor's death part-way through an undo (the undo itself reached the store)."""


@pytest.mark.parametrize("noticed", [True, False], ids=["run-ended-hook-ran", "host-lost-no-hook"])
def test_an_executor_that_died_undoing_a_failure_is_finished_with_that_failure_never_re_sent(
    engine: Any,
    make_intent: Any,
    tenant: str,
    scripted: Any,
    tmp_path: Any,
    noticed: bool,
) -> None:
    """The step failed (VALIDATION_FAILED), the executor undid the earlier step and died before recording
    it. Whoever takes over must end the execution FAILED with that failure and finish the undo — not
    run the plan again, which would re-send the failed step (and could end SUCCEEDED with the earlier
    step's object already undone)."""
    import flows.hooks as hooks
    from flows.maintenance import reconcile

    connector = scripted(
        {"create_attachment": [ValidationRejected("parameters.title: rejected by provider")]}
    )
    real_compensate = connector.compensate
    intent = make_intent("internal.attach_brief", BRIEF)
    intent_id = intent["action_intent_id"]
    with pytest.MonkeyPatch.context() as dying:

        def undo_then_die(call: StepCall, result: StepResult) -> None:
            real_compensate(call, result)
            if not noticed:  # nothing records the end of the run: the host is gone
                dying.setattr(hooks, "executions", SimpleNamespace(get=_gone, ExecutionNotFound=LookupError))
            raise _DiedUndoing

        dying.setattr(connector, "compensate", undo_then_die)
        with pytest.raises(_DiedUndoing):
            execute_intent(intent)
    assert connector.calls == ["store_brief", "create_attachment"]
    connector.calls.clear()
    connector.compensated.clear()
    with transaction(engine) as session:
        row = session.get(Execution, intent_id)
        assert row is not None
        if noticed:  # the run's hook recorded the failure and left the undo owed
            assert (row.status, row.compensation_pending, row.lease_owner) == ("FAILED", True, None)
        else:
            assert row.status == "EXECUTING" and row.failure_code == "VALIDATION_FAILED"
    if not noticed:
        status = ExecutionService(engine).get_execution_status(intent_id, tenant)
        assert status.status == "EXECUTING" and status.failure is None, "failure shows only once FAILED"
        assert status.explanation.endswith("The steps already done are being undone.")
        with engine.begin() as conn:  # its heartbeat stopped: the lease runs out
            conn.execute(
                sa.text("UPDATE executions SET lease_until = :t WHERE action_intent_id = :i"),
                {"t": "2000-01-01 00:00:00", "i": intent_id},
            )

    reconcile(tenant_id=tenant)

    assert connector.calls == [], "the failed step was not sent again"
    assert connector.compensated == ["store_brief"], "the undo was finished (undoing twice is harmless)"
    status = ExecutionService(engine).get_execution_status(intent_id, tenant)
    assert status.status == "FAILED" and status.failure is not None
    assert status.failure.code == "VALIDATION_FAILED"
    assert status.failure.compensation == "COMPENSATED" and not status.failure.needs_human
    assert status.failure.message.endswith("Everything done before the failure was undone.")
    assert not list((tmp_path / "objects").rglob("*.md")), "the stored brief is gone"
    with transaction(engine) as session:
        signals = list(session.exec(select(Signal).where(Signal.action_intent_id == intent_id)))
        outcomes = list(session.exec(select(Outcome).where(Outcome.action_intent_id == intent_id)))
    assert [(s.kind, s.payload["reason"]) for s in signals] == [("ACTION_FAILED", "VALIDATION_FAILED")]
    assert [(o.failure_json or {}).get("compensation") for o in outcomes] == ["COMPENSATED"]
    assert _chain_ok(engine, tenant)
    # A rerun later starts a new generation: fresh keys, nothing reused from the undone attempt.
    assert execute_intent(intent).status == "SUCCEEDED"
    assert _count(engine, InternalAttachment, intent_id) == 1


def _gone(*args: Any, **kwargs: Any) -> Any:
    raise LookupError("the host is gone")


def test_a_rerun_whose_executor_died_is_not_taken_for_the_earlier_failure(
    engine: Any, make_intent: Any, tenant: str, scripted: Any
) -> None:
    """The earlier attempt failed; the rerun's executor died before any step. Its takeover must run the
    plan (the rerun has not failed), not end it with the earlier attempt's failure."""
    from flows.maintenance import reconcile
    from fulfill import executions

    scripted({"create_attachment": [ValidationRejected("parameters.title: rejected by provider")]})
    intent = make_intent("internal.attach_brief", BRIEF)
    intent_id = intent["action_intent_id"]
    with pytest.raises(ExecutionFailed, match="VALIDATION_FAILED"):
        execute_intent(intent)
    with transaction(engine) as session:  # the rerun's executor claims, then dies
        lease = executions.claim(session, intent_id, owner="rerun/1", blocked=None, lease_seconds=-1)
        assert isinstance(lease, executions.Lease)

    reconcile(tenant_id=tenant)

    status = ExecutionService(engine).get_execution_status(intent_id, tenant)
    assert status.status == "SUCCEEDED", status
    assert _count(engine, InternalAttachment, intent_id) == 1


def test_the_only_prefect_task_runs_of_an_intent_are_its_connector_steps(
    engine: Any, make_intent: Any
) -> None:
    """Admission, claim, plan and the fenced records are plain calls (issue 13): an intent of one step is
    one task run on Prefect's server, not seven."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    state = execute_intent(make_intent("internal.create_task", {"title": "One task run"}), return_state=True)
    assert state.is_completed(), state
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    only_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    names: list[str] = []
    seen_at, deadline = time.monotonic(), time.monotonic() + 30
    with get_client(sync_client=True) as client:
        # The server records task runs from their events, a little after the run: wait until the
        # list has stood still for 2 s.
        while time.monotonic() < deadline and (not names or time.monotonic() - seen_at < 2):
            now = sorted(task_run.name for task_run in client.read_task_runs(flow_run_filter=only_this_run))
            if now != names:
                names, seen_at = now, time.monotonic()
            time.sleep(0.2)
    assert [name.rsplit("-", 1)[0] for name in names] == ["connector-step"], names
