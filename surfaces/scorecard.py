"""``fulfill scorecard``: inject crashes and faults into real executions and count what went wrong.

A development tool (not in the wheel; the CLI loads it on demand, like the demo). One run:

* starts the provider emulators on loopback, a Prefect server (unless ``PREFECT_API_URL`` is set) with
  the ``execute-intent`` deployment, and migrates the ledger database (``FULFILL_DATABASE_URL``;
  PostgreSQL or the embedded SQLite file);
* delivers N signed approvals through the approval-webhook intake (Standard Webhooks signatures, the
  deployment run created with the intent id as idempotency key) — some of them several times at
  once — across every action type and provider, some with approvals that expire within seconds;
* executes the runs in executor processes (:mod:`surfaces.scorecard_executor`), which SIGKILL
  themselves at a chosen recovery point for the intents picked for a crash. Half of the crashes are
  noticed by a "worker" (this process marks the run Crashed, as Prefect's process worker does); for the
  other half the host is lost and nobody tells Prefect — only the missed lease heartbeat shows it;
* meanwhile injects provider faults (503, 429 with Retry-After, timeouts, answers lost after commit,
  slow token endpoints) and flips tenant and action-type kill switches, while a reconciler process
  (the ``reconcile`` flow, watching) settles what the dead executors left;
* then checks, from the emulators' stores, the database and the request log, what must never happen.

Every verdict is read from the providers' side and the ledger; nothing is taken from the executors'
own account of what they did.
"""

from __future__ import annotations

import contextvars
import inspect
import json
import multiprocessing
import os
import queue
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from connectors.google_calendar import event_id_for
from connectors.salesforce import external_id_for
from fulfill.approval import sign_intent
from fulfill.steps import idempotency_key
from sandbox.base import Fault
from sandbox.local import Sandbox, start_sandbox
from surfaces.scorecard_executor import PRELOAD, DropIn, KillPoint, serve

WEBHOOK_SECRET = "whsec_" + "c2NvcmVjYXJkLXNjb3JlY2FyZC1zZWNyZXQ="
SF_ACCOUNT, HS_COMPANY = "001Hs00002abcDEIAY", "1001"
SF_OPPORTUNITY, HS_DEAL = "006Hs00001xyzABIAY", "2001"
BLOCKED = "[blocked]"  # a follow-up subject the Salesforce emulator refuses: the opportunity is undone
GENERATIONS = range(4)
TERMINAL = {"SUCCEEDED", "FAILED", "EXPIRED", "CANCELLED"}
#: A call this long after a kill switch was engaged cannot have been checked before it (the check runs
#: just before each call, in the same process); a call in flight when the switch flipped is allowed.
SWITCH_GRACE_SECONDS = 0.5
LATE_COMMIT_SECONDS = 5


@dataclass(frozen=True)
class Kind:
    """One sort of intent: where it goes, what it asks, which steps create something at the provider."""

    name: str
    tenant: str  # "sf" or "hs": which sandbox tenant (CRM provider)
    action_type: str
    parameters: dict[str, Any]
    creates: tuple[str, ...]  # steps that create one object each (duplicates are counted for them)
    provider: str | None  # the provider the steps write to; None for internal records
    fails: bool = False  # ends FAILED after a completed step (so its undo runs)
    #: A step the provider refuses (400) the first time only: sent again it would be accepted, so an
    #: executor that took over a failed execution by running its plan again would end it SUCCEEDED
    #: with the earlier step's object already undone (counted as "SUCCEEDED without its object").
    refused_once: str | None = None

    def points(self) -> tuple[KillPoint, ...]:
        """The recovery points this kind of execution passes."""
        points = [KillPoint.AFTER_ADMIT, KillPoint.AFTER_CLAIM, KillPoint.AFTER_CHECKPOINT]
        if self.provider is not None:
            points.append(KillPoint.DURING_CALL)
        points.append(KillPoint.AFTER_COMMIT)
        points.append(KillPoint.DURING_COMPENSATION if self.fails else KillPoint.DURING_FINISH)
        return tuple(points)


_TASK = {"subject": "Follow up on renewal pricing", "due_date": "2026-12-04", "priority": "High"}
_OPPORTUNITY = {
    "name": "Acme - 3-year renewal",
    "stage": "Prospecting",
    "close_date": "2027-01-31",
    "amount": 120000,
    "follow_up_task": {"subject": "Send the quote", "due_date": "2026-12-05"},
}
KINDS: tuple[Kind, ...] = (
    Kind(
        "internal task",
        "sf",
        "internal.create_task",
        {"title": "Prepare the QBR deck"},
        ("create_task",),
        None,
    ),
    Kind(
        "internal note",
        "hs",
        "internal.log_note",
        {"body": "Customer asked for a quote."},
        ("log_note",),
        None,
    ),
    Kind(
        "internal brief",
        "sf",
        "internal.attach_brief",
        {"title": "Acme brief", "content": "# Acme\n\n* ARR 1.2M\n"},
        ("create_attachment",),
        None,
    ),
    Kind("Salesforce task", "sf", "crm.create_task", _TASK, ("create_task",), "salesforce"),
    Kind(
        "Salesforce opportunity + task",
        "sf",
        "crm.create_opportunity",
        _OPPORTUNITY,
        ("create_opportunity", "create_follow_up_task"),
        "salesforce",
    ),
    Kind(
        "Salesforce opportunity, follow-up refused (undone)",
        "sf",
        "crm.create_opportunity",
        {
            **_OPPORTUNITY,
            "follow_up_task": {"subject": f"Send the quote {BLOCKED}", "due_date": "2026-12-05"},
        },
        ("create_opportunity", "create_follow_up_task"),
        "salesforce",
        fails=True,
    ),
    Kind(
        "Salesforce opportunity, follow-up refused once (undone)",
        "sf",
        "crm.create_opportunity",
        _OPPORTUNITY,
        ("create_opportunity", "create_follow_up_task"),
        "salesforce",
        fails=True,
        refused_once="create_follow_up_task",
    ),
    Kind(
        "Salesforce stage update",
        "sf",
        "crm.update_field",
        {
            "object": "Opportunity",
            "record_id": SF_OPPORTUNITY,
            "field": "StageName",
            "value": "Negotiation/Review",
        },
        (),
        "salesforce",
    ),
    Kind(
        "HubSpot task",
        "hs",
        "crm.create_task",
        {"subject": "Book the pricing call", "priority": "Normal"},
        ("create_task",),
        "hubspot",
    ),
    Kind(
        "HubSpot deal stage update",
        "hs",
        "crm.update_field",
        {
            "object": "Opportunity",
            "record_id": HS_DEAL,
            "field": "dealstage",
            "value": "decisionmakerboughtin",
        },
        (),
        "hubspot",
    ),
    Kind(
        "Google Calendar draft",
        "sf",
        "calendar.draft_meeting",
        {
            "title": "Renewal pricing review",
            "start": "2026-12-03T16:00:00+01:00",
            "end": "2026-12-03T16:30:00+01:00",
            "organizer": "jordan@acme.example",
            "attendees": ["cfo@customer.example"],
        },
        ("draft_meeting",),
        "google_calendar",
    ),
)


