"""`fulfill up`, tried as a new operator would: the stack starts, a signed webhook becomes a deployment run
that a worker executes; with the intent pool paused nothing executes, and on resume an approval whose TTL
passed meanwhile ends EXPIRED. Real processes (Prefect server on PostgreSQL, workers, uvicorn) on loopback,
SQLite ledger."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url
from standardwebhooks.webhooks import Webhook

from surfaces.up import INTENT_POOL, PREFECT_SERVER_DEFAULTS, Stack, running_stack
from tests.conftest import KEYS, VECTORS

T = TypeVar("T")

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def prefect_database(postgres_admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for the stack's Prefect server (an SQLite-backed Prefect server answers
    503 "database is locked" while the maintenance schedules start, on a busy 2-core machine — measured)."""
    name = f"prefect_up_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield (
        make_url(postgres_admin_url)
        .set(drivername="postgresql+asyncpg", database=name)
        .render_as_string(hide_password=False)
    )
    with psycopg.connect(postgres_admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, prefect_database: str) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("up")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PREFECT_API_DATABASE_CONNECTION_URL", prefect_database)
        env.setenv("FULFILL_DATABASE_URL", f"sqlite:///{data_dir / 'fulfill.db'}")
        env.setenv("FULFILL_APPROVAL_KEYS", str(VECTORS / "keys.json"))
        env.setenv("FULFILL_WEBHOOK_SECRETS", SECRET)
        env.setenv("PREFECT_WORKER_QUERY_SECONDS", "1")
        env.delenv("PREFECT_API_URL", raising=False)
        env.delenv("PREFECT_LOGGING_LEVEL", raising=False)  # as in a user's shell: fulfill's own default
        with running_stack(
            data_dir, prefect_port=_free_port(), api_port=_free_port(), emit=lambda _: None
        ) as up:
            yield up


def _intent(expires_in: int) -> dict[str, Any]:
    from fulfill.approval import sign_intent

    key = KEYS["keys"][0]
    intent = {
        "schema_version": "action_intent.v1",
        "action_intent_id": f"ai_up_{uuid.uuid4().hex[:8]}",
        "tenant_id": "acme",
        "account_id": "001Hs00002abcDEF",
        "decision_id": "dec_up",
        "action_type": "internal.create_task",
        "parameters": {"title": "Posted with a webhook"},
        "approval": {
            "approval_id": "apr_up",
            "approved_by": "jordan@acme.example",
            "approved_at": "2026-11-27T15:02:11Z",
            "edited": False,
            "key_id": key["key_id"],
        },
        "created_at": "2026-11-27T15:00:00Z",
        "expires_at_epoch": int(time.time()) + expires_in,
    }
    return sign_intent(intent, key_id=key["key_id"], seed_b64url=key["private_key_seed_b64url_TEST_ONLY"])


def _post(stack: Stack, intent: dict[str, Any]) -> httpx.Response:
    body = json.dumps({"type": "action_intent.approved", "timestamp": "2026-12-01T00:00:00Z", "data": intent})
    now = datetime.now(tz=UTC)
    msg_id = f"msg_{uuid.uuid4().hex[:8]}"
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRET).sign(msg_id, now, body),
    }
    return httpx.post(f"{stack.api_url}/webhooks/approvals", content=body, headers=headers, timeout=30)


def _status(stack: Stack, intent_id: str) -> str:
    import subprocess
    import sys

    done = subprocess.run(
        [str(Path(sys.executable).with_name("fulfill")), "status", intent_id, "--json"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["status"])


def _wait_for(stack: Stack, intent_id: str, wanted: set[str], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while (status := _status(stack, intent_id)) not in wanted:
        assert time.monotonic() < deadline, f"{intent_id} is still {status}"
        time.sleep(1)
    return status


def _prefect(stack: Stack) -> Any:
    """Prefect settings for the stack's server (a context manager)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    return temporary_settings(
        {PREFECT_API_URL: stack.prefect_url, PREFECT_API_AUTH_STRING: stack.env["PREFECT_API_AUTH_STRING"]}
    )


def _pool(stack: Stack, *, paused: bool) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate

    with _prefect(stack), get_client(sync_client=True) as client:
        client.update_work_pool(INTENT_POOL, WorkPoolUpdate(is_paused=paused))


def _read_until(stack: Stack, read: Callable[[Any], T], done: Callable[[T], bool], timeout: float = 30) -> T:
    """``read(client)`` from the stack's Prefect API every 0.5 s until ``done`` holds of it or ``timeout``
    passes; the last read."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with _prefect(stack), get_client(sync_client=True) as client:
        while not done(value := read(client)) and time.monotonic() < deadline:
            time.sleep(0.5)
    return value


def _run_logs(stack: Stack, flow_run_id: str, expected: str) -> list[str]:
    """The flow run's log messages in Prefect (the UI's logs tab), once one contains ``expected``."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    only_this_run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(flow_run_id)]))
    return _read_until(
        stack,
        lambda client: [log.message for log in client.read_logs(log_filter=only_this_run)],
        lambda messages: any(expected in message for message in messages),
    )


def _task_run_states(stack: Stack, flow_run_id: str) -> list[str]:
    """The flow run's task runs' state types in Prefect (the UI's run graph), once all are final."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    only_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)]))
    runs = _read_until(
        stack,
        lambda client: client.read_task_runs(flow_run_filter=only_this_run),
        lambda runs: bool(runs) and all(run.state and run.state.is_final() for run in runs),
    )
    return [run.state.type.value if run.state else "NONE" for run in runs]


def test_a_webhook_is_executed_by_a_worker_and_a_paused_pool_holds_it(stack: Stack) -> None:
    # The OSS API hands out block secrets to anyone who asks, unless it requires its auth string.
    secrets = httpx.post(
        f"{stack.prefect_url}/block_documents/filter", json={"include_secrets": True}, timeout=10
    )
    assert secrets.status_code == 401, "the Prefect API needs auth"
    # It keeps its PostgreSQL connections open and records task runs in batches (PREFECT_SERVER_DEFAULTS).
    server = dict(stack.children)["prefect-server"]
    environment = Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\0")
    for name, value in PREFECT_SERVER_DEFAULTS.items():
        assert f"{name}={value}".encode() in environment

    first = _intent(expires_in=3600)
    answer = _post(stack, first)
    assert answer.status_code == 202, answer.text
    assert _wait_for(stack, first["action_intent_id"], {"SUCCEEDED", "FAILED"}) == "SUCCEEDED"
    # The run's logs are in Prefect's UI: the worker's and the flow's (fulfill's default for services).
    messages = _run_logs(stack, answer.json()["flow_run_id"], "Finished in state Completed")
    assert any("submitting flow run" in message for message in messages), messages
    assert any("Finished in state Completed" in message for message in messages), messages
    # The batched task-run recorder still records the connector step's task run, in its final state.
    assert _task_run_states(stack, answer.json()["flow_run_id"]) == ["COMPLETED"]

    _pool(stack, paused=True)
    held = _intent(expires_in=15)
    assert _post(stack, held).status_code == 202
    time.sleep(20)  # past its TTL while the pool holds its run
    assert _status(stack, held["action_intent_id"]) in {"PENDING", "EXPIRED"}, "nothing executed while paused"
    _pool(stack, paused=False)

    assert _wait_for(stack, held["action_intent_id"], {"SUCCEEDED", "EXPIRED", "FAILED"}) == "EXPIRED"
