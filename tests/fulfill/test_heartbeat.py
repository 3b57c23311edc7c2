"""The lease heartbeat (fulfill/heartbeat.py) and what a takeover records, on both databases."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from fulfill import executions, ledger
from fulfill.db import db_now, transaction
from fulfill.executions import Lease
from fulfill.heartbeat import Heartbeat, keep_alive
from fulfill.intent import parse_intent
from fulfill.states import ExecutionStatus
from fulfill.tables import Execution

FAST = 0.05  # seconds between beats in these tests


@pytest.fixture
def leased(engine: Any, make_intent: Any) -> Lease:
    """A registered intent, claimed by one executor."""
    raw = make_intent("internal.create_task", {"title": "Kept alive"})
    with transaction(engine) as session:
        executions.register(session, raw, parse_intent(raw))
        lease = executions.claim(session, raw["action_intent_id"], owner="run-1/a", blocked=None)
    assert isinstance(lease, Lease)
    return lease


def _row(engine: Any, intent_id: str) -> Execution:
    with transaction(engine) as session:
        row = session.get(Execution, intent_id)
        assert row is not None
        return row


def _backdate(engine: Any, intent_id: str, *, seconds: float, lease_too: bool = True) -> datetime:
    """The executor's last sign of life (and, with ``lease_too``, its lease's end) ``seconds`` ago."""
    with transaction(engine) as session:
        row = session.get(Execution, intent_id)
        assert row is not None
        then = db_now(session) - timedelta(seconds=seconds)
        row.updated_at = then
        if lease_too:
            row.lease_until = then
        session.add(row)
    return then


def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_running_heartbeat_renews_the_lease(engine: Any, leased: Lease) -> None:
    lapsed = _backdate(engine, leased.action_intent_id, seconds=60)

    with keep_alive(leased, every=FAST, engine=engine) as heartbeat:
        _wait_for(lambda: heartbeat.beats >= 3)

    row = _row(engine, leased.action_intent_id)
    with transaction(engine) as session:
        now = db_now(session)
    assert row.lease_until is not None and row.lease_until > now, "renewed into the future"
    assert row.lease_until <= now + timedelta(seconds=executions.DEFAULT_LEASE_SECONDS)
    assert row.updated_at is not None and row.updated_at > lapsed, "a beat is a sign of life"
    assert row.status == ExecutionStatus.EXECUTING and row.lease_owner == leased.owner
    assert not heartbeat.lost.is_set()


def test_the_heartbeat_stops_once_the_execution_is_finished(engine: Any, leased: Lease) -> None:
    with keep_alive(leased, every=FAST, engine=engine) as heartbeat:
        _wait_for(lambda: heartbeat.beats >= 1)
        with transaction(engine) as session:
            executions.finish(
                session, leased, status=ExecutionStatus.SUCCEEDED, explanation="Done.", failure=None, refs=[]
            )
        assert heartbeat.lost.wait(5), "the next beat finds the lease gone"
        beats = heartbeat.beats
        time.sleep(FAST * 4)
        assert heartbeat.beats == beats, "no beat after the lease is lost"

    row = _row(engine, leased.action_intent_id)
    assert (row.status, row.lease_owner, row.lease_until) == (ExecutionStatus.SUCCEEDED, None, None)


def test_the_heartbeat_stops_when_another_executor_took_over(engine: Any, leased: Lease) -> None:
    _backdate(engine, leased.action_intent_id, seconds=30)
    with transaction(engine) as session:
        other = executions.claim(session, leased.action_intent_id, owner="run-2/b", blocked=None)
    assert isinstance(other, Lease)

    with keep_alive(leased, every=FAST, engine=engine) as heartbeat:
        assert heartbeat.lost.wait(5)

    assert heartbeat.beats == 0
    row = _row(engine, leased.action_intent_id)
    assert (row.lease_owner, row.attempt) == ("run-2/b", 2), "the new owner's lease is untouched"


def test_a_cancelled_execution_that_owes_its_undo_keeps_its_lease(engine: Any, leased: Lease) -> None:
    """Cancelled mid-run, the executor still records its call in flight and undoes its steps."""
    with transaction(engine) as session:
        executions.cancel(session, None, leased.action_intent_id, actor="ops@acme.example")
    _backdate(engine, leased.action_intent_id, seconds=60)

    with keep_alive(leased, every=FAST, engine=engine) as heartbeat:
        _wait_for(lambda: heartbeat.beats >= 1)

    row = _row(engine, leased.action_intent_id)
    with transaction(engine) as session:
        now = db_now(session)
    assert row.status == ExecutionStatus.CANCELLED and row.compensation_pending
    assert row.lease_until is not None and row.lease_until > now
    with transaction(engine) as session:
        executions.release_undo(session, leased.action_intent_id, leased.owner)
        assert executions.heartbeat(session, leased) is False, "a released undo is no longer renewed"


def test_leaving_the_block_stops_the_heartbeat_at_once(engine: Any, leased: Lease) -> None:
    started = time.monotonic()
    with keep_alive(leased, engine=engine) as heartbeat:  # the production interval (3 s)
        pass
    assert time.monotonic() - started < 1.0, "no wait for the next beat on exit"
    assert heartbeat.beats == 0

    with pytest.raises(RuntimeError), keep_alive(leased, every=FAST, engine=engine) as failing:
        _wait_for(lambda: failing.beats >= 1)
        raise RuntimeError("the work failed")
    beats = failing.beats
    time.sleep(FAST * 4)
    assert failing.beats == beats, "stopped on an exception too"


def test_a_failed_renewal_is_logged_and_retried_at_the_next_beat(
    engine: Any, leased: Lease, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = executions.heartbeat
    calls: list[int] = []

    def flaky(session: Session, lease: Lease, *, lease_seconds: int) -> bool:
        calls.append(1)
        if len(calls) <= 2:
            raise OperationalError("UPDATE executions", {}, Exception("the database went away"))
        return real(session, lease, lease_seconds=lease_seconds)

    monkeypatch.setattr(executions, "heartbeat", flaky)
    with (
        caplog.at_level(logging.WARNING, logger="fulfill.heartbeat"),
        keep_alive(leased, every=FAST, engine=engine) as heartbeat,
    ):
        _wait_for(lambda: heartbeat.beats >= 1)

    assert len(calls) >= 3 and not heartbeat.lost.is_set()
    failures = [r for r in caplog.records if "heartbeat" in r.getMessage() and "failed" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info for r in failures)
    assert leased.action_intent_id in failures[0].getMessage()


def test_the_interval_must_fit_in_the_lease(leased: Lease) -> None:
    with pytest.raises(ValueError, match="every"):
        Heartbeat(leased, every=0)
    with pytest.raises(ValueError, match="lease_seconds"):
        Heartbeat(leased, every=5, lease_seconds=5)
    assert executions.HEARTBEAT_SECONDS * 5 <= executions.DEFAULT_LEASE_SECONDS, "five beats per lease"


def _started(engine: Any, lease: Lease) -> list[dict[str, Any]]:
    with transaction(engine) as session:
        return [
            entry.details
            for entry in ledger.entries_for_intent(session, lease.tenant_id, lease.action_intent_id)
            if entry.event_type == "EXECUTION_STARTED"
        ]


def test_a_takeover_records_how_long_the_dead_executor_was_silent(engine: Any, leased: Lease) -> None:
    _backdate(engine, leased.action_intent_id, seconds=20)  # its last beat, then nothing: the lease ran out

    with transaction(engine) as session:
        taken = executions.claim(session, leased.action_intent_id, owner="reconcile/c", blocked=None)
    assert isinstance(taken, Lease)

    first, takeover = _started(engine, leased)
    assert first["took_over_expired_lease"] is False and first["silent_for_seconds"] is None
    assert takeover["took_over_expired_lease"] is True
    assert 20 <= takeover["silent_for_seconds"] < 30
    assert {"attempt", "generation", "flow_run_id"} <= takeover.keys(), "the existing keys stay"


def test_a_released_dead_lease_keeps_the_last_sign_of_life(engine: Any, leased: Lease) -> None:
    """Its run ended (Crashed): the lease is ended early, but silence is still measured from the last beat."""
    _backdate(engine, leased.action_intent_id, seconds=8, lease_too=False)  # the lease itself still live
    with transaction(engine) as session:
        assert executions.release_dead_lease(session, leased.action_intent_id, leased.owner)
        taken = executions.claim(session, leased.action_intent_id, owner="reconcile/d", blocked=None)
    assert isinstance(taken, Lease)

    takeover = _started(engine, leased)[-1]
    assert takeover["took_over_expired_lease"] is True
    assert 8 <= takeover["silent_for_seconds"] < 18
