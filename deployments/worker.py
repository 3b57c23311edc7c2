"""The warm worker: fulfill's flow runs in interpreters that have already imported the engine.

Prefect's process worker starts ``python -m prefect.engine`` for every flow run: on 2 cores about 10 s of
interpreter start and imports before the flow's first line (docs/benchmarks.md, P2). This worker — a
Prefect worker type of its own, ``fulfill-warm`` — keeps executor processes forked from a fork server
that imported the engine once. It runs fulfill's own flows — ``execute-intent`` and the maintenance
flows (``reconcile``, ``expire-sweeper``, ``deliver-signals``, ``connector-health``), whose runs every
30–300 s would otherwise cost an interpreter start each (about 0.4 of a core on 2 cores, measured) — and
refuses any other flow (``WarmWorker(flows=…)`` names other flows instead: the bench's bare baseline runs
a bare flow this way, on a pool of its own). Each executor runs one flow run at a time, in its main
thread, through Prefect's own ``run_flow``: the run's state changes, its logs in the UI, its state hooks
and its SIGTERM handling are Prefect's, as under the process worker. After a run the executor waits for
the next one.

What it keeps of the process worker:

* it is a Prefect worker: it takes runs only through Prefect's poll of its work pool, so a paused pool
  holds runs and the pool's and the worker's concurrency limits (``--limit``) hold as for any worker;
  but it does not wait for the next poll (``PREFECT_WORKER_QUERY_SECONDS``) to look: it subscribes to
  Prefect's ``prefect.flow-run.Scheduled`` events of its pool (and ``AwaitingRetry``, the UI's retry of a
  run) and polls as soon as one arrives (tens of milliseconds after the run was created), and again when
  a run's slot is freed (its executor finished it) while a run may be waiting for one: since the newest
  poll that returned fewer runs than it asked for, a wake-up found every slot busy, a poll filled its
  limit or a run a poll returned found no free slot. A freed slot with nothing waiting polls nothing
  (every newer run brings its own event), which spares Prefect's server about one poll per intent when
  approvals do not queue; with the event stream down, every freed slot polls. The timed poll stays, as
  the fallback when the event stream is down or an event is lost;
* a poll asks for no more runs than the worker can start (its free slots, and the runs it is handing
  over, which may still be Scheduled): Prefect's worker asks for every scheduled run of its queues (up
  to the server's default limit, 200) and starts as many as its limit allows, so under a backlog every
  poll made the server load and send the whole backlog. A wake-up with no free slot polls nothing;
* one OS process per running flow run: an executor that dies (SIGKILL, OOM) loses only its own run,
  which the worker reports Crashed (a non-zero exit) and the reconciler takes over;
* a run's job configuration is the process worker's, built without reading the run's flow and
  deployment again for every run (``WarmJobConfiguration``: a flow is read once, a deployment at most
  once a minute; the read that checks the deployment still exists before a run is submitted stays);
  the pool's job template declares only the variable that applies to warm executors, ``labels``
  (:data:`WARM_JOB_TEMPLATE`), which Prefect's server validates at every run's creation;
* Prefect's worker marks a run ``Pending`` named ``Submitting`` while it hands the run to its
  infrastructure (a state proposal, a server round trip and an event per run); here that hand-over is
  a message to an idle executor, so a run goes from ``Pending`` to ``Running`` as under Prefect's
  workers before that sub-state existed (the server attaches no behaviour to it);
* Prefect's engine watches every deployment run for a suspension from outside (a thread, a client
  and an events subscription per run, ready before the run starts); executors skip that watch
  (``_no_suspension_watch``): fulfill's runs are stopped by cancelling them, never suspended;
* an executor starts a run from the worker's copy of it (Prefect's engine reads it once more when the
  run enters Running), and Prefect's read of the server's default result storage, made for every flow
  run and every task run, serves a minute of runs (with ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK`` set,
  as in production, Prefect makes none);
* cancelling a run in the UI sends its executor SIGTERM, which Prefect's engine turns into the
  cancellation (fulfill's hook cancels the execution and undoes its steps), then the executor exits.

Its environment is the flows' environment (database URL, trusted keys, settings), as for every
worker here: the pool's per-run ``env`` is not applied (an executor is already running when a run
arrives).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, cast
from uuid import UUID

import anyio
import anyio.abc
import httpx
from prefect import Flow
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import Flow as APIFlow
from prefect.client.schemas.objects import FlowRun, State, WorkPool
from prefect.client.schemas.responses import DeploymentResponse, WorkerFlowRunResponse
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.events.schemas.events import Event
from prefect.exceptions import InfrastructureNotFound
from prefect.workers.base import BaseVariables, BaseWorker, BaseWorkerResult
from prefect.workers.process import ProcessJobConfiguration

#: The worker type (the work pool's type).
WORKER_TYPE = "fulfill-warm"
#: Imported once by the fork server, so an executor starts in milliseconds: fulfill's flows, Prefect's
#: engines, this module (an executor's target), and what a first run imported otherwise (measured: the
#: ledger's database drivers, Prefect's concurrency and task-visualisation modules, anyio's backend).
PRELOAD = [
    "flows.execute_intent",
    "flows.maintenance",
    "flows.health",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.client.orchestration",
    "prefect.concurrency.sync",
    "prefect.utilities.visualization",
    "anyio._backends._asyncio",
    "encodings.idna",
    "sqlite3",
    "sqlalchemy.dialects.sqlite",
    "psycopg",
    "sqlalchemy.dialects.postgresql.psycopg",
    "deployments.worker",
]
#: The flows a warm worker runs unless told otherwise (``module:attribute``): fulfill's own.
FULFILL_FLOWS = (
    "flows.execute_intent:execute_intent",
    "flows.maintenance:reconcile",
    "flows.maintenance:expire_sweeper",
    "flows.maintenance:deliver_signals",
    "flows.health:connector_health",
)
#: An executor's exit code when the run is not of a flow it runs (fulfill's, by default; it does not run it).
NOT_A_FULFILL_FLOW = 3
#: The events Prefect's server emits when a flow run becomes ready to be taken: Scheduled (a deployment run is
#: created so; Prefect's CLI ``flow-run retry`` sets it too) and AwaitingRetry (the UI's "Retry" of a run).
WAKE_EVENTS = ("prefect.flow-run.Scheduled", "prefect.flow-run.AwaitingRetry")
#: After a wake-up, polls again at these delays while a run named by an event has not been returned:
#: the server emits the event inside the transaction that creates the run, which may not have committed.
REPOLL_DELAYS = (0.0, 0.05, 0.1, 0.2, 0.4)
#: Seconds before subscribing again when the event stream failed (the timed poll goes on meanwhile).
RESUBSCRIBE_SECONDS = 5.0
#: How long a deployment read for a run's job configuration serves the next runs of that deployment.
DEPLOYMENT_READ_SECONDS = 60.0
#: The warm pools' job template. An executor is already running when a run arrives, so none of the process
#: worker's job variables (command, env, working directory, output streaming, name) applies to it; only
#: ``labels`` does, on the worker's events about the run. Prefect's server validates a pool's job variables
#: against this schema at every run's creation (about 10 ms of its CPU per run with the process worker's
#: schema, under 2 ms with this one; docs/benchmarks.md). Other variables a deployment sets (the ``env`` of
#: ``prefect.yaml``, for process pools) are accepted and, as before, not applied.
WARM_JOB_TEMPLATE: dict[str, Any] = {
    "job_configuration": {"labels": "{{ labels }}"},
    "variables": {
        "type": "object",
        "properties": {
            "labels": {
                "title": "Labels",
                "description": "Labels added to the worker's events about each run.",
                "type": "object",
                "additionalProperties": {"type": "string"},
            }
        },
    },
}


@dataclass
class _KnownObjects:
    """The flows and deployments a worker has read, for the job configuration of its next runs."""

    flows: dict[UUID, APIFlow] = field(default_factory=dict)
    deployments: dict[UUID, tuple[float, DeploymentResponse]] = field(default_factory=dict)


class _ReadsOnce:
    """A Prefect client that reads each flow once and each deployment at most once a minute.

    Prefect's worker builds every run's job configuration from the deployment and the flow, read
    again for each run (two API calls per run, on top of the deployment read that checks the
    deployment still exists, which stays). For warm executors that configuration feeds only the
    labels and the related resources of the worker's own events: a flow's name never changes, and a
    deployment's name or tags a minute old are as good. Everything else goes to the real client.
    """

    def __init__(self, client: PrefectClient, known: _KnownObjects) -> None:
        self._client = client
        self._known = known

    async def read_flow(self, flow_id: UUID) -> APIFlow:
        if (flow := self._known.flows.get(flow_id)) is None:
            flow = self._known.flows[flow_id] = await self._client.read_flow(flow_id)
        return flow

    async def read_deployment(self, deployment_id: UUID) -> DeploymentResponse:
        known = self._known.deployments.get(deployment_id)
        if known is None or time.monotonic() - known[0] >= DEPLOYMENT_READ_SECONDS:
            deployment = await self._client.read_deployment(deployment_id)
            known = self._known.deployments[deployment_id] = (time.monotonic(), deployment)
        return known[1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


#: What this process's warm workers have read (flow and deployment ids are unique to a Prefect server).
_KNOWN = _KnownObjects()


class WarmJobConfiguration(ProcessJobConfiguration):
    """The process worker's job configuration, built without reading a run's flow and deployment each time
    and without a copy of the worker's Prefect settings as environment variables.

    Prefect's worker serialises every one of its settings into each run's environment (about 30 ms of
    the worker's CPU per run here, measured with py-spy: the largest part of its work per run). An
    executor is already running when a run arrives, with the worker's settings; no per-run
    environment is applied, so none is built.
    """

    @classmethod
    def _base_environment(cls) -> dict[str, str]:
        return {}

    @classmethod
    async def resolve_for_flow_run(
        cls,
        flow_run: FlowRun,
        *,
        client: PrefectClient,
        work_pool: WorkPool,
        worker_name: str,
        worker_id: UUID | None = None,
        deployment: DeploymentResponse | None = None,
    ) -> WarmJobConfiguration:
        return await super().resolve_for_flow_run(
            flow_run,
            client=cast(PrefectClient, _ReadsOnce(client, _KNOWN)),
            work_pool=work_pool,
            worker_name=worker_name,
            worker_id=worker_id,
            deployment=deployment,
        )


class WarmWorkerResult(BaseWorkerResult):
    """The executor's pid and how its run ended (0, or the executor's exit code if it died)."""


@dataclass
class _Executor:
    """One warm executor process and the pipe it takes flow run ids on."""

    process: BaseProcess
    conn: Connection

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def execute(self, flow_run: FlowRun) -> int:
        """Run one flow run; 0 when the executor answered, else its exit code (it died)."""
        try:
            self.conn.send(flow_run.model_dump_json())
            code = int(self.conn.recv())
        except (EOFError, OSError):
            self.process.join(timeout=30)
            return self.process.exitcode if self.process.exitcode not in (None, 0) else 1
        return code

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()


def _api_settings() -> dict[str, Any]:
    """The worker's Prefect API settings, for its executors (the fork server may predate them)."""
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    auth = api.auth_string.get_secret_value() if api.auth_string is not None else None
    key = api.key.get_secret_value() if api.key is not None else None
    return {"api.url": api.url, "api.auth_string": auth, "api.key": key}