@dataclass
class ScorecardConfig:
    """How big a run is. Defaults are the CI size; the documented run uses 1,000 intents."""

    intents: int = 40
    crashes: int = 10
    executors: int = 2
    faults: int | None = None  # provider faults injected (default: intents // 5)
    switches: int | None = None  # kill-switch flips (default: 2 + intents // 100)
    duplicates: int | None = None  # intents delivered 5 times at once (default: intents // 20 + 1)
    drops: int | None = None  # database connections dropped inside a transaction (default: intents // 10)
    races: int | None = None  # intents run by two executors at once, two flow runs (default: intents // 20)
    expiring: float = 0.08  # share of approvals that expire 2–12 s after delivery
    seed: int = 0
    time_limit: float = 1800.0
    data_dir: Path | None = None


@dataclass
class Planned:
    """One intent of the run, and what happens to it."""

    intent_id: str
    kind: Kind
    tenant_id: str
    expires_at_epoch: int
    kill_at: KillPoint | None = None
    host_lost: bool = False  # nobody reports the crash to Prefect (only the lease heartbeat tells)
    drop_in: DropIn | None = None  # its executor's database connection drops inside this transaction
    dropped: list[str] = field(default_factory=list)  # where it did (the executor's answer)
    races: bool = False  # a second flow run of it (not the intake's) is given to another executor at once
    deliveries: int = 1
    flow_run_ids: set[str] = field(default_factory=set)
    crashed_at: float | None = None
    settled_at: float | None = None

    @property
    def recovery(self) -> float | None:
        """Seconds from the crash to the intent being settled (``None`` unless both happened)."""
        if self.crashed_at is None or self.settled_at is None:
            return None
        return self.settled_at - self.crashed_at


def settled(status: str, owed: bool, flagged: bool) -> bool:
    """Terminal with no undo owed, or flagged for a person: nothing more happens without one."""
    return (status in TERMINAL and not owed) or flagged


@dataclass
class Scorecard:
    """What a run found. ``ok`` is True only when every must-be-zero count is zero."""

    started: str
    machine: str
    database: str
    seconds: float
    intents: int
    deliveries: int
    by_kind: dict[str, int]
    statuses: dict[str, int]
    crashes: dict[str, int]
    crashes_host_lost: int
    crashes_worker_noticed: int
    faults_injected: dict[str, int]
    faults_consumed: int
    races: int  # intents given to two executors at once (two flow runs)
    #: A raced intent with two attempts under way at once (a second started before the first ended):
    #: the claim let both in. A second attempt AFTER the first ended FAILED is a rerun, as a second run
    #: of a failed execution is meant to be (the Prefect UI's retry); those are counted, not faulted.
    races_overlapping: list[str]
    races_rerun: int
    #: Database connections dropped inside a transaction, by transaction, and how those intents ended.
    connection_drops: dict[str, int]
    connection_drop_statuses: dict[str, int]
    switch_flips: int
    flow_runs_per_intent_max: int
    executor_errors: list[str]
    #: The reconciler's failed passes and takeovers (it logs them and goes on), and an early exit.
    reconciler_problems: list[str]
    provider_duplicates: list[str]
    succeeded_without_effect: list[str]
    lost_intents: list[str]
    ambiguous_reconciled: int
    flagged_for_a_person: int
    calls_after_expiry: list[str]
    calls_after_kill_switch: list[str]
    outcome_signal_mismatches: list[str]
    ledger_chains: int
    ledger_ok: bool
    recovery_p50: float | None
    recovery_p99: float | None
    recovery_max: float | None
    takeover_p50: float | None
    takeover_p99: float | None
    late_commit_seconds: float
    recovery_by_mode: dict[str, dict[str, float]]
    recovery_by_point: dict[str, dict[str, float]]

    @property
    def ok(self) -> bool:
        """Zero duplicates, lost intents, late calls and mismatches, a verifying ledger, every crash settled."""
        return (
            not self.provider_duplicates
            and not self.succeeded_without_effect
            and not self.lost_intents
            and not self.calls_after_expiry
            and not self.calls_after_kill_switch
            and not self.outcome_signal_mismatches
            and not self.races_overlapping
            and self.flow_runs_per_intent_max <= 1
            and self.ledger_ok
        )


