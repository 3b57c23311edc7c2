"""The bare baseline: a Prefect flow with one task inserting one row into the ledger's database.

P1 runs the flow in-process, beside an intent. P2 and P3 run it as deployment runs through the stack that
runs fulfill's intents (:func:`bare_runs`): the same Prefect server, a warm worker of its own on a pool of
its own (``WarmWorker(flows=…)``: the same executors forked from a fork server that imported the engine
once, a run taken on its Prefect event, the same number of runs at a time), each run created straight
through Prefect's API (``create_flow_run`` of its deployment), as any Prefect user would. What it costs is
Prefect's own per-run cost on fulfill's warm path, without fulfill's intake, checks and ledger facts.

    .venv/bin/python bench/bare.py --pool bench-bare --limit 4    # the worker bare_runs starts
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from prefect import flow, task

#: The bare flow's table: the columns of the task record an intent's step writes.
WRITES = sa.Table(
    "bench_bare_writes",
    sa.MetaData(),
    sa.Column("idempotency_key", sa.String(200), primary_key=True),
    sa.Column("tenant_id", sa.String(200), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
#: The work pool of the bare baseline's warm worker, and the flow it runs (this module is ``bare`` in the
#: worker's executors, whose fork server inherits the worker's ``sys.path``: ``bench/`` first).
POOL = "bench-bare"
ENTRYPOINT = "bare:bare_flow"
#: How long :meth:`BareRuns.wait_written` waits for one run's row before it gives up.
WAIT_SECONDS = 120.0


def create_table() -> None:
    """The bare flow's table in the ledger's database (``FULFILL_DATABASE_URL``), if missing."""
    from fulfill.db import get_engine

    WRITES.metadata.create_all(get_engine())


def write(key: str) -> None:
    """Insert one row, in one transaction of fulfill's (the ledger's engine)."""
    from fulfill.db import get_engine, transaction

    with transaction(get_engine()) as session:
        session.execute(
            WRITES.insert().values(
                idempotency_key=key, tenant_id="bench", title="Bench task", created_at=datetime.now(tz=UTC)
            )
        )


@task(name="bare-write")
def bare_write(key: str) -> None:
    write(key)


@flow(name="bare-flow", persist_result=False)
def bare_flow(key: str) -> None:
    bare_write(key)


@dataclass
class BareRuns:
    """Runs of the bare flow's deployment on a running stack: create them, wait for their rows."""

    prefect_url: str
    auth: tuple[str, str]
    deployment_id: uuid.UUID
    flow_runs: dict[str, str] = field(default_factory=dict)  # key → its flow run

    def post(self) -> str:
        """Create one run (Prefect's API, a new connection each, as a webhook's sender makes); its key."""
        key = uuid.uuid4().hex
        answer = httpx.post(
            f"{self.prefect_url}/deployments/{self.deployment_id}/create_flow_run",
            json={"parameters": {"key": key}},
            auth=self.auth,
            timeout=300,
        )
        answer.raise_for_status()
        self.flow_runs[key] = str(answer.json()["id"])
        return key

    def wait_written(self, key: str, started: float) -> float:
        """Seconds from ``started`` (``time.perf_counter()``) until the run's row is in the table (polled every
        20 ms, as the intents' status is)."""
        from fulfill.db import get_engine

        deadline = time.monotonic() + WAIT_SECONDS
        query = sa.select(WRITES.c.idempotency_key).where(WRITES.c.idempotency_key == key)
        while True:
            with get_engine().connect() as conn:
                if conn.execute(query).first() is not None:
                    return time.perf_counter() - started
            if time.monotonic() > deadline:
                run = self.flow_runs.get(key)
                raise RuntimeError(f"the bare run {run} wrote nothing in {WAIT_SECONDS:.0f} s")
            time.sleep(0.02)


@contextlib.contextmanager
def bare_runs(stack: Any, limit: int, log_dir: Path) -> Iterator[BareRuns]:
    """The bare flow deployed on ``stack`` (``surfaces.up.Stack``, running) with its warm worker of ``limit``
    executors started as the stack's child ``worker-bare`` (stopped with the stack), after one run taken."""
    from prefect.deployments.runner import RunnerDeployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from deployments.worker import ensure_pool

    create_table()
    auth = stack.env["PREFECT_API_AUTH_STRING"]
    with temporary_settings({PREFECT_API_URL: stack.prefect_url, PREFECT_API_AUTH_STRING: auth}):
        ensure_pool(POOL)
        deployment = bare_flow.to_deployment(name="bare", work_pool_name=POOL)
        # Prefect's sync-or-async methods: called from synchronous code, they answer at once.
        deployment_id = deployment.apply() if isinstance(deployment, RunnerDeployment) else None
    if not isinstance(deployment_id, uuid.UUID):
        raise TypeError(f"deploying the bare flow answered {deployment_id!r}")
    user, _, password = auth.partition(":")
    runs = BareRuns(stack.prefect_url, (user, password), deployment_id)
    # Prefect sets its logging up when imported: its level goes in before (INFO, as for ``fulfill worker``).
    level = f"PREFECT_LOGGING_LEVEL={stack.env.get('PREFECT_LOGGING_LEVEL', 'INFO')}"
    worker = [
        "env",
        level,
        sys.executable,
        str(Path(__file__).resolve()),
        "--pool",
        POOL,
        "--limit",
        str(limit),
    ]
    stack.start("worker-bare", worker, log_dir)
    runs.wait_written(runs.post(), time.perf_counter())  # warm-up: the worker and an executor are ready
    yield runs


def main() -> None:
    """Run the bare baseline's warm worker, as ``fulfill worker`` runs fulfill's (the same timed poll)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pool", default=POOL)
    parser.add_argument("--limit", type=int, default=4)
    args = parser.parse_args()

    import anyio
    from prefect.settings import temporary_settings

    from deployments.worker import WarmWorker

    worker = WarmWorker(work_pool_name=args.pool, limit=args.limit, flows=(ENTRYPOINT,))
    with temporary_settings(updates={"worker.query_seconds": 2.0}), contextlib.suppress(KeyboardInterrupt):
        anyio.run(worker.start)


if __name__ == "__main__":
    main()
