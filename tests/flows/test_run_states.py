"""A run of ``execute-intent`` ends in the Prefect state that matches its execution."""

from __future__ import annotations

from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

from flows.execute_intent import ExecutionFailed, ExecutionResult, execute_intent, result_of
from fulfill.states import ExecutionStatus
from surfaces.service import ExecutionService
from tasks.admit import verify_and_register

pytestmark = pytest.mark.usefixtures("prefect_server")


def _api_state(state: Any) -> Any:
    """The run's state as the Prefect API has it (what the UI and automations see)."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.state is not None
    return run.state


def test_an_expired_intent_ends_its_run_cancelled_named_expired(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    intent = make_intent("internal.create_task", {"title": "Too late"}, expires_at_epoch=1_000_000_000)
    state = execute_intent(intent, return_state=True)
    api = _api_state(state)
    assert (api.type, api.name) == (StateType.CANCELLED, "Expired")
    assert not api.is_completed()
    result = result_of(state)
    assert isinstance(result, ExecutionResult) and result.status == ExecutionStatus.EXPIRED
    # Direct callers still get the result model, not an exception.
    assert execute_intent(intent).status == ExecutionStatus.EXPIRED


def test_a_cancelled_intent_ends_its_run_cancelled(engine: Any, make_intent: Any, tenant: str) -> None:
    intent = make_intent("internal.create_task", {"title": "Cancel me"})
    assert verify_and_register(intent).admitted
    ExecutionService(engine).cancel_execution(intent["action_intent_id"], tenant, actor="jordan@acme.example")
    state = execute_intent(intent, return_state=True)
    api = _api_state(state)
    assert (api.type, api.name) == (StateType.CANCELLED, "Cancelled")
    assert result_of(state).status == ExecutionStatus.CANCELLED
    assert execute_intent(intent).status == ExecutionStatus.CANCELLED


def test_success_stays_completed_and_failure_still_raises(engine: Any, make_intent: Any) -> None:
    ok = make_intent("internal.create_task", {"title": "Fine"})
    state = execute_intent(ok, return_state=True)
    assert _api_state(state).type == StateType.COMPLETED
    assert result_of(state).status == ExecutionStatus.SUCCEEDED
    bad = make_intent("internal.create_task", {"title": "Tampered"})
    bad["parameters"]["title"] = "Changed after approval"
    failed = execute_intent(bad, return_state=True)
    assert _api_state(failed).type == StateType.FAILED
    with pytest.raises(ExecutionFailed):
        result_of(failed)
    with pytest.raises(ExecutionFailed):
        execute_intent(bad)