def _fulfill_environment() -> dict[str, str]:
    """The worker's ``FULFILL_*`` variables, for its executors (the fork server may predate them)."""
    return {name: value for name, value in os.environ.items() if name.startswith("FULFILL_")}


@contextlib.contextmanager
def _no_suspension_watch(
    flow_run_id: UUID, suspension_request: Any, polling_interval: float = 10
) -> Iterator[None]:
    """Stands in for Prefect's ``observe_flow_run_suspension`` in warm executors: watches nothing.

    For every run of a deployment, Prefect's engine starts a thread with its own event loop, a new
    API client (a connection and a CSRF-token request), an events subscription and a read of the run,
    waits until they are ready before the run starts, and at the end waits up to 0.2 s for the thread
    to notice it should stop — all to notice a run suspended from outside while it runs. fulfill's
    flows are never suspended: an execution is stopped by cancelling its run (the worker's own
    cancellation observer, then SIGTERM: unchanged) or by the kill switch.
    """
    yield


def _flow(entrypoint: str) -> Flow[..., Any]:
    """The flow at ``entrypoint`` (``module:attribute``), imported."""
    module, _, attribute = entrypoint.partition(":")
    found = getattr(importlib.import_module(module), attribute)
    if not isinstance(found, Flow):
        raise TypeError(f"{entrypoint} is not a Prefect flow")
    return found