# -- set-up -----------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _prefect_server(data: Path, emit: Callable[[str], None]) -> Iterator[str]:
    """The Prefect API to use: ``PREFECT_API_URL`` if set, else a server of our own on loopback
    (started, watched and stopped as ``fulfill up`` does it)."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    from surfaces.up import PREFECT_SERVER_DEFAULTS, Stack

    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **PREFECT_SERVER_DEFAULTS,
        **os.environ,
        "PREFECT_HOME": str(data / "prefect"),
        "DO_NOT_TRACK": "1",
    }
    stack = Stack(prefect_url=url, api_url="", env=env)
    try:
        stack.start_prefect_server(port, data, timeout=180)
        emit(f"Prefect server at {url}")
        yield url
    finally:
        stack.stop()


def _signed(planned: Planned, seed: str, key_id: str, now: float) -> dict[str, Any]:
    intent = {
        "schema_version": "action_intent.v1",
        "action_intent_id": planned.intent_id,
        "tenant_id": planned.tenant_id,
        "account_id": SF_ACCOUNT if planned.kind.tenant == "sf" else HS_COMPANY,
        "decision_id": f"dec_{planned.intent_id}",
        "action_type": planned.kind.action_type,
        "parameters": json.loads(json.dumps(planned.kind.parameters)),
        "approval": {
            "approval_id": f"apr_{planned.intent_id}",
            "approved_by": "jordan@acme.example",
            "approved_at": datetime.fromtimestamp(now - 5, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "edited": False,
            "key_id": key_id,
        },
        "created_at": datetime.fromtimestamp(now - 10, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "expires_at_epoch": planned.expires_at_epoch,
    }
    return sign_intent(intent, key_id=key_id, seed_b64url=seed)


def _plan(config: ScorecardConfig, run: str, tenants: dict[str, str]) -> list[Planned]:
    rng = random.Random(config.seed)
    now = time.time()
    planned = []
    for n in range(config.intents):
        kind = KINDS[n % len(KINDS)]
        expires = now + 3600 * 24
        planned.append(Planned(f"ai_sc_{run}_{n:05d}", kind, tenants[kind.tenant], int(expires)))
    rng.shuffle(planned)
    for item in rng.sample(planned, min(len(planned), int(config.intents * config.expiring))):
        item.expires_at_epoch = -1  # set at delivery: 2–12 s after it
    crash_candidates = [p for p in planned if p.expires_at_epoch > 0]
    rng.shuffle(crash_candidates)
    counters: Counter[str] = Counter()
    for index, item in enumerate(crash_candidates[: config.crashes]):
        points = item.kind.points()
        point = min(points, key=lambda p: (counters[p], rng.random()))  # spread over every point
        counters[point] += 1
        item.kill_at = point
        item.host_lost = index % 2 == 1
    drops = config.drops if config.drops is not None else config.intents // 10
    races = config.races if config.races is not None else config.intents // 20
    calm = [p for p in crash_candidates if p.kill_at is None]
    for index, item in enumerate(calm[:drops]):
        item.drop_in = list(DropIn)[index % len(DropIn)]
    for item in calm[drops : drops + races]:
        item.races = True
    duplicates = config.duplicates if config.duplicates is not None else config.intents // 20 + 1
    for item in rng.sample(planned, min(len(planned), duplicates)):
        item.deliveries = 5
    return planned


def _markers(planned: Planned) -> list[str]:
    """Strings only this intent's provider writes carry (in the path or the body)."""
    keys = [idempotency_key(planned.intent_id, step, g) for step in planned.kind.creates for g in GENERATIONS]
    if planned.kind.provider == "salesforce":
        return [external_id_for(k) for k in keys] or [planned.intent_id]
    if planned.kind.provider == "google_calendar":
        return [event_id_for(k) for k in keys]
    return [planned.intent_id]


