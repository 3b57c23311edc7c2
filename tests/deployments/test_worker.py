"""The warm worker: fulfill's flow runs in executor processes that imported the engine once."""

from __future__ import annotations

import copy
import os
import signal
import time
from typing import Any
from uuid import UUID

import anyio
import httpx
import pytest
from prefect import flow, flow_engine, results
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.workers.process import ProcessWorker

from deployments.worker import (
    NOT_A_FULFILL_FLOW,
    WARM_JOB_TEMPLATE,
    WORKER_TYPE,
    WarmJobConfiguration,
    WarmWorker,
    ensure_pool,
)
from flows import result_storage
from flows.execute_intent import execute_intent
from fulfill.db import transaction
from fulfill.tables import Execution
from tasks.admit import verify_and_register

pytestmark = pytest.mark.usefixtures("prefect_server")

#: Prefect's own, before any executor in this process replaced it (``serve`` does, for its process).
_PREFECT_SUSPENSION_WATCH = flow_engine.observe_flow_run_suspension


@pytest.fixture
def prefects_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's functions that ``serve`` replaces, for a test that runs an executor in this process
    (restored after it)."""
    monkeypatch.setattr(flow_engine, "observe_flow_run_suspension", _PREFECT_SUSPENSION_WATCH)
    monkeypatch.setattr(results, result_storage.PREFECTS_READ, result_storage.PREFECTS_OWN)


def _read(run_id: UUID) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def _finished(run_id: UUID, what: str, timeout: float = 90) -> FlowRun:
    """The flow run once its state is final (fails the test after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while (run := _read(run_id)).state is None or not run.state.is_final():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return run


def _execute_intent_deployment(pool: str, unique: str) -> UUID:
    """An ``execute-intent`` deployment on ``pool`` (a warm worker's pool, created if missing)."""
    ensure_pool(pool)
    deployment_id = execute_intent.to_deployment(name=f"execute-intent-{unique}", work_pool_name=pool).apply()
    assert isinstance(deployment_id, UUID)
    return deployment_id


def _deployment_run(make_intent: Any, deployment_id: UUID, title: str) -> tuple[str, UUID]:
    """An admitted ``internal.create_task`` intent and a run of the deployment for it: (intent id, run id)."""
    intent = make_intent("internal.create_task", {"title": title})
    assert verify_and_register(intent).admitted
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(
            deployment_id, parameters={"action_intent_id": intent["action_intent_id"]}
        )
    return intent["action_intent_id"], run.id


def test_the_warm_worker_runs_each_intent_in_a_warm_executor_and_replaces_a_dead_one(
    engine: Any, make_intent: Any, unique: str
) -> None:
    pool = f"warm-{unique}"
    ensure_pool(pool)
    deployment_id = _execute_intent_deployment(pool, unique)  # ensure_pool again: idempotent
    with get_client(sync_client=True) as client:
        assert client.read_work_pool(pool).type == WORKER_TYPE

    def submit(title: str) -> tuple[str, UUID]:
        return _deployment_run(make_intent, deployment_id, title)

    def status(intent_id: str) -> str:
        with transaction(engine) as session:
            row = session.get(Execution, intent_id)
            assert row is not None
            return str(row.status)

    pids: list[int] = []
    run_ids: list[UUID] = []
    histories: list[list[str | None]] = []
    worker = WarmWorker(work_pool_name=pool, limit=1)

    async def scenario() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(worker.start)
            for n in range(3):
                intent_id, run_id = await anyio.to_thread.run_sync(submit, f"Warm {n}")
                run_ids.append(run_id)
                run = await anyio.to_thread.run_sync(_finished, run_id, f"run {n}")
                assert run.state is not None and run.state.is_completed(), run.state
                assert await anyio.to_thread.run_sync(status, intent_id) == "SUCCEEDED"
                assert run.infrastructure_pid is not None
                pids.append(int(run.infrastructure_pid))
                histories.append(await anyio.to_thread.run_sync(_history, run_id))
                if n == 1:  # the idle executor dies between runs: the next run gets a new one
                    os.kill(pids[-1], signal.SIGKILL)
            group.cancel_scope.cancel()

    anyio.run(scenario)

    for run_id in run_ids:  # the worker's labels, sent beside the hand-over
        deadline = time.monotonic() + 10
        while (labels := _read(run_id).labels).get("prefect.worker.type") != WORKER_TYPE:
            assert time.monotonic() < deadline, labels
            time.sleep(0.1)
        assert labels["prefect.work-pool.name"] == pool
    assert pids[0] == pids[1] != os.getpid(), "the second run reused the first run's executor"
    assert pids[2] != pids[1], "a dead executor is replaced, not handed a run"
    # Handing a run to an executor is no infrastructure start: no Pending "Submitting" round trip.
    assert histories == [["Scheduled", "Pending", "Running", "Completed"]] * 3, histories


def test_a_warm_pool_declares_only_the_labels_and_prefect_still_validates_them(unique: str) -> None:
    pool = f"warm-template-{unique}"
    with get_client(sync_client=True) as client:  # a warm pool of an earlier release: the process template
        client.create_work_pool(
            WorkPoolCreate(
                name=pool, type=WORKER_TYPE, base_job_template=ProcessWorker.get_default_base_job_template()
            )
        )
    ensure_pool(pool)
    with get_client(sync_client=True) as client:
        assert client.read_work_pool(pool).base_job_template == WARM_JOB_TEMPLATE
    assert list(WARM_JOB_TEMPLATE["variables"]["properties"]) == ["labels"]
    # A deployment may still set the process pools' variables (prefect.yaml's env): accepted, not applied.
    deployment_id = execute_intent.to_deployment(
        name=f"execute-intent-{unique}", work_pool_name=pool, job_variables={"env": {"DO_NOT_TRACK": "1"}}
    ).apply()
    with get_client(sync_client=True) as client:

        def create(labels: dict[str, Any]) -> FlowRun:
            return client.create_flow_run_from_deployment(
                deployment_id, parameters={"action_intent_id": unique}, job_variables={"labels": labels}
            )

        assert create({"team": "revenue"}).state_type == StateType.SCHEDULED
        with pytest.raises(httpx.HTTPStatusError) as refused:
            create({"team": 1})
    assert refused.value.response.status_code == 422
    assert "labels" in refused.value.response.text
    configuration = anyio.run(
        WarmJobConfiguration.from_template_and_values, WARM_JOB_TEMPLATE, {"labels": {"team": "revenue"}}
    )
    assert configuration.labels == {"team": "revenue"}
    # An operator's default for the labels is the pool's own: ensure_pool keeps it.
    edited = copy.deepcopy(WARM_JOB_TEMPLATE)
    edited["variables"]["properties"]["labels"]["default"] = {"team": "revenue"}
    with get_client(sync_client=True) as client:
        client.update_work_pool(pool, WorkPoolUpdate(base_job_template=edited))
        ensure_pool(pool)
        assert client.read_work_pool(pool).base_job_template == edited


def _history(run_id: UUID) -> list[str | None]:
    """The names of a flow run's states, oldest first."""
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(run_id)
    return [state.name for state in sorted(states, key=lambda state: state.timestamp)]


def _with_a_two_minute_poll(worker: WarmWorker, work: Any) -> None:
    """Start ``worker`` polling every two minutes, run ``work`` (in a thread) once its first poll and its event
    subscription are done, then stop the worker: only a wake-up can start a run created meanwhile."""
    from prefect.settings import temporary_settings

    async def scenario() -> None:
        with temporary_settings(updates={"worker.query_seconds": 120}):
            async with anyio.create_task_group() as group:
                group.start_soon(worker.start)
                await anyio.sleep(4)  # the worker's first poll (at start) and its subscription are done
                await anyio.to_thread.run_sync(work)
                group.cancel_scope.cancel()

    anyio.run(scenario)


@pytest.mark.parametrize("wake_on_events", [True, False], ids=["events", "polling-only"])
def test_a_scheduled_run_is_taken_on_its_event_not_at_the_next_poll(
    engine: Any, make_intent: Any, unique: str, wake_on_events: bool
) -> None:
    """With a two-minute poll, only the flow-run event can start a run created after the first poll."""
    pool = f"warm-events-{unique}"
    deployment_id = _execute_intent_deployment(pool, unique)
    intent = make_intent("internal.create_task", {"title": "Taken on its event"})
    assert verify_and_register(intent).admitted
    worker = WarmWorker(work_pool_name=pool, limit=1, wake_on_events=wake_on_events)
    waited: list[float] = []

    def create_and_wait() -> None:
        with get_client(sync_client=True) as client:
            run = client.create_flow_run_from_deployment(
                deployment_id, parameters={"action_intent_id": intent["action_intent_id"]}
            )
        started = time.monotonic()
        deadline = started + 10
        while time.monotonic() < deadline:
            state = _read(run.id).state
            if state is not None and state.is_final():
                waited.append(time.monotonic() - started)
                assert state.is_completed(), state
                return
            time.sleep(0.1)

    _with_a_two_minute_poll(worker, create_and_wait)

    if wake_on_events:
        assert waited, "the run was not taken within 10 s of its creation though its event was sent"
    else:
        assert not waited, "without events the run waits for the next poll (two minutes away)"


def test_a_run_retried_from_prefects_ui_is_taken_on_its_event_not_at_the_next_poll(
    engine: Any, make_intent: Any, unique: str
) -> None:
    """The UI's "Retry" sets a run AwaitingRetry (a Scheduled-type state of another name, and event): with a
    two-minute poll, only that event can start it."""
    from prefect.states import AwaitingRetry, Failed

    pool = f"warm-retry-{unique}"
    deployment_id = _execute_intent_deployment(pool, unique)
    _, run_id = _deployment_run(make_intent, deployment_id, "Retried from the UI")
    with get_client(sync_client=True) as client:  # failed before any worker took it
        client.set_flow_run_state(run_id, Failed(message="failed before the retry"), force=True)
    worker = WarmWorker(work_pool_name=pool, limit=1)
    finals: list[FlowRun] = []

    def retry_and_wait() -> None:
        with get_client(sync_client=True) as client:  # as the UI's retryFlowRun does
            client.set_flow_run_state(run_id, AwaitingRetry(message="Retry from the UI"), force=True)
        finals.append(_finished(run_id, "the retried run", timeout=10))

    _with_a_two_minute_poll(worker, retry_and_wait)

    assert finals[0].state is not None and finals[0].state.is_completed(), finals[0].state


def test_a_worker_starts_its_limit_of_idle_executors_and_stops_them_at_teardown(unique: str) -> None:
    """The first runs after a start find executors ready (an executor's start is not paid inside a burst)."""
    pool = f"warm-idle-{unique}"
    ensure_pool(pool)
    executors: list[Any] = []

    async def scenario() -> None:
        async with WarmWorker(work_pool_name=pool, limit=3, wake_on_events=False) as worker:
            deadline = time.monotonic() + 60
            while worker._idle.qsize() < 3:
                assert time.monotonic() < deadline, "three idle executors were not started"
                await anyio.sleep(0.1)
            await anyio.sleep(0.5)  # no fourth one is started
            executors.extend(worker._all)
            assert len(executors) == 3
            assert all(executor.process.is_alive() for executor in executors)
            assert os.getpid() not in {executor.pid for executor in executors}

    anyio.run(scenario)

    assert not any(executor.process.is_alive() for executor in executors), "teardown stops idle executors"


def test_a_poll_asks_for_no_more_runs_than_the_worker_can_start(unique: str) -> None:
    """Prefect's own poll returns the whole backlog; the warm worker's returns its free slots' worth."""
    pool = f"warm-limit-{unique}"
    deployment_id = _execute_intent_deployment(pool, unique)

    async def scenario() -> None:
        async with WarmWorker(work_pool_name=pool, limit=2, wake_on_events=False) as worker:
            runs = [
                await worker.client.create_flow_run_from_deployment(
                    deployment_id, parameters={"action_intent_id": f"backlog-{n}"}
                )
                for n in range(5)
            ]
            everything = await worker.client.get_scheduled_flow_runs_for_work_pool(pool)
            assert {entry.flow_run.id for entry in everything} == {run.id for run in runs}  # Prefect's poll
            polled = await worker._get_scheduled_flow_runs()
            assert [entry.flow_run.id for entry in polled] == [run.id for run in runs[:2]], "the oldest two"
            assert worker._limiter is not None
            worker._limiter.acquire_on_behalf_of_nowait(runs[0].id)  # one slot taken …
            worker._submitting_flow_run_ids.add(runs[0].id)  # … by a run still being handed over
            polled = await worker._get_scheduled_flow_runs()
            assert [entry.flow_run.id for entry in polled] == [run.id for run in runs[:2]]
            worker._submitting_flow_run_ids.discard(runs[0].id)  # handed over (no longer Scheduled)
            worker._limiter.acquire_on_behalf_of_nowait(runs[1].id)
            assert await worker._get_scheduled_flow_runs() == [], "no free slot, no run"
            worker._limiter.release_on_behalf_of(runs[0].id)
            worker._limiter.release_on_behalf_of(runs[1].id)

    anyio.run(scenario)


def test_a_run_waiting_for_a_busy_slot_starts_when_the_slot_is_freed_not_at_the_next_poll(
    engine: Any, make_intent: Any, unique: str
) -> None:
    """One slot, a two-minute poll: the second run is taken as soon as the first one's slot is released."""
    pool = f"warm-freed-{unique}"
    deployment_id = _execute_intent_deployment(pool, unique)
    worker = WarmWorker(work_pool_name=pool, limit=1)
    finals: list[FlowRun] = []

    def create_two_and_wait() -> None:
        run_ids = [_deployment_run(make_intent, deployment_id, f"Freed {n}")[1] for n in range(2)]
        finals.extend(_finished(run_id, f"run {n}", timeout=20) for n, run_id in enumerate(run_ids))

    _with_a_two_minute_poll(worker, create_two_and_wait)

    assert [run.state.is_completed() for run in finals if run.state is not None] == [True, True], finals
    first, second = finals
    assert first.end_time is not None and second.start_time is not None
    assert second.start_time >= first.end_time, "one slot: the second run waited for the first"


def test_a_freed_slot_polls_only_when_a_run_may_be_waiting_for_it(
    engine: Any, make_intent: Any, unique: str
) -> None:
    """Two slots, one run, a two-minute poll: the run's event polls once; its freed slot, with nothing left
    waiting, polls nothing (a newer run would bring its own event)."""
    pool = f"warm-idle-slot-{unique}"
    deployment_id = _execute_intent_deployment(pool, unique)
    worker = WarmWorker(work_pool_name=pool, limit=2)
    polls: list[tuple[float, int]] = []
    released: list[float] = []
    poll, release = worker._get_scheduled_flow_runs, worker._release_limit_slot

    async def counted_poll() -> list[Any]:
        started = time.monotonic()
        runs = await poll()
        polls.append((started, len(runs)))
        return runs

    def counted_release(flow_run_id: UUID) -> None:
        release(flow_run_id)
        released.append(time.monotonic())

    worker._get_scheduled_flow_runs = counted_poll  # type: ignore[method-assign]
    worker._release_limit_slot = counted_release  # type: ignore[method-assign]
    finals: list[FlowRun] = []

    def create_one_and_wait() -> None:
        before = len(polls)
        finals.append(
            _finished(_deployment_run(make_intent, deployment_id, "Alone")[1], "the run", timeout=20)
        )
        deadline = time.monotonic() + 10
        while not released:
            assert time.monotonic() < deadline, "the run's slot was not released"
            time.sleep(0.05)
        time.sleep(1)  # a poll woken by the freed slot would have been made by now
        assert any(n == 1 for _, n in polls[before:]), "the run's event had the pool polled"

    _with_a_two_minute_poll(worker, create_one_and_wait)

    assert finals and finals[0].state is not None and finals[0].state.is_completed(), finals
    assert not [started for started, _ in polls if started >= released[0]], "the freed slot polled"


def test_a_freed_slot_polls_after_a_full_poll_a_run_left_without_a_slot_or_a_deferred_wake_up(
    unique: str,
) -> None:
    """What decides whether a freed slot polls: a poll under its limit saw every waiting run; one that filled
    its limit, a returned run that found no free slot, or a wake-up that found every slot busy may have left
    one behind; without the event stream, every freed slot polls."""
    pool = f"warm-waiting-{unique}"
    deployment_id = _execute_intent_deployment(pool, unique)

    async def scenario() -> None:
        async with WarmWorker(work_pool_name=pool, limit=2, wake_on_events=False) as worker:
            assert worker._limiter is not None
            busy = [UUID(int=n) for n in range(2)]  # another poll's runs, holding both slots
            worker._events_live = True  # as while subscribed (a newer run would bring its own event)
            run = await worker.client.create_flow_run_from_deployment(
                deployment_id, parameters={"action_intent_id": "waiting-0"}
            )
            assert len(await worker._get_scheduled_flow_runs()) == 1  # under its limit of two
            assert not worker._may_be_waiting(), "a poll under its limit saw every waiting run"
            worker._events_live = False
            assert worker._may_be_waiting(), "no event stream: every freed slot polls"
            worker._events_live = True

            await worker.client.create_flow_run_from_deployment(
                deployment_id, parameters={"action_intent_id": "waiting-1"}
            )
            assert len(await worker._get_scheduled_flow_runs()) == 2  # filled its limit
            assert worker._may_be_waiting(), "a poll that filled its limit may have left a run behind"
            await worker.client.delete_flow_run(run.id)
            returned = await worker._get_scheduled_flow_runs()
            assert len(returned) == 1
            assert not worker._may_be_waiting(), "a newer poll under its limit saw every waiting run"

            for slot in busy:
                worker._limiter.acquire_on_behalf_of_nowait(slot)
            assert await worker._submit_scheduled_flow_runs(returned) == []
            assert worker._may_be_waiting(), "a returned run that found no free slot waits for one"
            for slot in busy:
                worker._limiter.release_on_behalf_of(slot)
            assert len(await worker._get_scheduled_flow_runs()) == 1
            assert not worker._may_be_waiting()

            for slot in busy:
                worker._limiter.acquire_on_behalf_of_nowait(slot)
            worker._wake_up()  # a run's event, every slot busy
            deadline = time.monotonic() + 5
            while not worker._may_be_waiting():
                assert time.monotonic() < deadline, (
                    "a wake-up with no free slot did not leave the run waiting"
                )
                await anyio.sleep(0.05)
            for slot in busy:
                worker._limiter.release_on_behalf_of(slot)

    anyio.run(scenario)


@flow(name="not-fulfill")
def _foreign() -> None:
    """A flow that is none of fulfill's: the warm worker must not run it."""


def _sweeper_and_foreign(unique: str, **worker: Any) -> dict[str, FlowRun]:
    """A run of fulfill's ``expire-sweeper`` and one of :func:`_foreign`, from deployments on a new warm pool,
    taken by a warm worker (``worker``: its options) and waited for: their final runs, by name."""
    from flows.maintenance import expire_sweeper

    pool = f"warm-maint-{unique}"
    ensure_pool(pool)
    sweeper = expire_sweeper.to_deployment(name=f"expire-sweeper-{unique}", work_pool_name=pool).apply()
    foreign = _foreign.to_deployment(name=f"foreign-{unique}", work_pool_name=pool).apply()
    assert isinstance(sweeper, UUID) and isinstance(foreign, UUID)
    finals: dict[str, FlowRun] = {}

    def run_both() -> None:
        with get_client(sync_client=True) as client:
            runs = {
                "sweeper": client.create_flow_run_from_deployment(sweeper).id,
                "foreign": client.create_flow_run_from_deployment(foreign).id,
            }
        for name, run_id in runs.items():
            finals[name] = _finished(run_id, name)

    async def scenario() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(WarmWorker(work_pool_name=pool, limit=2, **worker).start)
            await anyio.to_thread.run_sync(run_both)
            group.cancel_scope.cancel()

    anyio.run(scenario)
    return finals


def _ran_in_an_executor(run: FlowRun) -> None:
    assert run.state is not None and run.state.is_completed(), run.state
    assert run.infrastructure_pid not in (None, str(os.getpid())), "ran in an executor"


def _refused(run: FlowRun) -> None:
    assert run.state is not None and run.state.is_crashed(), run.state
    assert str(NOT_A_FULFILL_FLOW) in (run.state.message or "")


def test_maintenance_flows_run_warm_and_any_other_flow_is_refused(engine: Any, unique: str) -> None:
    finals = _sweeper_and_foreign(unique)
    _ran_in_an_executor(finals["sweeper"])
    _refused(finals["foreign"])


def test_a_warm_worker_given_other_flows_runs_those_and_refuses_fulfills(engine: Any, unique: str) -> None:
    """``flows=`` (entrypoints) replaces fulfill's flows: how the bench runs its bare baseline warm."""
    finals = _sweeper_and_foreign(unique, flows=(f"{__name__}:_foreign",))
    _ran_in_an_executor(finals["foreign"])
    _refused(finals["sweeper"])


def test_a_runs_job_configuration_reads_its_flow_once_and_its_deployment_once_a_minute(
    unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same labels as the process worker's configuration, without two reads per run."""
    from unittest import mock

    from prefect.settings.base import PrefectBaseSettings
    from prefect.workers.process import ProcessJobConfiguration

    from deployments.worker import WarmJobConfiguration, _KnownObjects

    monkeypatch.setattr("deployments.worker._KNOWN", _KnownObjects())  # nothing read by earlier tests

    pool = f"warm-config-{unique}"
    deployment_id = _execute_intent_deployment(pool, unique)

    async def scenario() -> None:
        async with get_client() as client:
            work_pool = await client.read_work_pool(pool)
            runs = [
                await client.create_flow_run_from_deployment(
                    deployment_id, parameters={"action_intent_id": str(n)}
                )
                for n in range(3)
            ]
            with mock.patch.object(
                PrefectBaseSettings, "to_environment_variables", autospec=True, return_value={}
            ) as settings_as_environment:
                expected = await ProcessJobConfiguration.resolve_for_flow_run(
                    runs[0], client=client, work_pool=work_pool, worker_name="w"
                )
                assert settings_as_environment.call_count == 1  # Prefect's: every setting, for each run
                await WarmJobConfiguration.resolve_for_flow_run(
                    runs[0], client=client, work_pool=work_pool, worker_name="w"
                )
                assert settings_as_environment.call_count == 1, "no per-run copy of the worker's settings"
            monkeypatch.setattr("deployments.worker._KNOWN", _KnownObjects())
            with (
                mock.patch.object(client, "read_flow", side_effect=client.read_flow) as read_flow,
                mock.patch.object(
                    client, "read_deployment", side_effect=client.read_deployment
                ) as read_deployment,
            ):
                configurations = [
                    await WarmJobConfiguration.resolve_for_flow_run(
                        run, client=client, work_pool=work_pool, worker_name="w"
                    )
                    for run in runs
                ]
                assert read_flow.await_count == 1
                assert read_deployment.await_count == 1
                with mock.patch("deployments.worker.time.monotonic", return_value=time.monotonic() + 61):
                    await WarmJobConfiguration.resolve_for_flow_run(
                        runs[0], client=client, work_pool=work_pool, worker_name="w"
                    )
                assert read_deployment.await_count == 2, "a deployment read a minute ago is read again"
                assert read_flow.await_count == 1
        assert configurations[0].labels == expected.labels
        assert configurations[0].labels["prefect.io/deployment-name"] == f"execute-intent-{unique}"
        assert configurations[0].labels["prefect.io/flow-name"] == "execute-intent"
        assert [c.labels["prefect.io/flow-run-id"] for c in configurations] == [str(run.id) for run in runs]

    anyio.run(scenario)


@pytest.mark.usefixtures("prefects_own")
def test_an_executor_runs_a_deployment_run_without_prefects_suspension_watch(
    engine: Any, make_intent: Any, unique: str
) -> None:
    """Prefect's engine watches every deployment run for a suspension (a thread, a client, an events
    subscription, before the run starts); a warm executor runs fulfill's runs without it."""
    import multiprocessing
    import threading
    from unittest import mock

    from prefect._internal.observers import FlowRunSuspendingObserver

    from deployments.worker import _api_settings, _fulfill_environment, serve

    deployment_id = _execute_intent_deployment(f"warm-suspend-{unique}", unique)

    def deployment_run(title: str) -> tuple[str, UUID]:
        return _deployment_run(make_intent, deployment_id, title)

    def succeeded(intent_id: str) -> bool:
        with transaction(engine) as session:
            row = session.get(Execution, intent_id)
            return row is not None and row.status == "SUCCEEDED"

    with mock.patch.object(
        FlowRunSuspendingObserver,
        "watch_flow_run_id",
        autospec=True,
        side_effect=FlowRunSuspendingObserver.watch_flow_run_id,
    ) as watch:
        # Prefect's own path, for comparison: the watch is started for a deployment run.
        intent_id, run_id = deployment_run("Watched")
        flow_engine.run_flow(
            execute_intent, flow_run=_read(run_id), parameters={"action_intent_id": intent_id}
        )
        assert succeeded(intent_id)
        assert watch.call_count == 1

        ours, theirs = multiprocessing.Pipe()
        executor = threading.Thread(target=serve, args=(theirs, _api_settings(), _fulfill_environment()))
        executor.start()
        try:
            assert ours.recv() == os.getpid()
            for n in range(2):
                intent_id, run_id = deployment_run(f"Not watched {n}")
                ours.send(_read(run_id).model_dump_json())  # as the worker hands a polled run over
                assert ours.recv() == 0
                assert succeeded(intent_id)
                assert _finished(run_id, "the executor's run").state.is_completed()  # type: ignore[union-attr]
        finally:
            ours.send(None)
            executor.join(timeout=30)
        assert watch.call_count == 1, "the warm executor started Prefect's suspension watch"


@pytest.mark.usefixtures("prefects_own")
def test_an_executor_reads_neither_the_run_it_is_handed_nor_the_default_storage_for_every_run(
    engine: Any, make_intent: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefect's engine reads the server's default result storage for the flow run and for its task run;
    a warm executor reads it once for a minute of runs, and starts a run from the worker's copy of it."""
    import multiprocessing
    import threading
    from unittest import mock

    from prefect.client.orchestration import SyncPrefectClient

    from deployments.worker import _api_settings, _fulfill_environment, serve

    deployment_id = _execute_intent_deployment(f"warm-reads-{unique}", unique)
    monkeypatch.setattr(result_storage, "_read", {})  # nothing read by an earlier test

    def calls(method: str) -> Any:
        original = getattr(SyncPrefectClient, method)
        return mock.patch.object(SyncPrefectClient, method, autospec=True, side_effect=original)

    with calls("read_server_default_result_storage") as storage, calls("read_flow_run") as read_run:
        # Prefect's own path, for comparison: the storage read for the flow run and for its task run.
        intent_id, run_id = _deployment_run(make_intent, deployment_id, "Prefect's path")
        flow_run = _read(run_id)
        read_run.reset_mock()
        flow_engine.run_flow(execute_intent, flow_run=flow_run, parameters={"action_intent_id": intent_id})
        assert storage.call_count == 2
        assert read_run.call_count == 1  # the engine's own read as the run starts
        storage.reset_mock()
        read_run.reset_mock()

        ours, theirs = multiprocessing.Pipe()
        executor = threading.Thread(target=serve, args=(theirs, _api_settings(), _fulfill_environment()))
        executor.start()
        try:
            assert ours.recv() == os.getpid()
            # Two runs within a minute: one read (the first flow run's); then a read is kept no time.
            for n, (keep_seconds, storage_reads) in enumerate([(60.0, 1), (60.0, 1), (0.0, 3)]):
                monkeypatch.setattr(result_storage, "READ_SECONDS", keep_seconds)
                intent_id, run_id = _deployment_run(make_intent, deployment_id, f"Warm {n}")
                ours.send(_read(run_id).model_dump_json())  # as the worker hands a polled run over
                read_run.reset_mock()
                assert ours.recv() == 0
                assert read_run.call_count == 1, "the executor read the run it was handed"
                assert storage.call_count == storage_reads, f"run {n}"
                assert _finished(run_id, "the executor's run").state.is_completed()  # type: ignore[union-attr]
        finally:
            ours.send(None)
            executor.join(timeout=30)
        with transaction(engine) as session:
            row = session.get(Execution, intent_id)
            assert row is not None and row.status == "SUCCEEDED"