@contextlib.contextmanager
def warm_runs(
    api: dict[str, Any] | None = None, flows: Sequence[str] = FULFILL_FLOWS
) -> Iterator[Callable[[FlowRun | str], State[Any] | None]]:
    """Run flow runs of ``flows`` (entrypoints; fulfill's own unless told otherwise: the bench's baseline
    runs a bare flow) in this process as a warm executor does; yields ``run(flow_run)``.

    ``run`` executes a flow run (as the worker's poll returned it, or its id, then read) through
    Prefect's own ``run_flow`` and returns its final state, or ``None`` for a run of another flow (not
    run). Inside the context:

    * ``api``'s Prefect settings (URL and credentials) apply, and Prefect's flow heartbeat is off
      (≥ 30 s, joined at the end of every run: about 1 s each); it adds nothing to crash detection here:
      the worker reports a dead executor's run Crashed and fulfill's lease heartbeat shows a lost host
      within seconds;
    * one Prefect client serves every run (the engine takes the open one): its connections stay open
      between runs instead of a new client, and new connections, per run; a flow's name is read once;
      a run handed over by the worker is not read again before the engine starts it (the engine reads
      it once more itself when the run enters Running);
    * Prefect's suspension watch is skipped for this process (:func:`_no_suspension_watch`), and its
      read of the server's default result storage serves a minute of runs
      (:func:`flows.result_storage.read_once_a_minute`).

    The scorecard's executors (``surfaces.scorecard_executor``) run their flow runs through this too, so
    the crash and fault scorecard exercises the same path.
    """
    from prefect import flow_engine
    from prefect.context import SyncClientContext
    from prefect.flow_engine import run_flow
    from prefect.settings import temporary_settings

    from flows import result_storage
    from flows.heartbeat import without_flow_heartbeat

    runnable = {flow.name: flow for flow in map(_flow, flows)}
    setattr(flow_engine, "observe_flow_run_suspension", _no_suspension_watch)  # noqa: B010 - not exported
    result_storage.read_once_a_minute()
    with (
        temporary_settings(updates=api or {}),
        without_flow_heartbeat(),
        SyncClientContext.get_or_create() as prefect,
    ):
        names: dict[UUID, str] = {}  # flow id → name: a flow's name never changes

        def run(flow_run: FlowRun | str) -> State[Any] | None:
            if isinstance(flow_run, str):
                flow_run = prefect.client.read_flow_run(UUID(flow_run))
            if flow_run.flow_id not in names:
                names[flow_run.flow_id] = prefect.client.read_flow(flow_run.flow_id).name
            flow = runnable.get(names[flow_run.flow_id])
            if flow is None:
                return None
            state = run_flow(
                flow, flow_run=flow_run, parameters=dict(flow_run.parameters), return_type="state"
            )
            if not isinstance(state, State):  # fulfill's flows are synchronous: run_flow returns the state
                raise TypeError(f"flow {flow.name!r} did not return its final state")
            return state

        yield run


