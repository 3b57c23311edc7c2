"""Start a run of the ``execute-intent`` deployment for one stored intent (the intake and the API's rerun).

The run carries only ``action_intent_id`` (the flow reads and verifies the stored intent). It is named
after the intent and tagged with its tenant and action type, and created with an idempotency key so
that concurrent requests for the same run share one: the intent id for the first run, a rerun key for
each rerun.

Runs asked for while a creation is in flight are created together, in one request to Prefect's bulk
endpoint (``POST /deployments/{id}/create_flow_run/bulk``, up to :data:`BULK_LIMIT` runs): the server
reads the deployment and builds its parameter context once, in one transaction, instead of once per
run. A request that finds nothing in flight is sent at once, so a lone approval waits for nothing. A
run the bulk request did not create (the server reports each run's failure, e.g. an SQLite-backed server's
``database is locked``, which its single endpoint answers with a 503 that Prefect's client retries) is
sent again alone, through that endpoint: what it answers is that caller's answer, as before batching.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from httpx import HTTPStatusError

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

DEPLOYMENT = "execute-intent/execute-intent"
#: Prefect's own limit of its bulk endpoint (``prefect.server.api.deployments.BULK_CREATE_LIMIT``).
BULK_LIMIT = 100
_BULK_ROUTE: Any = "/deployments/{id}/create_flow_run/bulk"  # not in the client's route literal
log = logging.getLogger(__name__)


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
    The process keeps one open Prefect client per API and the deployment's id (:class:`_Launcher`):
    an approval costs a share of one request to Prefect, not a new client, a connection and a lookup
    by name. A deployment created again (a new id) is looked up again.

    Raises:
        httpx.HTTPError: Prefect could not be reached, or refused this run (the others of its bulk
            request are unaffected).
    """
    from prefect.client.schemas.actions import DeploymentFlowRunCreate
    from prefect.states import Scheduled, to_state_create

    run = DeploymentFlowRunCreate(
        parameters={"action_intent_id": action_intent_id},
        state=to_state_create(Scheduled()),
        idempotency_key=idempotency_key or action_intent_id,
        name=action_intent_id,
        tags=["fulfill", f"tenant:{tenant_id}", f"action:{action_type}"],
    )
    return _launcher().submit(run.model_dump(mode="json", exclude_unset=True)).result()


@dataclass
class _Launcher:
    """One Prefect API's open client and the thread that sends its creations, batched.

    The thread takes the first waiting run and every other run waiting by then (up to
    :data:`BULK_LIMIT`), sends them in one request, and answers each caller; runs asked for meanwhile
    wait for the next request. httpx's client is thread-safe, and only this thread uses it.
    """

    client: SyncPrefectClient
    pid: int = field(default_factory=os.getpid)
    waiting: queue.SimpleQueue[tuple[dict[str, Any], Future[str]]] = field(default_factory=queue.SimpleQueue)
    deployment_id: UUID | None = None

    def __post_init__(self) -> None:
        threading.Thread(target=self._send_forever, name="fulfill-launcher", daemon=True).start()

    def submit(self, run: dict[str, Any]) -> Future[str]:
        """Queue one run's creation; the future holds its flow run id."""
        created: Future[str] = Future()
        self.waiting.put((run, created))
        return created

    def _send_forever(self) -> None:
        while True:
            batch = [self.waiting.get()]
            while len(batch) < BULK_LIMIT:
                try:
                    batch.append(self.waiting.get_nowait())
                except queue.Empty:
                    break
            try:
                outcomes = self._create([run for run, _ in batch])
            except BaseException as exc:  # noqa: BLE001 - every caller of this request gets the error
                for _, created in batch:
                    created.set_exception(exc)
                continue
            for (_, created), outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    created.set_exception(outcome)
                else:
                    created.set_result(outcome)

    def _create(self, runs: list[dict[str, Any]]) -> list[str | Exception]:
        """Each run's flow run id, or why it was not created, in order.

        One bulk request (the deployment looked up again if it answers 404); a run it did not create,
        or every run when the server failed the whole request (5xx), is sent again alone.
        """
        bulk: list[str | None] | None = None
        deployment_id = self.deployment_id
        if deployment_id is not None:
            try:
                bulk = self._sent(deployment_id, runs)
            except HTTPStatusError as error:
                if error.response.status_code != 404:
                    raise
                # deleted, or deployed again under a new id: look it up below
        if bulk is None or deployment_id is None:  # the id is None only when bulk is
            deployment_id = self.deployment_id = self.client.read_deployment_by_name(DEPLOYMENT).id
            bulk = self._sent(deployment_id, runs)
        outcomes: list[str | Exception] = []
        for run, flow_run_id in zip(runs, bulk, strict=True):
            if flow_run_id is None:
                try:
                    flow_run_id = self._one(deployment_id, run)
                except Exception as exc:  # noqa: BLE001 - this caller's answer
                    outcomes.append(exc)
                    continue
            outcomes.append(flow_run_id)
        return outcomes

    def _sent(self, deployment_id: UUID, runs: list[dict[str, Any]]) -> list[str | None]:
        """:meth:`_bulk`, or ``None`` for every run when the server failed the whole request (5xx)."""
        try:
            return self._bulk(deployment_id, runs)
        except HTTPStatusError as error:
            if error.response.status_code < 500:
                raise
            log.warning(
                "a bulk request failed (%s); its %d runs sent alone", error.response.status_code, len(runs)
            )
            return [None] * len(runs)

    def _bulk(self, deployment_id: UUID, runs: list[dict[str, Any]]) -> list[str | None]:
        """The bulk request: each run's id, or ``None`` where the server reports it was not created."""
        response = self.client.request("POST", _BULK_ROUTE, path_params={"id": deployment_id}, json=runs)
        results: list[dict[str, Any]] = response.json()["results"]
        if len(results) != len(runs):
            raise RuntimeError(f"Prefect answered {len(results)} results for {len(runs)} runs")
        ids: list[str | None] = []
        for run, result in zip(runs, results, strict=True):
            if result.get("status") == "CREATED" and result.get("flow_run_id"):
                ids.append(str(result["flow_run_id"]))
            else:
                # Debug: the single endpoint's answer is what counts (a locked SQLite database is routine).
                reason = str(result.get("error") or "").split("\n", 1)[0][:200]
                log.debug("run %r not created in a bulk request (%s); sent alone", run.get("name"), reason)
                ids.append(None)
        return ids

    def _one(self, deployment_id: UUID, run: dict[str, Any]) -> str:
        """One run through the single endpoint (Prefect's client retries what the server answers 503)."""
        response = self.client.request(
            "POST", "/deployments/{id}/create_flow_run", path_params={"id": deployment_id}, json=run
        )
        return str(response.json()["id"])


_launchers: dict[str, _Launcher] = {}
_launchers_lock = threading.Lock()


def _launcher() -> _Launcher:
    """This process's launcher for the current API, started on first use and kept.

    Keyed by the API URL, so a process whose settings point elsewhere (tests) gets its own; a forked
    child (which has the dictionary but not the thread) starts its own.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    api = get_current_settings().api.url or "ephemeral"
    with _launchers_lock:
        launcher = _launchers.get(api)
        if launcher is None or launcher.pid != os.getpid():
            client = get_client(sync_client=True)
            client.__enter__()
            launcher = _launchers[api] = _Launcher(client)
        return launcher
