"""Scheduled flows and the state-hook backstop."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import select

from connectors.base import StepCall, idempotency_key
from flows.execute_intent import execute_intent
from flows.hooks import record_flow_end
from flows.maintenance import ORPHANS_EVERY_SECONDS, deliver_signals, expire_sweeper, reconcile
from fulfill import executions, ledger
from fulfill.db import transaction
from fulfill.intent import parse_intent
from fulfill.tables import Execution, InternalTask, Signal
from surfaces.service import ExecutionService
from tasks.admit import verify_and_register

pytestmark = pytest.mark.usefixtures("prefect_server")


def _claim(engine: Any, intent: dict[str, Any], owner: str) -> executions.Lease:
    with transaction(engine) as session:
        lease = executions.claim(session, intent["action_intent_id"], owner=owner, blocked=None)
    assert isinstance(lease, executions.Lease)
    return lease


def _expire_lease(engine: Any, intent_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE executions SET lease_until = :t WHERE action_intent_id = :i"),
            {"t": "2000-01-01 00:00:00", "i": intent_id},
        )


def test_reconcile_finishes_an_execution_whose_worker_died(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    intent = make_intent("internal.create_task", {"title": "Orphaned"})
    assert verify_and_register(intent).admitted
    lease = _claim(engine, intent, owner="dead-worker/1")
    # The dead worker got as far as the checkpoint and the provider write, not the step record.
    call = StepCall(
        action_intent_id=lease.action_intent_id,
        tenant_id=tenant,
        account_id=intent["account_id"],
        action_type="internal.create_task",
        step="create_task",
        idempotency_key=idempotency_key(lease.action_intent_id, "create_task"),
        params=parse_intent(intent).normalized_parameters(),
    )
    with transaction(engine) as session:
        executions.checkpoint(session, lease, seq=0, system="internal", call=call)
    from tasks.resolve import resolve_connector

    resolve_connector(tenant, "internal.create_task").execute(call)
    assert reconcile(tenant_id=tenant) == [], "a live lease is left alone"
    _expire_lease(engine, intent["action_intent_id"])
    results = reconcile(tenant_id=tenant)
    assert [r.status for r in results if r.action_intent_id == intent["action_intent_id"]] == ["SUCCEEDED"]
    with transaction(engine) as session:
        rows = session.exec(
            select(InternalTask).where(InternalTask.action_intent_id == intent["action_intent_id"])
        )
        assert len(list(rows)) == 1, "the retried step found the committed write"
        events = [
            e.event_type for e in ledger.entries_for_intent(session, tenant, intent["action_intent_id"])
        ]
    started = [e for e in events if e == "EXECUTION_STARTED"]
    assert len(started) == 2 and events.count("ACTION_EXECUTED") == 1


def test_expire_sweeper_expires_pending_intents(engine: Any, make_intent: Any, tenant: str) -> None:
    intent = make_intent("internal.create_task", {"title": "Stale"}, expires_at_epoch=1_000_000_000)
    assert verify_and_register(intent).admitted
    expire_sweeper(tenant_id=tenant)
    status = ExecutionService(engine).get_execution_status(intent["action_intent_id"], tenant)
    assert status.status == "EXPIRED"


def test_every_terminal_outcome_has_one_signal_and_it_is_delivered(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    ok = make_intent("internal.create_task", {"title": "Signal me"})
    late = make_intent("internal.create_task", {"title": "Late"}, expires_at_epoch=1_000_000_000)
    execute_intent(ok)
    execute_intent(ok)
    execute_intent(late)
    with transaction(engine) as session:
        signals = session.exec(select(Signal).where(Signal.tenant_id == tenant)).all()
    kinds = sorted((s.action_intent_id, s.kind, s.payload["reason"]) for s in signals)
    assert kinds == sorted(
        [
            (ok["action_intent_id"], "ACTION_EXECUTED", None),
            (late["action_intent_id"], "ACTION_FAILED", "EXPIRED"),
        ]
    )
    assert all(uuid.UUID(s.signal_id) for s in signals)
    assert deliver_signals() >= 2
    with transaction(engine) as session:
        undelivered = session.exec(
            select(Signal).where(Signal.tenant_id == tenant, Signal.delivered_at.is_(None))  # type: ignore[union-attr]
        ).all()
    assert undelivered == []


def test_crash_hook_flags_an_in_flight_step_for_a_human(engine: Any, make_intent: Any, tenant: str) -> None:
    intent = make_intent("internal.create_task", {"title": "Crashed"})
    assert verify_and_register(intent).admitted
    run_id = uuid.uuid4()
    lease = _claim(engine, intent, owner=f"{run_id}/abc")
    call = StepCall(
        action_intent_id=lease.action_intent_id,
        tenant_id=tenant,
        account_id=intent["account_id"],
        action_type="internal.create_task",
        step="create_task",
        idempotency_key="k",
        params={"title": "Crashed"},
    )
    with transaction(engine) as session:
        executions.checkpoint(session, lease, seq=0, system="internal", call=call)
    crashed = SimpleNamespace(is_cancelled=lambda: False, is_crashed=lambda: True)
    other_run = SimpleNamespace(id=uuid.uuid4(), parameters={"intent": intent})
    record_flow_end(None, other_run, crashed)
    with transaction(engine) as session:
        assert session.get(Execution, intent["action_intent_id"]).status == "EXECUTING"  # type: ignore[union-attr]
    record_flow_end(None, SimpleNamespace(id=run_id, parameters={"intent": intent}), crashed)
    status = ExecutionService(engine).get_execution_status(intent["action_intent_id"], tenant)
    assert status.status == "FAILED"
    assert status.failure and status.failure.code == "AMBIGUOUS_OUTCOME" and status.failure.needs_human


def _backdate_pending(engine: Any, intent_id: str, flow_run_id: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE executions SET updated_at = :t, flow_run_id = :r WHERE action_intent_id = :i"),
            {"t": "2000-01-01 00:00:00", "r": flow_run_id, "i": intent_id},
        )


def test_reconcile_runs_an_intent_left_pending_by_a_dead_run(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    """Killed between registration and claim: the intent is PENDING and nothing will run it."""
    intent = make_intent("internal.create_task", {"title": "Registered, never claimed"})
    assert verify_and_register(intent, flow_run_id=str(uuid.uuid4())).admitted
    intent_id = intent["action_intent_id"]

    assert reconcile(tenant_id=tenant) == [], "a PENDING intent inside its grace period is left alone"
    _backdate_pending(engine, intent_id, flow_run_id=str(uuid.uuid4()))  # a run Prefect never heard of
    reconcile(tenant_id=tenant)

    status = ExecutionService(engine).get_execution_status(intent_id, tenant)
    assert status.status == "SUCCEEDED"
    with transaction(engine) as session:
        tasks = session.exec(select(InternalTask).where(InternalTask.action_intent_id == intent_id))
        assert len(list(tasks)) == 1


def test_an_intent_whose_run_is_still_being_created_gets_the_longer_grace(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    """No run yet (the intake may still be creating it, and a paused pool must hold it): only after
    ``NO_RUN_GRACE_SECONDS``; a run that died without claiming is taken after the short grace."""
    intent = make_intent("internal.create_task", {"title": "Its run is still being created"})
    intent_id = intent["action_intent_id"]
    assert verify_and_register(intent).admitted

    assert reconcile(tenant_id=tenant, pending_grace_seconds=0) == [], "no run yet, inside the longer grace"
    assert ExecutionService(engine).get_execution_status(intent_id, tenant).status == "PENDING"
    _backdate_pending(engine, intent_id, flow_run_id=None)
    reconcile(tenant_id=tenant, pending_grace_seconds=0)

    assert ExecutionService(engine).get_execution_status(intent_id, tenant).status == "SUCCEEDED"


def test_reconcile_leaves_a_pending_intent_whose_run_waits_in_a_paused_pool(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    """A run held by a paused work pool (Scheduled/Late) still owns its intent: no bypass of the pause."""
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    intent = make_intent("internal.create_task", {"title": "Held by a paused pool"})
    intent_id = intent["action_intent_id"]
    assert verify_and_register(intent).admitted
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(
            execute_intent, parameters={"action_intent_id": intent_id}, state=Scheduled()
        )
    _backdate_pending(engine, intent_id, flow_run_id=str(run.id))

    reconcile(tenant_id=tenant)

    assert ExecutionService(engine).get_execution_status(intent_id, tenant).status == "PENDING"


def test_expire_sweeper_expires_an_intent_signed_by_a_rotated_out_key(
    engine: Any, make_intent: Any, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = make_intent("internal.create_task", {"title": "expired"}, expires_at_epoch=1)
    rotated = make_intent("internal.create_task", {"title": "signed by a retired key"}, expires_at_epoch=1)
    for intent in (good, rotated):
        with transaction(engine) as session:
            executions.register(session, intent, parse_intent(intent))
    # The second intent's key is no longer trusted: its admission fails, the sweep goes on.
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE executions SET intent_json = :j WHERE action_intent_id = :i"),
            {
                "j": json.dumps({**rotated, "approval": {**rotated["approval"], "key_id": "retired"}}),
                "i": rotated["action_intent_id"],
            },
        )

    results = expire_sweeper(tenant_id=tenant)

    assert sorted(r.action_intent_id for r in results) == sorted(
        i["action_intent_id"] for i in (good, rotated)
    )
    for intent in (good, rotated):
        status = ExecutionService(engine).get_execution_status(intent["action_intent_id"], tenant)
        assert status.status == "EXPIRED"
        assert events_of(engine, tenant, intent["action_intent_id"]).count("ACTION_EXPIRED") == 1


def events_of(engine: Any, tenant: str, intent_id: str) -> list[str]:
    with transaction(engine) as session:
        return [row.event_type for row in ledger.entries_for_intent(session, tenant, intent_id)]


def test_reconcile_gives_the_dead_workers_run_a_final_state_matching_the_execution(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    """The run whose worker died stays RUNNING in Prefect until the reconciler finishes its intent."""
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    intent = make_intent("internal.create_task", {"title": "Worker lost mid-run"})
    intent_id = intent["action_intent_id"]
    assert verify_and_register(intent).admitted
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(
            execute_intent, parameters={"action_intent_id": intent_id}, state=Running()
        )
        finished = client.create_flow_run(execute_intent, parameters={"action_intent_id": "x"})
        client.set_flow_run_state(finished.id, Running(), force=True)
    with transaction(engine) as session:
        lease = executions.claim(
            session, intent_id, owner="dead-worker/1", blocked=None, flow_run_id=str(run.id)
        )
    assert isinstance(lease, executions.Lease)
    _expire_lease(engine, intent_id)

    results = reconcile(tenant_id=tenant)

    assert [r.status for r in results if r.action_intent_id == intent_id] == ["SUCCEEDED"]
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
        untouched = client.read_flow_run(finished.id).state
    assert state is not None and state.type.value == "COMPLETED", state
    assert "worker was lost" in (state.message or "") and "SUCCEEDED" in (state.message or "")
    assert untouched is not None and untouched.type.value == "RUNNING", "another intent's run is not touched"


def test_orphan_states_match_the_executions_outcome() -> None:
    from flows.execute_intent import ExecutionResult
    from flows.maintenance import orphan_state
    from fulfill.states import ExecutionStatus

    def state_of(status: ExecutionStatus) -> tuple[str, str | None]:
        state = orphan_state(ExecutionResult(action_intent_id="ai_1", status=status), "run-9")
        assert "run-9" in (state.message or "")
        return state.type.value, state.name

    assert state_of(ExecutionStatus.SUCCEEDED) == ("COMPLETED", "Completed")
    assert state_of(ExecutionStatus.FAILED) == ("FAILED", "Failed")
    assert state_of(ExecutionStatus.CANCELLED) == ("CANCELLED", "Cancelled")
    assert state_of(ExecutionStatus.EXPIRED) == ("CANCELLED", "Expired")


def test_reconcile_takes_over_at_once_when_the_executors_run_crashed(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    """A flow-run process killed outright runs no hook; its run is Crashed while its lease still looks live."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Running

    crashed_intent = make_intent("internal.create_task", {"title": "Killed mid-write"})
    running_intent = make_intent("internal.create_task", {"title": "Still running elsewhere"})
    leases = {}
    with get_client(sync_client=True) as client:
        for intent in (crashed_intent, running_intent):
            assert verify_and_register(intent).admitted
            run = client.create_flow_run(
                execute_intent, parameters={"action_intent_id": intent["action_intent_id"]}, state=Running()
            )
            with transaction(engine) as session:
                lease = executions.claim(
                    session,
                    intent["action_intent_id"],
                    owner=f"{run.id}/dead",
                    blocked=None,
                    flow_run_id=str(run.id),
                )
            assert isinstance(lease, executions.Lease)
            leases[intent["action_intent_id"]] = (lease, run.id)
        crashed_id = crashed_intent["action_intent_id"]
        client.set_flow_run_state(leases[crashed_id][1], Crashed(message="process exited -9"), force=True)
    # The killed executor got as far as the provider write.
    lease = leases[crashed_id][0]
    call = StepCall(
        action_intent_id=crashed_id,
        tenant_id=tenant,
        account_id=crashed_intent["account_id"],
        action_type="internal.create_task",
        step="create_task",
        idempotency_key=idempotency_key(crashed_id, "create_task"),
        params=parse_intent(crashed_intent).normalized_parameters(),
    )
    with transaction(engine) as session:
        executions.checkpoint(session, lease, seq=0, system="internal", call=call)
    from tasks.resolve import resolve_connector

    resolve_connector(tenant, "internal.create_task").execute(call)

    results = {r.action_intent_id: r.status for r in reconcile(tenant_id=tenant)}

    assert results == {crashed_id: "SUCCEEDED"}, "the live lease of a running run is left alone"
    with transaction(engine) as session:
        rows = session.exec(select(InternalTask).where(InternalTask.action_intent_id == crashed_id))
        assert len(list(rows)) == 1, "the takeover found the killed executor's write"
    status = ExecutionService(engine).get_execution_status(running_intent["action_intent_id"], tenant)
    assert status.status == "EXECUTING"