# -- the run ----------------------------------------------------------------------------------------
class _Executors:
    """K executor processes fed from one queue; a dead one is replaced, its crash time recorded.

    Executors are forked from a fork server that imported the engine once (``PRELOAD``), so replacing a
    killed one costs milliseconds, like a pool of warm workers; each still is its own OS process, killed
    with SIGKILL, sharing nothing with the others but the database, Prefect and the providers.
    """

    def __init__(self, count: int, on_crash: Callable[[Planned, str], None]) -> None:
        self.queue: queue.Queue[tuple[Planned, str] | None] = queue.Queue()
        self.on_crash = on_crash
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)
        self.errors: list[str] = []  # a flow run the executor could not run (it reported, did not die)
        self.lock = threading.Lock()
        self.processes: list[BaseProcess] = []
        self.threads = [_thread(self._slot) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def _spawn(self) -> tuple[BaseProcess, Connection]:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(target=serve, args=(theirs, dict(os.environ)), daemon=True)
        process.start()
        theirs.close()
        with self.lock:
            self.processes.append(process)
        ours.recv()  # {"ready": pid}
        return process, ours

    def _slot(self) -> None:
        child: tuple[BaseProcess, Connection] | None = None
        while (item := self.queue.get()) is not None:
            planned, flow_run_id = item
            if child is None:
                child = self._spawn()
            process, conn = child
            line = {
                "flow_run_id": flow_run_id,
                "action_intent_id": planned.intent_id,
                "kill_at": planned.kill_at,
                "drop_in": planned.drop_in,
            }
            try:
                conn.send(line)
                answer: dict[str, Any] | None = conn.recv()
            except (EOFError, OSError):
                answer = None
            if answer is not None and "error" in answer:
                self.errors.append(f"{planned.intent_id}: {answer['error']}")
            if answer is not None:
                planned.dropped += answer.get("dropped", [])
            if answer is None:
                process.join()
                if process.exitcode == -signal.SIGKILL:
                    planned.crashed_at = time.time()
                    self.on_crash(planned, flow_run_id)
                child = None
        if child is not None:
            child[1].send(None)
            child[0].join(timeout=60)

    def close(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join()

    def kill_all(self) -> None:
        with self.lock:
            for process in self.processes:
                if process.is_alive():
                    process.kill()


def _mark_crashed(flow_run_id: str) -> None:
    """What Prefect's process worker does when its flow-run process dies: the run becomes Crashed."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(
            uuid.UUID(flow_run_id), Crashed(message="The flow-run process was killed (SIGKILL)."), force=True
        )


class _FaultStorm:
    """Provider faults, one at a time, each consumed by the next matching request at that provider."""

    def __init__(self, sandbox: Sandbox, rng: random.Random) -> None:
        self.sandbox = sandbox
        self.rng = rng
        self.injected: Counter[str] = Counter()
        self.menu: list[tuple[str, str, Callable[[], Fault]]] = []
        for provider, write in (
            ("salesforce", r"/sobjects/"),
            ("hubspot", r"/crm/v3/objects/"),
            ("google_calendar", r"/calendars/"),
        ):
            self.menu += [
                (
                    "503",
                    provider,
                    partial(Fault, "status", path=write, status=503, body={"error": "unavailable"}),
                ),
                (
                    "429 + Retry-After",
                    provider,
                    partial(
                        Fault,
                        "status",
                        path=write,
                        status=429,
                        headers={"Retry-After": "1"},
                        body={"error": "slow"},
                    ),
                ),
                ("timeout", provider, partial(Fault, "timeout", path=write, delay=0.2)),
                ("answer lost after commit", provider, partial(Fault, "drop", path=write)),
                ("slow token endpoint", provider, partial(Fault, "latency", path=r"token", delay=1.5)),
            ]

    def inject_one(self) -> None:
        name, provider, make = self.rng.choice(self.menu)
        self.sandbox.emulators()[provider].inject(make())
        self.injected[name] += 1


def _thread(target: Callable[..., Any], *args: Any) -> threading.Thread:
    """A daemon thread that runs in a copy of this thread's context (Prefect's settings live there)."""
    context = contextvars.copy_context()
    return threading.Thread(target=context.run, args=(target, *args), daemon=True)


def run_scorecard(config: ScorecardConfig, emit: Callable[[str], None] = print) -> Scorecard:
    """One scorecard run (see the module docstring)."""
    data = config.data_dir or Path(tempfile.mkdtemp(prefix="fulfill-scorecard-"))
    data.mkdir(parents=True, exist_ok=True)
    from surfaces.demo import DEMO_KEY_ID, demo_keys

    keys, seed = demo_keys(data)
    os.environ.setdefault("FULFILL_DATA_DIR", str(data))
    os.environ.setdefault("FULFILL_DATABASE_URL", f"sqlite:///{data / 'fulfill.db'}")
    os.environ["FULFILL_APPROVAL_KEYS"] = str(keys)
    os.environ["FULFILL_WEBHOOK_SECRETS"] = WEBHOOK_SECRET
    os.environ["FULFILL_ALLOW_LOOPBACK_PROVIDERS"] = "1"
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(data / "prefect-results"))
    # How long a provider may still commit a request whose answer was lost: the emulators commit within
    # 1.5 s (the longest hold injected here), so 5 s is a safe window; production keeps its 30 s default.
    os.environ.setdefault("FULFILL_LATE_COMMIT_SECONDS", str(LATE_COMMIT_SECONDS))
    from prefect.settings import temporary_settings

    from fulfill.db import upgrade_database
    from fulfill.settings import reload_settings

    reload_settings()
    upgrade_database()
    with _prefect_server(data, emit) as api_url, temporary_settings(updates={"api.url": api_url}):
        os.environ["PREFECT_API_URL"] = api_url
        return _run(config, data, api_url, DEMO_KEY_ID, seed, emit)


def _run(
    config: ScorecardConfig, data: Path, api_url: str, key_id: str, seed: str, emit: Callable[[str], None]
) -> Scorecard:
    from deployments.launch import launch_deployment_run
    from flows.execute_intent import execute_intent
    from surfaces.intake import ApprovalIntake
    from surfaces.service import ExecutionService

    rng = random.Random(config.seed)
    run = uuid.uuid4().hex[:6]
    started, t0 = datetime.now(tz=UTC), time.monotonic()
    sandbox = start_sandbox()
    sandbox.salesforce.add_validation_rule(
        "Task", "Subject", BLOCKED, "Tasks on Prospecting deals are refused."
    )
    tenants = {"sf": f"sc-{run}-sf", "hs": f"sc-{run}-hs"}
    sandbox.configure_tenant(tenants["sf"], crm="salesforce", prefix=f"sc-{run}", actor="scorecard")
    sandbox.configure_tenant(tenants["hs"], crm="hubspot", prefix=f"sc-{run}", actor="scorecard")
    deployment = execute_intent.to_deployment(name="execute-intent")
    assert not inspect.isawaitable(deployment)
    deployment.apply()
    planned = _plan(config, run, tenants)
    by_id = {p.intent_id: p for p in planned}
    log_path = data / f"requests-{run}.jsonl"
    env = {
        **os.environ,
        "FULFILL_SCORECARD_LOG": str(log_path),
        "FULFILL_SCORECARD_PROVIDERS": json.dumps(list(sandbox.urls.values())),
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]
        ),
    }
    service = ExecutionService()
    switch_windows: list[tuple[str, str, float, float]] = []
    stop = threading.Event()

    def on_crash(item: Planned, flow_run_id: str) -> None:
        if not item.host_lost:
            _mark_crashed(flow_run_id)

    reconciler = subprocess.Popen(
        [sys.executable, "-m", "surfaces.scorecard_executor", "--reconcile", str(config.time_limit)],
        env=env,
        stdout=(data / "reconciler.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    os.environ.update(
        FULFILL_SCORECARD_LOG=env["FULFILL_SCORECARD_LOG"],
        FULFILL_SCORECARD_PROVIDERS=env["FULFILL_SCORECARD_PROVIDERS"],
    )
    executors = _Executors(config.executors, on_crash)
    fault_count = config.faults if config.faults is not None else config.intents // 5
    switches = config.switches if config.switches is not None else 2 + config.intents // 100
    storm = _FaultStorm(sandbox, random.Random(config.seed + 1))
    flips: list[threading.Thread] = []

    def flip(scope: str, key: str) -> None:
        service.set_kill_switch(scope, key, enabled=False, reason="scorecard", actor="scorecard")
        engaged = time.time()
        stop.wait(1.5)
        released = time.time()
        service.set_kill_switch(scope, key, enabled=True, reason="scorecard", actor="scorecard")
        switch_windows.append((scope, key, engaged, released))

    scopes = [("tenant", tenants["hs"]), ("action_type", "crm.create_task"), ("tenant", tenants["sf"])]
    crashed = lambda: [p for p in planned if p.crashed_at is not None]  # noqa: E731
    monitor = _thread(_watch_settled, crashed, lambda _: stop.is_set(), config.time_limit)
    monitor.start()
    intake = ApprovalIntake()
    deliveries = 0
    try:
        emit(f"delivering {len(planned)} approvals to {config.executors} executors …")
        for n, item in enumerate(planned, start=1):
            if time.monotonic() - t0 > config.time_limit:
                break
            # Faults and kill switches are spread evenly over the run, at random moments between deliveries.
            if fault_count and n % max(1, len(planned) // fault_count) == 0:
                storm.inject_one()
            if (
                switches
                and n % max(1, len(planned) // switches) == 0
                and not any(f.is_alive() for f in flips)
            ):
                flips.append(_thread(flip, *scopes[len(flips) % len(scopes)]))
                flips[-1].start()
            now = time.time()
            if item.expires_at_epoch < 0:
                item.expires_at_epoch = int(now + rng.uniform(2, 12))
            body = json.dumps(
                {
                    "type": "action_intent.approved",
                    "timestamp": "2026-12-01T00:00:00Z",
                    "data": _signed(item, seed, key_id, now),
                }
            ).encode()
            answers = _deliver(intake, body, f"msg_{item.intent_id}", item.deliveries)
            deliveries += item.deliveries
            for answer in answers:
                if answer.get("flow_run_id"):
                    item.flow_run_ids.add(str(answer["flow_run_id"]))
            if item.kill_at == KillPoint.DURING_CALL:
                _hold_write(sandbox, item)
            if item.kind.refused_once is not None:
                _refuse_once(sandbox, item, item.kind.refused_once)
                storm.injected["400 the first time only"] += 1
            if len(item.flow_run_ids) == 1 and answers[0].get("status") == "PENDING":
                runs = [next(iter(item.flow_run_ids))]
                if item.races:  # e.g. an operator's run of it while the intake's runs: both at once
                    runs.append(
                        launch_deployment_run(
                            item.intent_id,
                            tenant_id=item.tenant_id,
                            action_type=item.kind.action_type,
                            idempotency_key=f"{item.intent_id}:race",
                        )
                    )
                for run_id in runs:
                    executors.queue.put((item, run_id))
            while executors.queue.qsize() > config.executors * 2:
                time.sleep(0.05)
        executors.close()
        stop.set()
        monitor.join()
        emit("waiting for the reconciler to settle every crash …")
        _watch_settled(lambda: planned, lambda settled: settled, config.time_limit - (time.monotonic() - t0))
    finally:
        stop.set()
        executors.kill_all()
        exited = reconciler.poll()
        os.killpg(reconciler.pid, signal.SIGKILL)
        reconciler.wait()
        for thread in flips:
            thread.join(timeout=10)
        for scope, key in (
            ("tenant", tenants["hs"]),
            ("tenant", tenants["sf"]),
            ("action_type", "crm.create_task"),
        ):
            service.set_kill_switch(scope, key, enabled=True, reason="scorecard ended", actor="scorecard")
    try:
        return _verdict(
            config,
            started,
            time.monotonic() - t0,
            planned,
            by_id,
            sandbox,
            service,
            tenants,
            log_path,
            switch_windows,
            storm.injected,
            deliveries,
            executors.errors,
            _reconciler_problems(data / "reconciler.log", exited),
        )
    finally:
        sandbox.shutdown()


def _deliver(intake: Any, body: bytes, message_id: str, times: int) -> list[dict[str, Any]]:
    """POST the same signed delivery ``times`` times at once (the intake's own code path)."""
    from standardwebhooks.webhooks import Webhook

    now = datetime.now(tz=UTC)
    headers = {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(WEBHOOK_SECRET).sign(message_id, now, body.decode()),
    }
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()

    def one() -> None:
        answer = intake.receive(body, headers)
        with lock:
            answers.append({"code": answer.status_code, **answer.body})

    threads = [_thread(one) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def _hold_write(sandbox: Sandbox, item: Planned) -> None:
    """Make the provider take 1.5 s over this intent's first write, so its executor dies mid-call."""
    assert item.kind.provider is not None
    pattern = "|".join(re.escape(m) for m in _markers(item))
    sandbox.emulators()[item.kind.provider].inject(Fault("latency", contains=pattern, delay=1.5))


def _refuse_once(sandbox: Sandbox, item: Planned, step: str) -> None:
    """Make Salesforce refuse this intent's ``step`` write (400, a validation rule) the first time only."""
    marker = external_id_for(idempotency_key(item.intent_id, step, 0))
    refusal = [{"message": "Not now.", "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "fields": []}]
    sandbox.salesforce.inject(
        Fault("status", method="PATCH", contains=re.escape(marker), status=400, body=refusal)
    )


def _watch_settled(pick: Callable[[], list[Planned]], enough: Callable[[bool], bool], budget: float) -> None:
    """Poll the intents ``pick`` returns until ``enough(all settled)``, recording when each settled.

    Settled: terminal with no undo owed, or flagged for a person. Polled every 0.25 s, so a recovery
    time is measured to about that.
    """
    from fulfill.db import get_engine, transaction
    from fulfill.tables import Execution

    deadline = time.monotonic() + max(budget, 30)
    while time.monotonic() < deadline:
        open_items = [p for p in pick() if p.settled_at is None]
        if open_items:
            by_id = {p.intent_id: p for p in open_items}
            with transaction(get_engine()) as session:
                found = session.exec(
                    select(
                        Execution.action_intent_id,
                        Execution.status,
                        Execution.compensation_pending,
                        Execution.needs_human,
                    ).where(col(Execution.action_intent_id).in_(list(by_id)))
                ).all()
            now = time.time()
            for intent_id, status, owed, flagged in found:
                if settled(status, owed, flagged):
                    by_id[intent_id].settled_at = now
        if enough(all(p.settled_at is not None for p in pick())):
            return
        time.sleep(0.25)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


def _effects(sandbox: Sandbox, planned: list[Planned]) -> dict[str, list[tuple[str, int, str, bool]]]:
    """intent → (step, generation, object id, live) for every object its create steps left anywhere."""
    from fulfill.db import get_engine, transaction
    from fulfill.tables import InternalAttachment, InternalNote, InternalTask

    owners: dict[str, tuple[str, str, int]] = {}
    for item in planned:
        for step in item.kind.creates:
            for g in GENERATIONS:
                key = idempotency_key(item.intent_id, step, g)
                owners[key] = (item.intent_id, step, g)
                owners[external_id_for(key)] = (item.intent_id, step, g)
                owners[event_id_for(key)] = (item.intent_id, step, g)
    found: dict[str, list[tuple[str, int, str, bool]]] = {}

    def add(marker: str | None, object_id: str, live: bool) -> None:
        owner = owners.get(marker or "")
        if owner is not None:
            found.setdefault(owner[0], []).append((owner[1], owner[2], object_id, live))

    sf = sandbox.salesforce
    for record_id in list(sf.records):
        record = sf.record(record_id) or {}
        add(record.get(sf.external_id_field), record_id, not record.get("IsDeleted"))
    hs = sandbox.hubspot
    key_property = "fulfill_intent_key"
    for kind, objects in hs.objects.items():
        for object_id, obj in objects.items():
            add(
                (obj.get("properties") or {}).get(key_property),
                f"{kind}/{object_id}",
                not obj.get("archived"),
            )
    for (calendar, event_id), event in sandbox.google_calendar.events.items():
        add(event_id, f"{calendar}/{event_id}", event.get("status") != "cancelled")
    with transaction(get_engine()) as session:
        for table in (InternalTask, InternalNote):
            for row in session.exec(select(table).where(col(table.idempotency_key).in_(list(owners)))):
                add(
                    row.idempotency_key,
                    f"{table.__name__}/{getattr(row, 'id', '')}",
                    getattr(row, "voided_at", None) is None,
                )
        for attachment in session.exec(
            select(InternalAttachment).where(col(InternalAttachment.idempotency_key).in_(list(owners)))
        ):
            add(
                attachment.idempotency_key,
                f"InternalAttachment/{attachment.id}",
                getattr(attachment, "voided_at", None) is None,
            )
    return found


def _takeover_seconds(crashed: list[Planned]) -> list[float]:
    """Crash → the reconciler's claim of the execution (its ``EXECUTION_STARTED`` taking the lease over),
    for the crashed intents that needed one (a crash before the claim needs a plain first run)."""
    from fulfill.db import get_engine, transaction
    from fulfill.tables import LedgerEntry

    by_id = {p.intent_id: p for p in crashed}
    seconds = []
    with transaction(get_engine()) as session:
        rows = session.exec(
            select(LedgerEntry.action_intent_id, LedgerEntry.at, LedgerEntry.details).where(
                col(LedgerEntry.action_intent_id).in_(list(by_id)),
                LedgerEntry.event_type == "EXECUTION_STARTED",
            )
        ).all()
    firsts: dict[str, float] = {}
    for intent_id, at, details in rows:
        item = by_id[str(intent_id)]
        when = datetime.fromisoformat(str(at).replace("Z", "+00:00")).timestamp()
        if item.crashed_at is not None and when >= item.crashed_at and details.get("took_over_expired_lease"):
            firsts[item.intent_id] = min(firsts.get(item.intent_id, when), when)
    for intent_id, when in firsts.items():
        crashed_at = by_id[intent_id].crashed_at
        assert crashed_at is not None
        seconds.append(when - crashed_at)
    return seconds


def _verdict(
    config: ScorecardConfig,
    started: datetime,
    seconds: float,
    planned: list[Planned],
    by_id: dict[str, Planned],
    sandbox: Sandbox,
    service: Any,
    tenants: dict[str, str],
    log_path: Path,
    switch_windows: list[tuple[str, str, float, float]],
    faults: Counter[str],
    deliveries: int,
    executor_errors: list[str],
    reconciler_problems: list[str],
) -> Scorecard:
    from fulfill import ledger
    from fulfill.db import get_engine, transaction
    from fulfill.executions import FINISH_EVENT, SIGNAL_NAMESPACE
    from fulfill.tables import Execution, Outcome, Signal

    ids = list(by_id)
    with transaction(get_engine()) as session:
        rows = {
            e.action_intent_id: e
            for e in session.exec(select(Execution).where(col(Execution.action_intent_id).in_(ids)))
        }
        outcomes = list(session.exec(select(Outcome).where(col(Outcome.action_intent_id).in_(ids))))
        signals = Counter(
            s.signal_id for s in session.exec(select(Signal).where(col(Signal.action_intent_id).in_(ids)))
        )
    effects = _effects(sandbox, planned)
    duplicates, missing = [], []
    for intent_id, execution in rows.items():
        mine = effects.get(intent_id, [])
        per_key = Counter((step, g) for step, g, _, _ in mine)
        live = Counter(step for step, _, _, alive in mine if alive)
        if any(n > 1 for n in per_key.values()) or any(n > 1 for n in live.values()):
            duplicates.append(f"{intent_id}: {mine}")
        kind = by_id[intent_id].kind
        if execution.status == "SUCCEEDED" and set(live) != set(kind.creates):
            missing.append(f"{intent_id}: SUCCEEDED, objects {mine}")
    lost = [
        _lost(p, rows.get(p.intent_id))
        for p in planned
        if p.intent_id not in rows
        or not settled(
            rows[p.intent_id].status, rows[p.intent_id].compensation_pending, rows[p.intent_id].needs_human
        )
    ]
    mismatches = []
    for outcome in outcomes:
        expected = str(
            uuid.uuid5(SIGNAL_NAMESPACE, f"{outcome.action_intent_id}:{outcome.attempt}:{outcome.status}")
        )
        if signals[expected] != 1:
            mismatches.append(
                f"{outcome.action_intent_id} attempt {outcome.attempt}: {signals[expected]} signals"
            )
    per_attempt = Counter((o.action_intent_id, o.attempt) for o in outcomes)
    mismatches += [f"{i} attempt {a}: {n} outcomes" for (i, a), n in per_attempt.items() if n != 1]
    for intent_id, execution in rows.items():
        if execution.status in TERMINAL and per_attempt[(intent_id, execution.attempt)] != 1:
            mismatches.append(f"{intent_id}: {execution.status} without its outcome")
    calls = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []
    after_expiry, after_switch = [], []
    for call in calls:
        item = by_id.get(call.get("intent") or "")
        if item is None or call["method"] == "GET" or call.get("phase") == "undo":
            continue
        if call["t"] > item.expires_at_epoch:
            after_expiry.append(
                f"{item.intent_id}: {call['method']} {call['path']} {call['t'] - item.expires_at_epoch:.2f} s late"
            )
        for scope, key, engaged, released in switch_windows:
            hit = key == (item.tenant_id if scope == "tenant" else item.kind.action_type)
            if hit and engaged + SWITCH_GRACE_SECONDS < call["t"] < released:
                after_switch.append(f"{item.intent_id}: {call['method']} {call['path']} during {scope} {key}")
    with transaction(get_engine()) as session:
        chains = ledger.verify_chains(session, list(tenants.values()))
    crashed = [p for p in planned if p.crashed_at is not None]
    takeovers = _takeover_seconds(crashed)
    recovery = [r for p in crashed if (r := p.recovery) is not None]
    by_mode: dict[str, dict[str, float]] = {}
    for mode, lost_host in (("worker noticed (run Crashed)", False), ("host lost (lease heartbeat)", True)):
        values = [r for p in crashed if p.host_lost == lost_host and (r := p.recovery) is not None]
        if values:
            by_mode[mode] = {
                "n": len(values),
                "p50": statistics.median(values),
                "p99": _percentile(values, 0.99),
            }
    by_point: dict[str, dict[str, float]] = {}
    for point in KillPoint:
        values = [r for p in crashed if p.kill_at == point and (r := p.recovery) is not None]
        if values:
            by_point[str(point)] = {"n": len(values), "p50": statistics.median(values), "max": max(values)}

    def status(execution: Execution) -> str:
        return f"{execution.status}" + (f" {execution.failure_code}" if execution.failure_code else "")

    statuses = Counter(status(e) for e in rows.values())
    dropped = [p for p in planned if p.dropped]
    raced = [p for p in planned if p.races]
    overlapping, reruns = [], 0
    with transaction(get_engine()) as session:
        for item in raced:
            open_attempt = False  # in ledger order: an attempt starts, then ends with its outcome fact
            for entry in ledger.entries_for_intent(session, item.tenant_id, item.intent_id):
                if entry.event_type == "EXECUTION_STARTED":
                    if open_attempt and not entry.details.get("took_over_expired_lease"):
                        overlapping.append(
                            f"{item.intent_id}: a second attempt started before the first ended"
                        )
                    reruns += entry.details.get("attempt", 1) > 1 and not open_attempt
                    open_attempt = True
                elif entry.event_type in FINISH_EVENT.values():
                    open_attempt = False
    ambiguous = [e for e in rows.values() if e.failure_code == "AMBIGUOUS_OUTCOME" or e.needs_human]
    reconciled = sum(
        1
        for p in crashed
        if p.intent_id in rows and not rows[p.intent_id].needs_human and rows[p.intent_id].status in TERMINAL
    )
    consumed = sum(faults.values()) - sum(len(e._faults) for e in sandbox.emulators().values())
    return Scorecard(
        started=started.strftime("%Y-%m-%d %H:%M UTC"),
        machine=f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
        database=str(get_engine().url.get_backend_name()),
        seconds=round(seconds, 1),
        intents=len(planned),
        deliveries=deliveries,
        by_kind=dict(Counter(p.kind.name for p in planned)),
        statuses=dict(sorted(statuses.items())),
        crashes=dict(sorted(Counter(str(p.kill_at) for p in crashed).items())),
        crashes_host_lost=sum(1 for p in crashed if p.host_lost),
        crashes_worker_noticed=sum(1 for p in crashed if not p.host_lost),
        faults_injected=dict(faults),
        faults_consumed=consumed,
        races=len(raced),
        races_overlapping=overlapping,
        races_rerun=reruns,
        connection_drops=dict(sorted(Counter(point for p in dropped for point in p.dropped).items())),
        connection_drop_statuses=dict(
            sorted(Counter(status(rows[p.intent_id]) for p in dropped if p.intent_id in rows).items())
        ),
        switch_flips=len(switch_windows),
        executor_errors=executor_errors,
        reconciler_problems=reconciler_problems,
        flow_runs_per_intent_max=max((len(p.flow_run_ids) for p in planned), default=0),
        provider_duplicates=duplicates,
        succeeded_without_effect=missing,
        lost_intents=lost,
        ambiguous_reconciled=reconciled,
        flagged_for_a_person=len(ambiguous),
        calls_after_expiry=after_expiry,
        calls_after_kill_switch=after_switch,
        outcome_signal_mismatches=mismatches,
        ledger_chains=len(chains),
        ledger_ok=bool(chains) and all(c.ok for c in chains),
        recovery_p50=statistics.median(recovery) if recovery else None,
        recovery_p99=_percentile(recovery, 0.99) if recovery else None,
        recovery_max=max(recovery) if recovery else None,
        takeover_p50=statistics.median(takeovers) if takeovers else None,
        takeover_p99=_percentile(takeovers, 0.99) if takeovers else None,
        late_commit_seconds=float(os.environ.get("FULFILL_LATE_COMMIT_SECONDS", LATE_COMMIT_SECONDS)),
        recovery_by_mode=by_mode,
        recovery_by_point=by_point,
    )


def _lost(item: Planned, execution: Any) -> str:
    """A lost intent, with what is needed to find out why: its crash, its lease, its runs."""
    if execution is None:
        return f"{item.intent_id} (never registered)"
    crash = (
        f"killed {item.kill_at}, {'host lost' if item.host_lost else 'worker noticed'}"
        if item.crashed_at is not None
        else "not crashed"
    )
    return (
        f"{item.intent_id} ({execution.status}; {crash}; lease {execution.lease_owner} until"
        f" {execution.lease_until}; undo owed {execution.compensation_pending}; runs {sorted(item.flow_run_ids)})"
    )


def _reconciler_problems(log: Path, exited: int | None) -> list[str]:
    """What the reconciler logged as failed, and whether it ended before the run did."""
    problems = [
        line.strip()
        for line in (log.read_text(errors="replace").splitlines() if log.exists() else [])
        if " failed (" in line or "| ERROR" in line or "Traceback" in line
    ]
    if exited is not None:
        problems.append(f"the reconciler exited with code {exited} before the run ended")
    return problems


def rows(card: Scorecard) -> list[tuple[str, str, str]]:
    """(measure, value, must be) — the scorecard as the CLI and the docs show it."""

    def count(items: list[str]) -> str:
        return str(len(items))

    def seconds(value: float | None) -> str:
        return "—" if value is None else f"{value:.1f} s"

    crashes = sum(card.crashes.values())
    return [
        ("intents run (deliveries)", f"{card.intents} ({card.deliveries})", ""),
        ("intents by kind", ", ".join(f"{k}: {n}" for k, n in card.by_kind.items()), ""),
        ("final statuses", ", ".join(f"{k}: {n}" for k, n in card.statuses.items()), ""),
        (
            "crashes injected (SIGKILL)",
            f"{crashes}: " + ", ".join(f"{k} {n}" for k, n in card.crashes.items()),
            "",
        ),
        (
            "… noticed by the worker / host lost",
            f"{card.crashes_worker_noticed} / {card.crashes_host_lost}",
            "",
        ),
        (
            "provider faults injected (consumed)",
            ", ".join(f"{k} {n}" for k, n in sorted(card.faults_injected.items()))
            + f" ({card.faults_consumed})",
            "",
        ),
        ("kill-switch flips", str(card.switch_flips), ""),
        ("intents run by two executors at once (two flow runs)", str(card.races), ""),
        ("… of those, two attempts at once", count(card.races_overlapping), "0"),
        ("… of those, rerun by the second run after the first ended FAILED", str(card.races_rerun), ""),
        (
            "database connections dropped inside a transaction",
            f"{sum(card.connection_drops.values())}: "
            + ", ".join(f"{k} {n}" for k, n in card.connection_drops.items()),
            "",
        ),
        (
            "… how those intents ended",
            ", ".join(f"{k}: {n}" for k, n in card.connection_drop_statuses.items()),
            "",
        ),
        ("flow runs an executor reported as errors (not crashes)", count(card.executor_errors), ""),
        ("reconciler passes or takeovers that failed and were retried", count(card.reconciler_problems), ""),
        (
            "flow runs per intent (max, duplicate deliveries included)",
            str(card.flow_runs_per_intent_max),
            "1",
        ),
        ("provider-side duplicates", count(card.provider_duplicates), "0"),
        ("SUCCEEDED without its object", count(card.succeeded_without_effect), "0"),
        ("lost intents (never terminal, not flagged)", count(card.lost_intents), "0"),
        ("crashed intents settled without a person", str(card.ambiguous_reconciled), ""),
        ("flagged for a person (needs_human)", str(card.flagged_for_a_person), ""),
        ("provider calls after expiry", count(card.calls_after_expiry), "0"),
        ("provider calls after a kill switch", count(card.calls_after_kill_switch), "0"),
        ("outcome / signal mismatches", count(card.outcome_signal_mismatches), "0"),
        (
            "ledger chains verified",
            f"{card.ledger_chains}, {'all verify' if card.ledger_ok else 'BROKEN'}",
            "all",
        ),
        (
            "recovery after a crash p50 / p99 (max)",
            f"{seconds(card.recovery_p50)} / {seconds(card.recovery_p99)} ({seconds(card.recovery_max)})",
            "p99 < 30 s",
        ),
        (
            "… crash → the reconciler took the execution over: p50 / p99",
            f"{seconds(card.takeover_p50)} / {seconds(card.takeover_p99)}",
            "",
        ),
        ("late-commit window (a lost answer is settled after it)", f"{card.late_commit_seconds:.0f} s", ""),
        *[
            (f"… {mode}: p50 / p99 (n)", f"{v['p50']:.1f} s / {v['p99']:.1f} s ({int(v['n'])})", "")
            for mode, v in card.recovery_by_mode.items()
        ],
        *[
            (f"… killed {point}: p50 / max (n)", f"{v['p50']:.1f} s / {v['max']:.1f} s ({int(v['n'])})", "")
            for point, v in card.recovery_by_point.items()
        ],
    ]


def markdown(card: Scorecard, command: str) -> str:
    """A section for docs/reliability.md."""
    lines = [
        f"## Scorecard run of {card.started}",
        "",
        f"`{command}` — {card.machine}; ledger on {card.database}; {card.seconds:.0f} s.",
        "",
        "| measure | value | must be |",
        "|---|---|---|",
        *[f"| {m} | {v} | {b} |" for m, v, b in rows(card)],
        "",
        f"Verdict: **{'pass' if card.ok else 'FAIL'}**.",
        "",
    ]
    return "\n".join(lines)