def serve(
    conn: Connection, api: dict[str, Any], environment: dict[str, str], flows: Sequence[str] = FULFILL_FLOWS
) -> None:
    """An executor of ``flows``: one flow run per message, run in this (main) thread; answers 0 per run.

    The fork server is one per worker process and keeps the environment it started with, so each
    executor takes the worker's current fulfill settings (``environment``) and Prefect API settings
    (``api``: URL and credentials), passed over the pipe, never on a command line.
    """
    from fulfill.settings import reload_settings

    for name in [name for name in os.environ if name.startswith("FULFILL_") and name not in environment]:
        del os.environ[name]
    os.environ.update(environment)
    reload_settings()
    _warm_up()
    with warm_runs(api, flows) as run:
        conn.send(os.getpid())
        while (flow_run := _next(conn)) is not None:
            if run(FlowRun.model_validate_json(flow_run)) is None:
                os._exit(NOT_A_FULFILL_FLOW)  # the worker reports the run Crashed with this code
            conn.send(0)


def _warm_up() -> None:
    """What an executor's first run would otherwise do first: configure SQLAlchemy's mappers and open the
    ledger's engine (its schema check included). A database that cannot be reached now is left for the
    run to meet and report (``get_engine`` checks again until it succeeds)."""
    from sqlalchemy.orm import configure_mappers

    from fulfill.db import get_engine

    configure_mappers()
    with contextlib.suppress(Exception):
        get_engine()