# --- found by the state machine (tests/flows/test_state_machine.py) -----------------------
def _expire_approval(engine: Any, intent_id: str) -> None:
    """The approval runs out: every TTL check compares this column with the database clock."""
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE executions SET expires_at_epoch = 1000 WHERE action_intent_id = :i"),
            {"i": intent_id},
        )


def test_a_rerun_after_the_approval_expired_leaves_the_failure_as_it_was(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    service = ExecutionService(engine)
    service.set_kill_switch("tenant", tenant, enabled=False, reason="incident", actor="ops")
    intent = make_intent("internal.create_task", {"title": "Held, then too late"})
    assert service.execute_action_intent(intent).status == "FAILED"
    service.set_kill_switch("tenant", tenant, enabled=True, reason="", actor="ops")
    _expire_approval(engine, intent["action_intent_id"])

    rerun = service.rerun_execution(intent["action_intent_id"], tenant)

    assert (rerun.status, rerun.failure and rerun.failure.code) == ("FAILED", "KILL_SWITCH")
    with transaction(engine) as session:
        tasks = session.exec(
            select(InternalTask).where(InternalTask.action_intent_id == intent["action_intent_id"])
        )
        assert list(tasks) == [], "nothing runs after expiry"


def test_an_executor_that_died_part_way_past_expiry_has_its_steps_undone(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    intent = make_intent("internal.create_task", {"title": "Written, then the worker died"})
    intent_id = intent["action_intent_id"]
    assert verify_and_register(intent).admitted
    lease = _claim(engine, intent, owner="dead-worker/1")
    call = StepCall(
        action_intent_id=intent_id,
        tenant_id=tenant,
        account_id=intent["account_id"],
        action_type="internal.create_task",
        step="create_task",
        idempotency_key=idempotency_key(intent_id, "create_task"),
        params=parse_intent(intent).normalized_parameters(),
    )
    with transaction(engine) as session:
        executions.checkpoint(session, lease, seq=0, system="internal", call=call)
    from tasks.resolve import resolve_connector

    resolve_connector(tenant, "internal.create_task").execute(call)  # committed; the answer never recorded
    _expire_approval(engine, intent_id)
    _expire_lease(engine, intent_id)

    reconcile(tenant_id=tenant)

    status = ExecutionService(engine).get_execution_status(intent_id, tenant)
    assert status.status == "EXPIRED"
    assert "undone" in status.explanation, status.explanation
    with transaction(engine) as session:
        [task] = session.exec(select(InternalTask).where(InternalTask.action_intent_id == intent_id))
        assert task.voided_at is not None, "the write the dead executor made is undone"
        row = session.get(Execution, intent_id)
        assert row is not None and not row.compensation_pending


def test_a_rerun_held_by_a_kill_switch_keeps_the_flag_for_a_person(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    intent = make_intent("internal.create_task", {"title": "Crashed mid-call, then held"})
    assert verify_and_register(intent).admitted
    run_id = uuid.uuid4()
    lease = _claim(engine, intent, owner=f"{run_id}/abc")
    call = StepCall(
        action_intent_id=lease.action_intent_id,
        tenant_id=tenant,
        account_id=intent["account_id"],
        action_type="internal.create_task",
        step="create_task",
        idempotency_key=idempotency_key(lease.action_intent_id, "create_task"),
        params=parse_intent(intent).normalized_parameters(),
    )
    with transaction(engine) as session:
        executions.checkpoint(session, lease, seq=0, system="internal", call=call)
    crashed = SimpleNamespace(is_cancelled=lambda: False, is_crashed=lambda: True)
    record_flow_end(None, SimpleNamespace(id=run_id, parameters={"intent": intent}), crashed)
    service = ExecutionService(engine)
    service.set_kill_switch("tenant", tenant, enabled=False, reason="incident", actor="ops")

    held = service.rerun_execution(intent["action_intent_id"], tenant)

    assert held.failure is not None and held.failure.code == "KILL_SWITCH"
    assert held.failure.needs_human is True, "only a completed rerun clears the flag"


# --- recovery in seconds: the watching reconciler ------------------------------------------------
def _left_by_dead_executor(engine: Any, make_intent: Any, title: str, *, lease_seconds: int = -1) -> str:
    """A registered intent claimed by an executor that is gone; its lease runs out ``lease_seconds`` from now."""
    intent = make_intent("internal.create_task", {"title": title})
    assert verify_and_register(intent).admitted
    with transaction(engine) as session:
        lease = executions.claim(
            session, intent["action_intent_id"], owner="dead/1", blocked=None, lease_seconds=lease_seconds
        )
    assert isinstance(lease, executions.Lease)
    return str(intent["action_intent_id"])


def _count_passes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record every pass ``reconcile`` makes (whether it looked for PENDING orphans in it)."""
    import flows.maintenance as maintenance

    real = maintenance._reconcile_pass
    passes: list[bool] = []

    def counted(*args: Any, orphans: bool) -> list[Any]:
        passes.append(orphans)
        return real(*args, orphans=orphans)

    monkeypatch.setattr(maintenance, "_reconcile_pass", counted)
    return passes


def test_a_watching_reconcile_takes_over_a_lease_that_runs_out_while_it_watches(
    engine: Any, make_intent: Any, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its last heartbeat: the lease runs out 2 s from now.
    intent_id = _left_by_dead_executor(engine, make_intent, "Its executor stopped beating", lease_seconds=2)
    passes = _count_passes(monkeypatch)

    results = reconcile(tenant_id=tenant, watch_seconds=8, every_seconds=0.25)

    assert [r.status for r in results if r.action_intent_id == intent_id] == ["SUCCEEDED"], results
    assert len(passes) > 2 and passes[0] is True, "a pass every 0.25 s, orphans looked for at the start"
    looks = 1 + int(8 / ORPHANS_EVERY_SECONDS)
    assert sum(passes) <= looks < len(passes), "orphans are looked for every few seconds, not at every pass"
    with transaction(engine) as session:
        started = [
            e.details
            for e in ledger.entries_for_intent(session, tenant, intent_id)
            if e.event_type == "EXECUTION_STARTED"
        ]
    assert [s["took_over_expired_lease"] for s in started] == [False, True]
    assert 2 <= started[1]["silent_for_seconds"] < 8, "taken over seconds after the lease ran out"


def test_reconcile_makes_one_pass_unless_it_watches(
    engine: Any, make_intent: Any, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    intent = make_intent("internal.create_task", {"title": "Orphaned, found by the only pass"})
    intent_id = intent["action_intent_id"]
    assert verify_and_register(intent).admitted
    _claim(engine, intent, owner="dead-worker/1")
    _expire_lease(engine, intent_id)
    passes = _count_passes(monkeypatch)

    results = reconcile(tenant_id=tenant, watch_seconds=0)

    assert passes == [True]
    assert [(r.action_intent_id, r.status) for r in results] == [(intent_id, "SUCCEEDED")]
    with pytest.raises(ValueError, match="every_seconds"):
        reconcile.fn(tenant_id=tenant, watch_seconds=5, every_seconds=0)
    assert passes == [True], "refused before any pass"


def test_a_reconcile_run_whose_window_has_passed_makes_one_pass(
    engine: Any, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog after downtime: a run scheduled ten minutes ago does not watch its minute again."""
    from datetime import UTC, datetime, timedelta

    from prefect.runtime import flow_run

    passes = _count_passes(monkeypatch)
    late = datetime.now(tz=UTC) - timedelta(minutes=10)
    monkeypatch.setattr(flow_run, "scheduled_start_time", late, raising=False)
    reconcile(tenant_id=tenant, watch_seconds=60, every_seconds=0.1)
    assert passes == [True], "one pass, not a minute of them"

    almost = datetime.now(tz=UTC) - timedelta(seconds=57)
    monkeypatch.setattr(flow_run, "scheduled_start_time", almost, raising=False)
    reconcile(tenant_id=tenant, watch_seconds=60, every_seconds=0.1)
    assert 2 <= len(passes) - 1 <= 100, f"the seconds of its window left: {len(passes) - 1} passes"


def test_executors_that_died_together_are_taken_over_at_once(
    engine: Any, make_intent: Any, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One slow takeover (a Retry-After, a search settling) must not hold up the others: each takeover
    waits at a barrier that only opens when all three are under way at the same time."""
    import threading

    import flows.maintenance as maintenance

    ids = []
    for n in range(3):
        intent = make_intent("internal.create_task", {"title": f"Died together {n}"})
        assert verify_and_register(intent).admitted
        with transaction(engine) as session:  # a lease that already ran out: its executor is gone
            executions.claim(
                session, intent["action_intent_id"], owner=f"dead/{n}", blocked=None, lease_seconds=-1
            )
        ids.append(intent["action_intent_id"])
    together = threading.Barrier(3, timeout=60)
    real = maintenance._rerun

    def rerun(action_intent_id: str) -> Any:
        together.wait()  # BrokenBarrierError (the test fails) if the takeovers ran one after another
        return real(action_intent_id)

    monkeypatch.setattr(maintenance, "_rerun", rerun)

    results = reconcile(tenant_id=tenant)

    assert sorted(r.action_intent_id for r in results) == sorted(ids)
    assert {r.status for r in results} == {"SUCCEEDED"}, results
    with transaction(engine) as session:
        for intent_id in ids:
            tasks = session.exec(select(InternalTask).where(InternalTask.action_intent_id == intent_id))
            assert len(list(tasks)) == 1


def test_a_watching_reconcile_survives_a_failed_pass_and_a_failed_takeover(
    engine: Any, make_intent: Any, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dropped connection (to the database or the Prefect API) in one pass or one takeover must not end
    a watching reconciler: the dead executor's intent would then wait for the next scheduled run."""
    import httpx

    import flows.maintenance as maintenance

    intent_id = _left_by_dead_executor(engine, make_intent, "Taken over despite a flaky connection")
    real_pass, real_rerun = maintenance._reconcile_pass, maintenance._rerun
    calls = {"pass": 0, "rerun": 0}

    def flaky_pass(*args: Any, orphans: bool) -> list[Any]:
        calls["pass"] += 1
        if calls["pass"] == 1:
            raise httpx.ConnectError("All connection attempts failed")
        return real_pass(*args, orphans=orphans)

    def flaky_rerun(action_intent_id: str) -> Any:
        calls["rerun"] += 1
        if calls["rerun"] == 1:
            raise sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return real_rerun(action_intent_id)

    monkeypatch.setattr(maintenance, "_reconcile_pass", flaky_pass)
    monkeypatch.setattr(maintenance, "_rerun", flaky_rerun)

    results = reconcile(tenant_id=tenant, watch_seconds=4, every_seconds=0.25)

    assert calls["rerun"] == 2, "the failed takeover was tried again by a later pass"
    assert [(r.action_intent_id, r.status) for r in results] == [(intent_id, "SUCCEEDED")]
    with transaction(engine) as session:
        tasks = session.exec(select(InternalTask).where(InternalTask.action_intent_id == intent_id))
        assert len(list(tasks)) == 1


def test_a_reconcile_that_could_not_settle_an_intent_ends_failed_naming_it(
    engine: Any, make_intent: Any, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.maintenance as maintenance

    intent_id = _left_by_dead_executor(engine, make_intent, "Its takeover keeps failing")

    def broken(action_intent_id: str) -> Any:
        raise RuntimeError("the database is gone")

    monkeypatch.setattr(maintenance, "_rerun", broken)

    state = reconcile(tenant_id=tenant, return_state=True)

    assert state.is_failed()
    with pytest.raises(
        maintenance.ReconcileIncomplete, match=f"{intent_id}: RuntimeError: the database is gone"
    ):
        state.result()
    with transaction(engine) as session:
        row = session.get(Execution, intent_id)
        assert row is not None and row.status == "EXECUTING", "left for the next run, not guessed at"
