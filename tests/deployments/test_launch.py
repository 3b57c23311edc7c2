"""Launching runs of the ``execute-intent`` deployment: one request each, and a re-created deployment found."""

from __future__ import annotations

from uuid import UUID

import pytest
from prefect.client.orchestration import get_client

from deployments.launch import DEPLOYMENT, launch_deployment_run, rerun_key
from flows.execute_intent import execute_intent

pytestmark = pytest.mark.usefixtures("prefect_server")


def _deploy() -> UUID:
    deployment_id = execute_intent.to_deployment(name="execute-intent").apply()
    assert isinstance(deployment_id, UUID)
    return deployment_id


def test_runs_are_created_for_the_current_deployment_even_after_it_was_created_again(unique: str) -> None:
    first_deployment = _deploy()
    first = launch_deployment_run(f"a-{unique}", tenant_id="t1", action_type="internal.create_task")
    again = launch_deployment_run(f"a-{unique}", tenant_id="t1", action_type="internal.create_task")
    rerun = launch_deployment_run(
        f"a-{unique}",
        tenant_id="t1",
        action_type="internal.create_task",
        idempotency_key=rerun_key(f"a-{unique}", 1),
    )
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(first))
        client.delete_deployment(first_deployment)
    assert again == first, "the same idempotency key finds the same run"
    assert rerun != first
    assert run.deployment_id == first_deployment
    assert run.name == f"a-{unique}"
    assert run.parameters == {"action_intent_id": f"a-{unique}"}
    assert set(run.tags) == {"fulfill", "tenant:t1", "action:internal.create_task"}

    second_deployment = _deploy()  # deleted and deployed again: a new id, the old one answers 404
    assert second_deployment != first_deployment
    later = launch_deployment_run(f"b-{unique}", tenant_id="t1", action_type="internal.create_task")
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(UUID(later)).deployment_id == second_deployment
        assert client.read_deployment_by_name(DEPLOYMENT).id == second_deployment
