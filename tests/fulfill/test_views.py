"""Status columns read back as enum members; the public JSON keeps the contract's plain strings."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlmodel import select

from fulfill import executions
from fulfill.db import transaction
from fulfill.intent import parse_intent
from fulfill.states import Compensation, ExecutionStatus, FailureCode
from fulfill.tables import Execution, Outcome
from fulfill.views import status_view


def _registered(engine: Any, make_intent: Any, title: str) -> str:
    """A received ``internal.create_task`` intent (PENDING); its id."""
    raw = make_intent("internal.create_task", {"title": title})
    with transaction(engine) as session:
        executions.register(session, raw, parse_intent(raw))
    return str(raw["action_intent_id"])


def test_statuses_are_plain_strings_in_the_database_and_enums_when_read(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    intent_id = _registered(engine, make_intent, "Typed")
    with transaction(engine) as session:
        executions.cancel(session, tenant, intent_id, actor="jordan@acme.example")

    with engine.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT status, failure_code, compensation FROM executions WHERE action_intent_id = :i"),
            {"i": intent_id},
        ).one()
    assert tuple(stored) == ("CANCELLED", "CANCELLED_BY_USER", "NONE")
    assert all(type(value) is str for value in stored)

    with transaction(engine) as session:
        row = executions.get(session, tenant, intent_id)
        assert row.status is ExecutionStatus.CANCELLED
        assert row.failure_code is FailureCode.CANCELLED_BY_USER
        assert row.compensation is Compensation.NONE
        outcome = session.exec(select(Outcome).where(Outcome.action_intent_id == intent_id)).one()
        assert outcome.status is ExecutionStatus.CANCELLED
        matched = session.exec(
            select(Execution.action_intent_id).where(
                Execution.status == "CANCELLED", Execution.action_intent_id == intent_id
            )
        ).all()
        assert list(matched) == [intent_id], "a plain string still filters"
        body = status_view(row, executions.steps_of(session, intent_id))

    as_json = json.loads(body.model_dump_json())
    assert as_json["status"] == "CANCELLED"
    assert as_json["failure"] == {
        "code": "CANCELLED_BY_USER",
        "message": "Cancelled by jordan@acme.example.",
        "needs_human": False,
        "compensation": "NONE",
    }
    assert body.model_dump(mode="json") == as_json


def test_the_timeline_says_why_each_run_after_the_first_started(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    """A rerun of a failed run (from fulfill or from Prefect's UI) and a takeover of a silent one."""
    from fulfill import ledger
    from fulfill.views import timeline_view

    intent_id = _registered(engine, make_intent, "Restarted")
    with transaction(engine) as session:  # run 1: refused by a kill switch, FAILED
        assert isinstance(
            executions.claim(session, intent_id, owner="run-1/a", blocked="paused"), executions.Refusal
        )
    with transaction(engine) as session:  # run 2: a retry from Prefect's UI — no RERUN_REQUESTED first
        assert isinstance(
            executions.claim(session, intent_id, owner="run-2/a", blocked=None), executions.Lease
        )
    with transaction(engine) as session:  # run 2's executor goes silent: its lease runs out
        row = session.get(Execution, intent_id)
        assert row is not None
        row.lease_until = executions.db_now(session).replace(year=2000)
        session.add(row)
    with transaction(engine) as session:  # run 3 takes it over
        assert isinstance(
            executions.claim(session, intent_id, owner="run-3/a", blocked=None), executions.Lease
        )

    with transaction(engine) as session:
        execution = session.get(Execution, intent_id)
        assert execution is not None
        events = timeline_view(execution, ledger.entries_for_intent(session, tenant, intent_id)).events
    restarts = [e for e in events if e.title.startswith("Execution restarted")]
    assert [e.title for e in restarts] == ["Execution restarted (run 2)", "Execution restarted (run 3)"]
    assert "after run 1 failed (a rerun)" in restarts[0].detail, restarts[0]
    assert "stopped answering" in restarts[1].detail and "took it over" in restarts[1].detail, restarts[1]