def _next(conn: Connection) -> str | None:
    """The next flow run (as the worker's poll returned it, JSON); ``None`` when told to stop or when the
    worker is gone (its pipe closed)."""
    try:
        flow_run: str | None = conn.recv()
    except (EOFError, OSError):
        return None
    return flow_run


class WarmWorker(BaseWorker[WarmJobConfiguration, BaseVariables, WarmWorkerResult]):
    """Runs fulfill's flow runs in warm executor processes (see the module docstring)."""

    type = WORKER_TYPE
    job_configuration = WarmJobConfiguration
    job_configuration_variables = None  # the variables are WARM_JOB_TEMPLATE's
    _description = "Runs fulfill's flow runs in warm executor processes, one run each at a time."
    _display_name = "fulfill warm worker"
    _documentation_url = "https://github.com/fulfill/fulfill/blob/main/docs/operations.md"

    def __init__(
        self, *args: Any, wake_on_events: bool = True, flows: Sequence[str] = FULFILL_FLOWS, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._wake_on_events = wake_on_events
        self._flows = tuple(flows)  # entrypoints of the flows its executors run (:func:`warm_runs`)
        self._wake = anyio.Event()
        self._awaited: set[UUID] = set()
        self._executed: set[UUID] = set()  # runs an executor finished whose slot is not yet released
        # Whether a freed slot polls (_release_limit_slot): when a run may have been left waiting for a slot
        # since the newest poll that returned fewer runs than it asked for (monotonic seconds).
        self._left_waiting_at = 0.0  # a wake-up found no free slot, a poll filled its limit or left a run
        self._saw_all_at = float("-inf")  # the newest start of a poll that returned fewer runs than its limit
        self._events_live = False  # subscribed to Prefect's events stream (:meth:`_listen`)
        self._idle: queue.SimpleQueue[_Executor] = queue.SimpleQueue()
        self._all: list[_Executor] = []
        self._starting = 0  # idle executors being started (_start_executors)
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context("forkserver")
        modules = [entrypoint.partition(":")[0] for entrypoint in self._flows]
        self._context.set_forkserver_preload(list(dict.fromkeys([*modules, *PRELOAD])))  # each once

    @classmethod
    def get_default_base_job_template(cls) -> dict[str, Any]:
        """:data:`WARM_JOB_TEMPLATE` (Prefect's server gives it to a pool of this type that has none)."""
        return copy.deepcopy(WARM_JOB_TEMPLATE)

    def _take(self) -> _Executor:
        """An idle executor (one that died while idle is dropped); while idle ones are being started
        (:meth:`_start_executors`), the next of them; else a new one from the warm fork server."""
        while True:
            with self._lock:
                starting = self._starting
            try:
                idle = self._idle.get(timeout=0.05) if starting else self._idle.get_nowait()
            except queue.Empty:
                if starting:
                    continue
                return self._start_executor()
            if idle.process.is_alive():
                return idle
            with self._lock:
                self._all.remove(idle)

    def _start_executors(self) -> None:
        """Start executors, idle, up to the limit (none without one), so that the first runs after the worker
        starts find them ready: an executor's start costs about 0.15 CPU-seconds (measured here), which in a
        burst delayed each of the first runs by up to a second (docs/benchmarks.md). Stops at teardown, and
        at the first executor that fails to start (a run then starts its own, and meets the failure)."""
        while self.is_setup and self._limit is not None:
            with self._lock:
                if len(self._all) + self._starting >= self._limit:
                    return
                self._starting += 1
            try:
                self._idle.put(self._start_executor())
            except Exception:  # noqa: BLE001 - never the worker's end: runs start executors themselves
                self._logger.exception("Starting an idle executor failed")
                return
            finally:
                with self._lock:
                    self._starting -= 1

    def _start_executor(self) -> _Executor:
        """A new executor from the warm fork server, once it is ready."""
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=serve, args=(theirs, _api_settings(), _fulfill_environment(), self._flows), daemon=True
        )
        process.start()
        theirs.close()
        ours.recv()  # its pid: it is ready
        executor = _Executor(process, ours)
        with self._lock:
            self._all.append(executor)
        return executor

    async def setup(self) -> None:
        await super().setup()
        if self._runs_task_group is not None:
            self._runs_task_group.start_soon(self._cancellable, self._poll_on_wake)
            if self._wake_on_events:
                self._runs_task_group.start_soon(self._cancellable, self._listen)
            self._runs_task_group.start_soon(anyio.to_thread.run_sync, self._start_executors)

    async def _cancellable(self, loop: Any) -> None:
        """Run ``loop`` until the worker's teardown (which cancels these scopes before closing its task group)."""
        with anyio.CancelScope() as scope:
            self._scheduled_task_scopes.add(scope)
            await loop()
        self._scheduled_task_scopes.discard(scope)

    def _wake_up(self, flow_run_id: UUID | None = None) -> None:
        """Have the pool polled now (and, for ``flow_run_id``, until that run is returned or tries run out)."""
        if flow_run_id is not None:
            self._awaited.add(flow_run_id)
        self._wake.set()

    def _free_slots(self) -> int | None:
        """How many more runs the worker can start now (``None``: no limit)."""
        return None if self._limiter is None else int(self._limiter.available_tokens)

    def _poll_limit(self) -> int | None:
        """How many runs a poll asks for: the free slots, and the runs being handed over, which the poll may
        return again while they are still Scheduled (``None``: no limit)."""
        free = self._free_slots()
        return None if free is None else free + len(self._submitting_flow_run_ids)

    async def _get_scheduled_flow_runs(self) -> list[WorkerFlowRunResponse]:
        """Prefect's poll of the pool's queues, asking for no more runs than :meth:`_poll_limit`.

        The request is the Prefect client's ``get_scheduled_flow_runs_for_work_pool`` with the endpoint's
        ``limit``, which the client does not pass: the server returns the first runs in its own order
        (queue priority, then scheduled time) and, as for every poll, marks the queues and deployments
        polled (ready). Runs scheduled within the prefetch window are included, as Prefect's worker does.
        """
        body: dict[str, Any] = {
            "work_queue_names": sorted(self._work_queues),
            "scheduled_before": (
                datetime.now(UTC) + timedelta(seconds=int(self._prefetch_seconds))
            ).isoformat(),
        }
        if (limit := self._poll_limit()) is not None:
            body["limit"] = limit
        started = time.monotonic()
        try:
            response = await self.client.request(
                "POST",
                "/work_pools/{name}/get_scheduled_flow_runs",
                path_params={"name": self._work_pool_name},
                json=body,
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:  # no pool yet: the heartbeat creates it (as Prefect's poll)
                return []
            raise
        runs = WorkerFlowRunResponse.model_validate_list(response.json())
        if limit is None or len(runs) < limit:  # every run Scheduled when it started is in ``runs``
            self._saw_all_at = max(self._saw_all_at, started)
        else:  # the limit may have left runs behind: the next freed slot polls
            self._left_waiting_at = time.monotonic()
        return runs

    async def _submit_scheduled_flow_runs(
        self, flow_run_response: list[WorkerFlowRunResponse]
    ) -> list[FlowRun]:
        """Prefect's submission of the runs a poll returned; one that found no free slot (another poll took it)
        stays Scheduled, waiting for a freed one."""
        taken = await super()._submit_scheduled_flow_runs(flow_run_response)
        if len(taken) < len(flow_run_response):
            self._left_waiting_at = time.monotonic()
        return taken

    def _release_limit_slot(self, flow_run_id: UUID) -> None:
        """Prefect's release of a run's slot; a run an executor finished also wakes the poll, which can take a
        waiting run now (the slot is free only once this returns) — if a run may be waiting
        (:meth:`_may_be_waiting`)."""
        super()._release_limit_slot(flow_run_id)
        if flow_run_id in self._executed:
            self._executed.discard(flow_run_id)
            if self._may_be_waiting():
                self._wake_up()

    def _may_be_waiting(self) -> bool:
        """Whether a Scheduled run may be waiting for a slot: no poll returned fewer runs than it asked for
        since a wake-up found every slot busy, a poll filled its limit or a run a poll returned found no free
        slot; or the events stream (which wakes the poll for every newer run) is not live."""
        return not self._events_live or self._left_waiting_at >= self._saw_all_at

    async def _poll_on_wake(self) -> None:
        """Poll the pool through Prefect's own path whenever woken (an event, a freed slot); a wake-up during
        the repolls' delays polls at once."""
        while True:
            await self._wake.wait()
            for delay in REPOLL_DELAYS:
                with anyio.move_on_after(delay):
                    await self._wake.wait()
                self._wake = anyio.Event()
                if self._free_slots() == 0:  # every slot busy: a freed slot wakes the poll again
                    self._left_waiting_at = time.monotonic()
                    break
                try:
                    taken = await self.get_and_submit_flow_runs()
                except Exception:  # the timed poll is still there; log and wait for the next wake-up
                    self._logger.exception("Polling the work pool on a wake-up failed")
                    break
                self._awaited -= {run.id for run in taken} | self._submitting_flow_run_ids
                if not self._awaited:
                    break
            self._awaited.clear()

    def _scheduled_here(self, event: Event) -> UUID | None:
        """The flow run an event says was scheduled (or retried) into this worker's pool, else ``None``."""
        if event.event not in WAKE_EVENTS or not event.resource.id.startswith("prefect.flow-run."):
            return None
        in_pool = any(
            related.role == "work-pool" and related.name == self._work_pool_name for related in event.related
        )
        return UUID(event.resource.id.removeprefix("prefect.flow-run.")) if in_pool else None

    async def _listen(self) -> None:
        """Wake the poll for every run scheduled (or retried) into this pool (Prefect's events stream)."""
        ready_runs = EventFilter(event=EventNameFilter(name=list(WAKE_EVENTS)))
        while True:
            try:
                async with get_events_subscriber(filter=ready_runs, reconnect_on_clean_close=True) as events:
                    self._events_live = True
                    async for event in events:
                        if (flow_run_id := self._scheduled_here(event)) is not None:
                            self._wake_up(flow_run_id)
            except Exception as exc:  # noqa: BLE001 - the timed poll goes on; subscribe again later
                self._logger.warning("Prefect's event stream failed (%s); polling only, for now", exc)
            finally:
                self._events_live = False
            await anyio.sleep(RESUBSCRIBE_SECONDS)

    async def run(
        self,
        flow_run: FlowRun,
        configuration: WarmJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> WarmWorkerResult:
        executor = await anyio.to_thread.run_sync(self._take)
        if task_status is not None:
            task_status.started(executor.pid)
        code = await anyio.to_thread.run_sync(executor.execute, flow_run)
        if code == 0:
            self._idle.put(executor)
        else:
            with self._lock:
                self._all.remove(executor)
        self._executed.add(flow_run.id)  # its slot, once released, wakes the poll
        return WarmWorkerResult(identifier=str(executor.pid), status_code=code)

    async def _propose_submitting_state(self, flow_run: FlowRun) -> None:
        """No ``Submitting`` sub-state: handing a run to a warm executor takes milliseconds (module doc)."""

    async def kill_infrastructure(
        self, infrastructure_pid: str, configuration: WarmJobConfiguration, grace_seconds: int = 30
    ) -> None:
        """Cancel a run: SIGTERM its executor (Prefect's engine cancels the run; the executor exits)."""
        try:
            os.kill(int(infrastructure_pid), signal.SIGTERM)
        except (ProcessLookupError, ValueError) as exc:
            raise InfrastructureNotFound(f"no executor {infrastructure_pid}") from exc

    async def teardown(self, *exc_info: Any) -> None:
        await super().teardown(*exc_info)
        with self._lock:
            executors, self._all = self._all, []
        for executor in executors:
            await anyio.to_thread.run_sync(executor.stop)


def ensure_pool(name: str) -> None:
    """Make work pool ``name`` one of the warm worker's type with its job template, replacing a pool of
    another type and giving a warm pool of an earlier release (the process worker's template, which
    declares other variables) this one; a warm pool whose ``labels`` an operator edited is kept.

    ``prefect work-pool create`` knows only Prefect's own worker types, so ``fulfill up`` creates it here.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    template = WarmWorker.get_default_base_job_template()
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
            if pool.type == WORKER_TYPE:
                if _variables(pool.base_job_template) != _variables(template):
                    client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))
                return
            client.delete_work_pool(name)
        except ObjectNotFound:
            pass
        client.create_work_pool(WorkPoolCreate(name=name, type=WORKER_TYPE, base_job_template=template))


def _variables(template: dict[str, Any]) -> set[str]:
    """The job variables a pool's template declares."""
    return set(template.get("variables", {}).get("properties", {}))
