"""Launching runs of the ``execute-intent`` deployment: batched while one is in flight, a re-created
deployment found, a refused run refused alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client

from deployments import launch
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
    assert run.state is not None and run.state.is_scheduled()

    second_deployment = _deploy()  # deleted and deployed again: a new id, the old one answers 404
    assert second_deployment != first_deployment
    later = launch_deployment_run(f"b-{unique}", tenant_id="t1", action_type="internal.create_task")
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(UUID(later)).deployment_id == second_deployment
        assert client.read_deployment_by_name(DEPLOYMENT).id == second_deployment


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], threading.Event]:
    """Each bulk request's number of runs; the first request waits for the event before it is sent."""
    sizes: list[int] = []
    release = threading.Event()
    bulk = launch._Launcher._bulk

    def counted(self: launch._Launcher, deployment_id: UUID, runs: list[dict[str, Any]]) -> Any:
        sizes.append(len(runs))
        if len(sizes) == 1:
            release.wait(30)
        return bulk(self, deployment_id, runs)

    monkeypatch.setattr(launch._Launcher, "_bulk", counted)
    return sizes, release


def _wait_until(condition: Any) -> None:
    event = threading.Event()
    for _ in range(300):
        if condition():
            return
        event.wait(0.01)
    raise AssertionError("timed out")


def test_runs_asked_for_while_a_request_is_in_flight_are_created_in_one_request(
    unique: str, requests: tuple[list[int], threading.Event]
) -> None:
    sizes, release = requests
    _deploy()
    launch_deployment_run(f"warm-{unique}", tenant_id="t1", action_type="internal.create_task")  # id known
    sizes.clear()
    ids = [f"c{i}-{unique}" for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(launch_deployment_run, ids[0], tenant_id="t1", action_type="internal.create_task")
        _wait_until(lambda: len(sizes) == 1)  # in flight, held
        rest = [
            pool.submit(launch_deployment_run, i, tenant_id=f"t{n}", action_type="internal.create_task")
            for n, i in enumerate(ids[1:], start=2)
        ]
        _wait_until(lambda: launch._launcher().waiting.qsize() == 7)
        release.set()
        created = [first.result(30)] + [f.result(30) for f in rest]

    assert sizes == [1, 7], "the seven asked for meanwhile go in one request"
    assert len(set(created)) == 8
    with get_client(sync_client=True) as client:
        runs = [client.read_flow_run(UUID(flow_run_id)) for flow_run_id in created]
    assert [run.name for run in runs] == ids, "each caller gets its own run"
    assert [run.parameters for run in runs] == [{"action_intent_id": i} for i in ids]
    assert [sorted(run.tags) for run in runs][1:] == [
        sorted(["fulfill", f"tenant:t{n}", "action:internal.create_task"]) for n in range(2, 9)
    ]


def test_a_run_prefect_refuses_fails_alone_and_a_lone_run_is_sent_at_once(
    unique: str, requests: tuple[list[int], threading.Event]
) -> None:
    sizes, release = requests
    release.set()
    _deploy()
    good = launch_deployment_run(f"warm-{unique}", tenant_id="t1", action_type="internal.create_task")
    assert sizes == [1]

    held = threading.Event()
    bulk = launch._Launcher._bulk

    def hold(self: launch._Launcher, deployment_id: UUID, runs: list[dict[str, Any]]) -> Any:
        held.wait(30)
        return bulk(self, deployment_id, runs)

    launcher = launch._launcher()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(launch._Launcher, "_bulk", hold)
        blocker = launcher.submit({"parameters": {"action_intent_id": f"x-{unique}"}, "name": f"x-{unique}"})
        _wait_until(lambda: launcher.waiting.qsize() == 0)  # the blocker is in flight
        refused = launcher.submit({"parameters": {"action_intent_id": 5}, "name": f"bad-{unique}"})
        accepted = launcher.submit({"parameters": {"action_intent_id": f"y-{unique}"}, "name": f"y-{unique}"})
        held.set()
        with pytest.raises(httpx.HTTPStatusError) as refusal:
            refused.result(30)
        assert accepted.result(30) not in (good, blocker.result(30))
    assert refusal.value.response.status_code == 409, "sent again alone, refused as a single creation is"
    assert "validation" in refusal.value.response.text.lower()


def test_a_run_the_bulk_request_did_not_create_is_sent_alone(
    unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As an SQLite-backed server's ``database is locked`` for one run of a bulk request."""
    _deploy()
    bulk = launch._Launcher._bulk
    alone: list[str] = []
    one = launch._Launcher._one

    def first_not_created(self: launch._Launcher, deployment_id: UUID, runs: list[dict[str, Any]]) -> Any:
        return [None, *bulk(self, deployment_id, runs[1:])]

    def counted(self: launch._Launcher, deployment_id: UUID, run: dict[str, Any]) -> str:
        alone.append(run["name"])
        return one(self, deployment_id, run)

    monkeypatch.setattr(launch._Launcher, "_bulk", first_not_created)
    monkeypatch.setattr(launch._Launcher, "_one", counted)
    launcher = launch._launcher()
    runs = [
        launcher.submit({"parameters": {"action_intent_id": f"{n}-{unique}"}, "name": f"{n}-{unique}"})
        for n in ("p", "q")
    ]
    created = [run.result(30) for run in runs]
    assert f"p-{unique}" in alone
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(UUID(created[0])).name == f"p-{unique}"


def test_a_forked_process_starts_its_own_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "_launchers", dict(launch._launchers))  # this test's launchers stay here
    launcher = launch._launcher()
    assert launch._launcher() is launcher
    monkeypatch.setattr(launch.os, "getpid", lambda: launcher.pid + 1)
    assert launch._launcher() is not launcher


def test_runs_of_a_bulk_request_the_server_failed_are_sent_alone(
    unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 5xx for the whole request (one transaction for all): each run answered as a single creation is."""
    _deploy()
    launch_deployment_run(f"warm-{unique}", tenant_id="t1", action_type="internal.create_task")  # id known

    def failed(self: launch._Launcher, deployment_id: UUID, runs: list[dict[str, Any]]) -> Any:
        request = httpx.Request("POST", "http://127.0.0.1/bulk")
        raise httpx.HTTPStatusError("failed", request=request, response=httpx.Response(500, request=request))

    monkeypatch.setattr(launch._Launcher, "_bulk", failed)
    created = launch_deployment_run(f"f-{unique}", tenant_id="t1", action_type="internal.create_task")
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(UUID(created)).name == f"f-{unique}"
