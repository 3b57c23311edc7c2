"""Prefect mechanisms the engine relies on, verified (PREFECT_NOTES: names can mislead)."""

from __future__ import annotations

from typing import Any

import pytest
from prefect import flow

from connectors.base import ExternalRef, StepCall, StepResult
from connectors.errors import NotFound, RateLimitedError
from fulfill import controls, executions, ledger
from fulfill.db import transaction
from tasks.admit import verify_and_register
from tasks.connector_step import Halted, make_retry_condition, run_step

pytestmark = pytest.mark.usefixtures("prefect_server")


class Counting:
    system = "internal"

    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.calls = 0
        self.failures = failures or []

    def execute(self, call: StepCall) -> StepResult:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return StepResult(
            ref=ExternalRef(system="internal", object="task", id=str(self.calls)),
            created=True,
            summary="done",
        )


@pytest.fixture
def leased(engine: Any, make_intent: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    def make(connector: Counting) -> tuple[executions.Lease, StepCall]:
        monkeypatch.setattr(
            "tasks.connector_step.resolve_connector", lambda tenant_id, action_type: connector
        )
        intent = make_intent("internal.create_task", {"title": "x"})
        assert verify_and_register(intent).admitted
        with transaction(engine) as session:
            lease = executions.claim(session, intent["action_intent_id"], owner="test/1", blocked=None)
            assert isinstance(lease, executions.Lease)
            call = StepCall(
                action_intent_id=lease.action_intent_id,
                tenant_id=lease.tenant_id,
                account_id="a",
                action_type="internal.create_task",
                step="create_task",
                idempotency_key=f"{lease.action_intent_id}:create_task",
                params={"title": "x"},
            )
            executions.checkpoint(session, lease, seq=0, system="internal", call=call)
        return lease, call

    return make


def test_cache_skips_a_finished_step_on_rerun(leased: Any) -> None:
    connector = Counting()
    lease, call = leased(connector)

    @flow
    def twice() -> list[str]:
        first = run_step(call, lease, cache_key=f"{call.idempotency_key}:fp")
        second = run_step(call, lease, cache_key=f"{call.idempotency_key}:fp")
        return [first.ref.id, second.ref.id]

    assert twice() == ["1", "1"]
    assert connector.calls == 1, "the persisted result was reused; the provider was not called again"


def test_transient_errors_retry_and_permanent_do_not(leased: Any, engine: Any) -> None:
    connector = Counting([RateLimitedError("429", retry_after=0.01), RateLimitedError("429")])
    lease, call = leased(connector)

    @flow
    def once() -> StepResult:
        task = run_step.with_options(
            retry_delay_seconds=0, retry_condition_fn=make_retry_condition(lease, call)
        )
        return task(call, lease, cache_key=f"{call.idempotency_key}:a")

    assert once().ref.id == "3"
    with transaction(engine) as session:
        rows = ledger.entries_for_intent(session, lease.tenant_id, lease.action_intent_id)
        events = [e.event_type for e in rows]
    assert events.count("STEP_RETRY_SCHEDULED") == 2

    permanent = Counting([NotFound("404")])
    lease2, call2 = leased(permanent)

    @flow
    def fails() -> StepResult:
        task = run_step.with_options(
            retry_delay_seconds=0, retry_condition_fn=make_retry_condition(lease2, call2)
        )
        return task(call2, lease2, cache_key=f"{call2.idempotency_key}:b")

    with pytest.raises(NotFound):
        fails()
    assert permanent.calls == 1


def test_kill_switch_is_checked_before_every_call(leased: Any, engine: Any) -> None:
    connector = Counting()
    lease, call = leased(connector)
    with transaction(engine) as session:
        controls.set_switch(
            session, "action_type", "internal.create_task", enabled=False, reason="t", actor="ops"
        )
    try:

        @flow
        def blocked() -> StepResult:
            return run_step(call, lease, cache_key=f"{call.idempotency_key}:c")

        with pytest.raises(Halted, match="KILL_SWITCH"):
            blocked()
        assert connector.calls == 0
    finally:
        with transaction(engine) as session:
            controls.set_switch(
                session, "action_type", "internal.create_task", enabled=True, reason="", actor="ops"
            )
