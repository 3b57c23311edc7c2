"""Start a run of the ``execute-intent`` deployment for one stored intent (the intake and the API's rerun).

The run carries only ``action_intent_id`` (the flow reads and verifies the stored intent). It is named
after the intent and tagged with its tenant and action type, and created with an idempotency key so
that concurrent requests for the same run share one: the intent id for the first run, a rerun key for
each rerun.
"""

from __future__ import annotations

from typing import Protocol

DEPLOYMENT = "execute-intent/execute-intent"


class RunLauncher(Protocol):
    """Creates (or finds, by idempotency key) the flow run that executes one stored intent."""

    def __call__(
        self, action_intent_id: str, *, tenant_id: str, action_type: str, idempotency_key: str | None = None
    ) -> str:
        """Returns the flow run id. ``idempotency_key`` defaults to ``action_intent_id``."""
        ...


def rerun_key(action_intent_id: str, after_attempt: int) -> str:
    """The idempotency key of the rerun that follows attempt ``after_attempt`` (one run per failed attempt)."""
    return f"{action_intent_id}:rerun:{after_attempt}"


def launch_deployment_run(
    action_intent_id: str, *, tenant_id: str, action_type: str, idempotency_key: str | None = None
) -> str:
    """A run of the ``execute-intent`` deployment, named after the intent, tagged with tenant and type.

    Prefect returns the existing run for the same idempotency key, so concurrent deliveries of one
    approval share one run (fulfill itself compares content: a different intent never gets here).
    """
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        run = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"action_intent_id": action_intent_id},
            idempotency_key=idempotency_key or action_intent_id,
            name=action_intent_id,
            tags=["fulfill", f"tenant:{tenant_id}", f"action:{action_type}"],
        )
    return str(run.id)
