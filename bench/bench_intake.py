"""Benchmark: approval webhook posted → execution SUCCEEDED, through the running stack (`fulfill up`).

    .venv/bin/python bench/bench_intake.py --sequential 10 --burst 10 --burst 100 \
        [--worker warm|process] [--limit 4] [--repeats 1] [--write docs/benchmarks.md]
    # set PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://… for a PostgreSQL-backed Prefect server

Starts the whole local stack on a fresh data directory (Prefect server, work pools, deployments, the
intent pool's worker — the warm worker, or Prefect's process worker with ``--worker process`` — and
the API), posts signed Standard Webhooks deliveries of internal intents and polls the ledger database
until each execution is SUCCEEDED. Prints p50/p95 for sequential deliveries and the time each burst takes
to finish, with the share of both cores the machine used meanwhile and, for the last burst of 10, when each
of its runs was created, taken (Pending), started and ended; for the sequential ones, where the time went
from the webhook posted to the execution seen SUCCEEDED. With the warm worker, each sequential approval
and each burst is followed by as many runs of the baseline on the same stack (``bare.py``: a bare Prefect
flow — one task inserting one row into the ledger's database — created through Prefect's API, on a warm
worker of its own with as many executors, timed until its row is written): Prefect's own per-run cost on
this path. Goals (issue 13): p50 ≤ 300 ms and p95 ≤ 1 s sequential, a burst of 10 finished within 2 s.
Speed goals live here, never in timed tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise, zip_longest
from pathlib import Path
from typing import Any

import httpx
from bare import bare_runs
from common import fresh_prefect_database, load_note, machine, machine_cpu, percentile, publish
from intents import bench_intent

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


Moments = tuple[datetime, datetime, datetime, datetime]


def _moments(stack: Any, flow_run_ids: list[str]) -> dict[str, Moments]:
    """Each flow run's creation and its first Pending, Running and Completed state (each state type's first
    state: Pending, not a later "Submitting"), by run id; a run without one of them is left out."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    settings = {
        PREFECT_API_URL: stack.prefect_url,
        PREFECT_API_AUTH_STRING: stack.env["PREFECT_API_AUTH_STRING"],
    }
    moments: dict[str, Moments] = {}
    with temporary_settings(settings), get_client(sync_client=True) as client:
        for run_id in flow_run_ids:
            run = client.read_flow_run(UUID(run_id))
            at: dict[str, datetime] = {}
            for state in sorted(client.read_flow_run_states(UUID(run_id)), key=lambda state: state.timestamp):
                at.setdefault(state.type.value, state.timestamp)
            created, pending, running, done = (
                run.created,
                at.get("PENDING"),
                at.get("RUNNING"),
                at.get("COMPLETED"),
            )
            if created is not None and pending is not None and running is not None and done is not None:
                moments[run_id] = (created, pending, running, done)
    return moments


def _phases(stack: Any, sequential: list[Approval], run_ids: dict[str, str]) -> dict[str, list[float]]:
    """Seconds of each part of a sequential approval's path, which add up to its total: the webhook posted →
    the run created → Pending → Running (the flow runs' states) → the execution's finish in the ledger →
    this script seeing it; and, off the path, the finish → the run's Completed state."""
    along: dict[str, list[float]] = {
        "webhook posted → the intake created the run": [],
        "→ the worker took it (Pending)": [],
        "→ the flow started (Running)": [],
        "→ the execution SUCCEEDED (its finish in the ledger)": [],
        "→ this script saw it (the status polled every 20 ms)": [],
    }
    after: list[float] = []
    moments = _moments(stack, [run_ids[approval.intent_id] for approval in sequential])
    for approval in sequential:
        if (run := moments.get(run_ids[approval.intent_id])) is None:
            continue
        created, pending, running, done = run
        path = (approval.posted, created, pending, running, approval.finished, approval.seen)
        for values, (start, end) in zip(along.values(), pairwise(path), strict=True):
            values.append((end - start).total_seconds())
        after.append((done - approval.finished).total_seconds())
    return {**along, "(off the path) the finish → the flow run Completed": after}


