"""Start a run of the ``execute-intent`` deployment for one stored intent (the intake and the API's rerun).

The run carries only ``action_intent_id`` (the flow reads and verifies the stored intent). It is named
after the intent and tagged with its tenant and action type, and created with an idempotency key so
that concurrent requests for the same run share one: the intent id for the first run, a rerun key for
each rerun.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

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
    The process keeps one open Prefect client per API and the deployment's id (:func:`_prefect`): an
    approval costs one request to Prefect, not a new client, a connection and a lookup by name. A
    deployment created again (a new id) is looked up again.
    """
    from httpx import HTTPStatusError

    client, deployments = _prefect()

    def create(deployment_id: UUID) -> str:
        return str(
            client.create_flow_run_from_deployment(
                deployment_id,
                parameters={"action_intent_id": action_intent_id},
                idempotency_key=idempotency_key or action_intent_id,
                name=action_intent_id,
                tags=["fulfill", f"tenant:{tenant_id}", f"action:{action_type}"],
            ).id
        )

    if (known := deployments.get(DEPLOYMENT)) is not None:
        try:
            return create(known)
        except HTTPStatusError as error:
            if error.response.status_code != 404:
                raise
            # deleted, or deployed again under a new id: look it up below
    deployments[DEPLOYMENT] = client.read_deployment_by_name(DEPLOYMENT).id
    return create(deployments[DEPLOYMENT])


_clients: dict[str, tuple[SyncPrefectClient, dict[str, UUID]]] = {}
_clients_lock = threading.Lock()


def _prefect() -> tuple[SyncPrefectClient, dict[str, UUID]]:
    """This process's open Prefect client for the current API, and the deployment ids it has read.

    Opened on first use and kept (httpx's client is thread-safe: the API's worker threads share it).
    Keyed by the API URL, so a process whose settings point elsewhere (tests) gets its own.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    api = get_current_settings().api.url or "ephemeral"
    with _clients_lock:
        if api not in _clients:
            client = get_client(sync_client=True)
            client.__enter__()
            _clients[api] = (client, {})
        return _clients[api]
