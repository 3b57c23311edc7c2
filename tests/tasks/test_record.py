"""The recording tasks: a database connection that drops inside one is written again, once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import select

from flows.execute_intent import execute_intent
from fulfill import executions, ledger
from fulfill.db import transaction
from fulfill.tables import InternalTask

pytestmark = pytest.mark.usefixtures("prefect_server")


@contextmanager
def _drop_inside(monkeypatch: pytest.MonkeyPatch, engine: Any, name: str) -> Iterator[list[str]]:
    """Close the database connection under the first statement ``executions.<name>`` runs (its
    transaction is open: the statements before it in that transaction went through). Yields the
    statements that met a dropped connection."""
    dropped: list[str] = []
    armed = [False]
    real = getattr(executions, name)

    def first_call_drops(*args: Any, **kwargs: Any) -> Any:
        armed[0] = not dropped
        return real(*args, **kwargs)

    def before(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if armed[0]:
            armed[0] = False
            dropped.append(statement)
            conn.connection.dbapi_connection.close()  # the server went away mid-transaction

    monkeypatch.setattr(executions, name, first_call_drops)
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield dropped
    finally:
        event.remove(engine, "before_cursor_execute", before)


@pytest.mark.parametrize("name", ["claim", "checkpoint", "step_succeeded", "finish"])
def test_a_connection_dropped_inside_a_record_is_written_again_once(
    engine: Any, make_intent: Any, tenant: str, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    intent = make_intent("internal.create_task", {"title": f"Dropped inside {name}"})
    intent_id = intent["action_intent_id"]
    with _drop_inside(monkeypatch, engine, name) as dropped:
        result = execute_intent(intent)

    assert len(dropped) == 1, f"the connection was dropped inside {name}"
    assert result.status == "SUCCEEDED", result
    with transaction(engine) as session:
        tasks = list(session.exec(select(InternalTask).where(InternalTask.action_intent_id == intent_id)))
        events = [e.event_type for e in ledger.entries_for_intent(session, tenant, intent_id)]
        assert all(report.ok for report in ledger.verify_chains(session, [tenant]))
    assert len(tasks) == 1
    for once in ("EXECUTION_STARTED", "STEP_SUCCEEDED", "ACTION_EXECUTED"):
        assert events.count(once) == 1, events