def _burst_timeline(stack: Any, flow_run_ids: list[str], start: float) -> list[tuple[float, ...]]:
    """Each run of a burst: seconds from ``start`` (a ``time.time()``) to its creation, Pending, Running and
    Completed, in order of creation."""
    return sorted(
        tuple(moment.timestamp() - start for moment in moments)
        for moments in _moments(stack, flow_run_ids).values()
    )


class Deliveries:
    """Signed Standard Webhooks deliveries of bench intents, and the flow run each one started."""

    def __init__(self, seed: str) -> None:
        self.seed = seed
        self.run = uuid.uuid4().hex[:6]
        self.counter = iter(range(1, 1_000_000))
        self.lock = threading.Lock()
        self.flow_runs: dict[str, str] = {}  # intent → its flow run

    def post(self, api_url: str) -> str:
        """Deliver one approval; returns its intent id (the intake answered 202)."""
        from standardwebhooks.webhooks import Webhook

        with self.lock:
            n = next(self.counter)
        intent = bench_intent(self.run, n, self.seed)
        body = json.dumps(
            {"type": "action_intent.approved", "timestamp": "2026-12-01T00:00:00Z", "data": intent}
        )
        now = datetime.now(tz=UTC)
        msg = f"msg_{self.run}_{n}"
        headers = {
            "webhook-id": msg,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(SECRET).sign(msg, now, body),
        }
        answer = httpx.post(f"{api_url}/webhooks/approvals", content=body, headers=headers, timeout=300)
        assert answer.status_code == 202, answer.text
        self.flow_runs[str(intent["action_intent_id"])] = str(answer.json()["flow_run_id"])
        return str(intent["action_intent_id"])


def wait_succeeded(service: Any, intent_id: str, started: float) -> float:
    """Seconds from ``started`` until the execution is SUCCEEDED (polled every 20 ms)."""
    return _succeeded(service, intent_id, started)[0]


def _succeeded(service: Any, intent_id: str, started: float) -> tuple[float, Any]:
    """:func:`wait_succeeded`, and the SUCCEEDED status body."""
    while True:
        status = service.get_execution_status(intent_id)
        if status.status == "SUCCEEDED":
            return time.perf_counter() - started, status
        assert status.status in ("PENDING", "EXECUTING"), f"{intent_id} ended {status.status}"
        time.sleep(0.02)


@dataclass(frozen=True)
class Approval:
    """One sequential approval: when its webhook was posted, its execution finished (the ledger's clock) and
    this script saw it SUCCEEDED."""

    intent_id: str
    posted: datetime
    finished: datetime
    seen: datetime


def _burst(
    post: Callable[[], str], wait: Callable[[str, float], float], size: int
) -> tuple[float, list[str], float]:
    """A burst of ``size`` posts at once (a thread each): seconds until ``wait`` saw every one done, what the
    posts answered, and the burst's start (``time.time()``)."""
    t0, t0_wall = time.perf_counter(), time.time()
    posted: list[str] = []
    threads = [threading.Thread(target=lambda: posted.append(post())) for _ in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for answer in posted:
        wait(answer, t0)
    return time.perf_counter() - t0, posted, t0_wall


def _cells(moments: tuple[float, ...]) -> list[str]:
    """A run's four moments (created, Pending, Running, Completed) as table cells; none for a missing run."""
    return [f"{moment:.2f}" for moment in moments] or [""] * 4


def _row(measure: str, took: list[float], bare: list[float], goal: str) -> str:
    """A measure's line: its runs, median and p95, and its bare baseline's (when measured)."""
    line = f"| {measure} | {len(took)} | {statistics.median(took):.2f} s | {percentile(took, 0.95):.2f} s |"
    if not bare:
        return line + f" – | – | – | {goal} |"
    ratio = statistics.median(took) / statistics.median(bare)
    return (
        line + f" {statistics.median(bare):.2f} s | {percentile(bare, 0.95):.2f} s | {ratio:.2f} | {goal} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequential", type=int, default=10)
    parser.add_argument("--burst", type=int, action="append", help="a burst of this many (repeatable)")
    parser.add_argument("--repeats", type=int, default=1, help="run each burst this many times")
    parser.add_argument("--worker", choices=["warm", "process"], default="warm")
    parser.add_argument(
        "--limit", type=int, default=4, help="flow runs the intent pool's worker runs at a time"
    )
    parser.add_argument("--write", type=Path, default=None, help="write the Markdown section to this file")
    args = parser.parse_args()
    bursts: list[int] = args.burst or [10]
    data = Path(tempfile.mkdtemp(prefix="fulfill-bench-intake-"))
    os.environ["FULFILL_DATA_DIR"] = str(data)
    os.environ["FULFILL_DATABASE_URL"] = f"sqlite:///{data / 'fulfill.db'}"
    os.environ["FULFILL_WEBHOOK_SECRETS"] = SECRET
    os.environ.setdefault("PREFECT_WORKER_QUERY_SECONDS", "1")
    os.environ.pop("PREFECT_API_URL", None)

    from fulfill.intent import parse_timestamp
    from fulfill.settings import reload_settings
    from surfaces.demo import demo_keys
    from surfaces.service import ExecutionService
    from surfaces.up import running_stack

    keys, seed = demo_keys(data)
    os.environ["FULFILL_APPROVAL_KEYS"] = str(keys)
    reload_settings()
    deliveries = Deliveries(seed)
    post, run_ids = deliveries.post, deliveries.flow_runs

    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    warm = args.worker == "warm"
    with (
        fresh_prefect_database(data),
        running_stack(
            data, prefect_port=4290, api_port=8099, emit=lambda _: None, warm=warm, worker_limit=args.limit
        ) as stack,
        contextlib.ExitStack() as stack_context,
    ):
        up_seconds = time.perf_counter() - started
        service = ExecutionService()
        wait_succeeded(service, post(stack.api_url), time.perf_counter())  # warm-up
        bare = stack_context.enter_context(bare_runs(stack, args.limit, data / "logs")) if warm else None
        sequential: list[float] = []
        bare_sequential: list[float] = []
        approvals: list[Approval] = []
        for _ in range(args.sequential):
            t0, posted = time.perf_counter(), datetime.now(tz=UTC)
            intent_id = post(stack.api_url)
            took, status = _succeeded(service, intent_id, t0)
            sequential.append(took)
            approvals.append(
                Approval(
                    intent_id, posted, parse_timestamp(status.finished_at), posted + timedelta(seconds=took)
                )
            )
            if bare is not None:
                t0 = time.perf_counter()
                bare_sequential.append(bare.wait_written(bare.post(), t0))
        phases = _phases(stack, approvals, run_ids)
        burst_seconds: dict[int, list[float]] = {size: [] for size in bursts}
        bare_bursts: dict[int, list[float]] = {size: [] for size in bursts}
        burst_busy: dict[int, list[float]] = {size: [] for size in bursts}  # the machine's CPU in use
        timeline: list[tuple[float, ...]] = []
        bare_timeline: list[tuple[float, ...]] = []
        for size in [size for size in bursts for _ in range(args.repeats)]:
            cpu0 = machine_cpu()
            took, ids, t0_wall = _burst(
                lambda: post(stack.api_url), lambda i, t0: wait_succeeded(service, i, t0), size
            )
            burst_seconds[size].append(took)
            busy, total = (after - before for after, before in zip(machine_cpu(), cpu0, strict=True))
            burst_busy[size].append(busy / total if total else 0.0)
            if size == 10:
                timeline = _burst_timeline(stack, [run_ids[i] for i in ids], t0_wall)
            if bare is not None:
                took, bare_keys, t0_wall = _burst(bare.post, bare.wait_written, size)
                bare_bursts[size].append(took)
                if size == 10:
                    bare_timeline = _burst_timeline(stack, [bare.flow_runs[k] for k in bare_keys], t0_wall)

    prefect_db = (
        "PostgreSQL"
        if os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL", "").startswith("postgres")
        else "SQLite"
    )
    lines = [
        f"## P2 — approval webhook → SUCCEEDED through `fulfill up`, {args.worker} worker"
        f" ({datetime.now(tz=UTC):%Y-%m-%d})",
        "",
        f"Machine: {machine()}. {load_note(load_start, os.getloadavg()[0])}",
        "",
        f"SQLite ledger, Prefect's own server on {prefect_db}; intents on "
        + (
            "the warm worker (`fulfill worker`: a run taken on its Prefect event, the pool also polled every 2 s)"
            if warm
            else f"Prefect's process worker (polling every {os.environ['PREFECT_WORKER_QUERY_SECONDS']} s)"
        )
        + f"; internal intents. Stack start: {up_seconds:.0f} s.",
        "",
        (
            "Beside each measure, its baseline on the same stack, run after each of its runs: a bare Prefect flow"
            " (one task inserting one row into the ledger's database), its runs created through Prefect's API"
            " (the same clients, one at a time or as many at once) on a warm worker of its own with as many"
            " executors (`bench/bare.py`), timed until its row is written (polled as often):"
            if bare is not None
            else "No bare baseline with Prefect's process worker (the baseline runs on a warm worker)."
        ),
        "",
        "| measure | runs | median | p95 | bare flow median | bare flow p95 | ÷ bare flow (medians) | goal |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        _row("sequential approval → SUCCEEDED", sequential, bare_sequential, "p50 ≤ 0.30 s, p95 ≤ 1 s"),
        *[
            _row(
                f"a burst of {size}: all SUCCEEDED after",
                took,
                bare_bursts[size],
                "≤ 2 s" if size == 10 else "",
            )
            for size, took in burst_seconds.items()
        ],
        "",
        "Both cores' use during the bursts (the whole machine: the stack, PostgreSQL and this script's"
        " posting and polling; median of the bursts): "
        + ", ".join(
            f"a burst of {size}: {statistics.median(busy):.0%}" for size, busy in burst_busy.items() if busy
        )
        + ".",
        "",
        "Where a sequential approval's time goes (medians; the webhook posted and seen SUCCEEDED by this script,"
        " the run created by the intake, taken by the worker (Pending) and started (Running) by the flow run's"
        " states, the execution's finish by the ledger; one clock, this machine's). The first five add up to"
        " about the total; the flow run's Completed state comes after the finish, off the path:",
        "",
        "| phase | median |",
        "|---|---|",
        *[f"| {name} | {statistics.median(values):.2f} s |" for name, values in phases.items()],
        "",
    ]
    if timeline:
        columns = "created | Pending | Running | Completed"
        lines += [
            "The last burst of 10, run by run (seconds from the first delivery posted; in order of creation)"
            + (
                ", and the last burst of 10 bare flow runs after it, from their first creation posted:"
                if bare_timeline
                else ":"
            ),
            "",
            f"| run | {columns} |"
            + (f" bare flow: {columns.replace(' | ', ' | bare: ')} |" if bare_timeline else ""),
            "|---:|---:|---:|---:|---:|" + ("---:|---:|---:|---:|" if bare_timeline else ""),
            *[
                f"| {n} | " + " | ".join(_cells(row) + (_cells(bare_row) if bare_timeline else [])) + " |"
                for n, (row, bare_row) in enumerate(zip_longest(timeline, bare_timeline, fillvalue=()), 1)
            ],
            "",
        ]
    publish(lines, args.write)


if __name__ == "__main__":
    main()
