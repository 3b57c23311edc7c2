"""``fulfill up``: the whole local stack on the embedded defaults, with one command.

Starts, in order, each as a child process in its own process group, all bound to loopback:

1. a Prefect server (UI and API on ``127.0.0.1:4200``) with API authentication configured: the OSS API
   would otherwise hand block secrets to anyone who can reach it (PREFECT_NOTES);
2. the work pools ``fulfill`` (intents) and ``fulfill-maintenance`` (reconcile, expire-sweeper,
   deliver-signals) and the deployments of ``prefect.yaml`` (``prefect deploy --all``), so pausing the
   intent pool holds intents without stopping signal delivery, reconciliation or expiry;
3. a worker per pool, both the warm worker (``fulfill worker``: runs in processes forked from one that
   imported the engine once), or Prefect's process worker for both with ``--process-worker``;
4. the fulfill API (uvicorn) with the approval webhook, on ``127.0.0.1:8080``.

Ctrl-C (or SIGTERM) stops everything, newest first. Every child gets the same environment: the
fulfill settings (``FULFILL_*``, the settings file in the data directory), ``PREFECT_API_URL`` and the
auth string, and ``FULFILL_HOME`` (the project directory, which the deployments' pull step uses).
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PROJECT = Path(__file__).resolve().parents[1]
INTENT_POOL = "fulfill"
MAINTENANCE_POOL = "fulfill-maintenance"
#: Maintenance runs at a time: a watching reconcile (a minute each, sometimes two overlapping), signal
#: delivery, the expiry sweep and the health check; a backlog after downtime waits its turn.
MAINTENANCE_LIMIT = 4
#: Connections the Prefect server keeps open to a PostgreSQL database (Prefect's default is 5, with 10 more
#: opened and closed as needed): under load the default opened about one new PostgreSQL session per intent,
#: each a backend start, asyncpg's type introspection and new prepared statements; with 20 PostgreSQL spent
#: half the CPU per intent (docs/benchmarks.md). An SQLite-backed server ignores it.
PREFECT_SERVER_POOL_SIZE = 20
#: Task-run events the Prefect server's task-run recorder writes in one transaction, and the longest it
#: waits to fill one (seconds). Prefect's default writes each event alone (three transactions per intent,
#: the task run's Pending, Running and Completed); batched, Prefect's server spent 0.13 instead of 0.14
#: CPU-seconds per intent under load (docs/benchmarks.md), and a task run reaches the UI at most a second
#: after its state. Prefect's own bulk path; a larger batch for the event persister (Prefect's is 20)
#: gained nothing.
PREFECT_TASK_RUN_RECORDER_BATCH = 50
PREFECT_TASK_RUN_RECORDER_FLUSH_SECONDS = 1
#: The Prefect server's settings `fulfill up` gives it unless the environment sets them.
PREFECT_SERVER_DEFAULTS: dict[str, str] = {
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": str(PREFECT_SERVER_POOL_SIZE),
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": str(PREFECT_TASK_RUN_RECORDER_BATCH),
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": str(PREFECT_TASK_RUN_RECORDER_FLUSH_SECONDS),
}


@dataclass
class Stack:
    """The running children and where they answer."""

    prefect_url: str
    api_url: str
    env: dict[str, str]
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], log_dir: Path) -> None:
        """Start a child in its own process group, logging to ``log_dir/name.log``."""
        log = (log_dir / f"{name}.log").open("ab")
        child = subprocess.Popen(
            argv, cwd=PROJECT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.children.append((name, child))

    def start_prefect_server(
        self, port: int, log_dir: Path, *, auth: str | None = None, timeout: float = 120
    ) -> None:
        """Start Prefect's server on loopback ``port`` as the child ``prefect-server``; return once it
        answers ``/health`` (with ``auth``, its ``user:password``, when it requires one)."""
        self.start(
            "prefect-server",
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            log_dir,
        )
        basic = base64.b64encode(auth.encode()).decode() if auth else None
        health = f"http://127.0.0.1:{port}/api/health"
        wait_until(answers(health, basic), "the Prefect server", self, timeout=timeout)

    def stop(self) -> None:
        """SIGTERM every child's process group, newest first; SIGKILL what is left after 20 s."""
        for _, child in reversed(self.children):
            if child.poll() is None:
                _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, child in reversed(self.children):
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child, signal.SIGKILL)
                child.wait()

    def dead(self) -> str | None:
        """The name of a child that exited, if any."""
        return next((name for name, child in self.children if child.poll() is not None), None)


def _signal_group(child: subprocess.Popen[bytes], signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signum)


def wait_until(ready: Callable[[], bool], what: str, stack: Stack, timeout: float = 120) -> None:
    """Poll ``ready`` every 0.5 s; fail at once if a child of ``stack`` exited, or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not ready():
        dead = stack.dead()
        if dead is not None:
            raise RuntimeError(f"{dead} exited while waiting for {what}; see its log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.5)


def answers(url: str, auth: str | None = None) -> Callable[[], bool]:
    """A check that ``url`` answers 200 (with HTTP Basic ``auth`` if given)."""

    def check() -> bool:
        try:
            headers = {"Authorization": f"Basic {auth}"} if auth else {}
            return httpx.get(url, timeout=2, headers=headers).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def _auth_string(data_dir: Path) -> str:
    """The Prefect API's ``user:password`` for this data directory (created once, readable only by you)."""
    path = data_dir / "prefect-api-auth"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(f"fulfill:{secrets.token_urlsafe(24)}\n")
        path.chmod(0o600)
    return path.read_text().strip()


@contextmanager
def running_stack(
    data_dir: Path,
    *,
    prefect_port: int = 4200,
    api_port: int = 8080,
    emit: Callable[[str], None] = print,
    warm: bool = True,
    worker_limit: int = 4,
) -> Iterator[Stack]:
    """Start the stack; yields it running; stops it on exit.

    ``warm``: intents run on the warm worker (``fulfill worker``: executors that imported the engine
    once, a run taken on its Prefect event; ``worker_limit`` flow runs at a time); else on Prefect's process
    worker (an interpreter per run).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    log_dir = data_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    auth = _auth_string(data_dir)
    prefect_url = f"http://127.0.0.1:{prefect_port}/api"
    env = {
        **PREFECT_SERVER_DEFAULTS,
        **os.environ,
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": prefect_url,
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(prefect_port),
        "PREFECT_SERVER_API_AUTH_STRING": auth,
        "PREFECT_API_AUTH_STRING": auth,
        "PREFECT_WORKER_QUERY_SECONDS": os.environ.get("PREFECT_WORKER_QUERY_SECONDS", "2"),
        "FULFILL_HOME": str(PROJECT),
        "FULFILL_DATA_DIR": str(data_dir),
    }
    stack = Stack(prefect_url=prefect_url, api_url=f"http://127.0.0.1:{api_port}", env=env)
    prefect = str(Path(sys.executable).with_name("prefect"))
    _migrate(env)
    try:
        emit("starting the Prefect server…")
        stack.start_prefect_server(prefect_port, log_dir, auth=auth)
        emit("creating the work pools and deploying prefect.yaml…")
        if warm:
            _warm_pools(env)
        else:
            for pool in (INTENT_POOL, MAINTENANCE_POOL):
                _run([prefect, "work-pool", "create", pool, "--type", "process", "--overwrite"], env)
        _run([prefect, "--no-prompt", "deploy", "--all"], env)
        emit("starting the workers and the API…")
        fulfill = str(Path(sys.executable).with_name("fulfill"))
        for pool, limit in ((INTENT_POOL, worker_limit), (MAINTENANCE_POOL, MAINTENANCE_LIMIT)):
            worker = (
                [fulfill, "worker", "--pool", pool, "--limit", str(limit)]
                if warm
                else [prefect, "worker", "start", "--pool", pool]
            )
            stack.start(f"worker-{pool}", worker, log_dir)
        uvicorn = [sys.executable, "-m", "uvicorn", "surfaces.api:create_app", "--factory"]
        stack.start("api", [*uvicorn, "--host", "127.0.0.1", "--port", str(api_port)], log_dir)
        wait_until(answers(f"{stack.api_url}/healthz"), "the fulfill API", stack)
        yield stack
    finally:
        stack.stop()


def _warm_pools(env: dict[str, str]) -> None:
    """Both pools of the warm worker's type (``prefect work-pool create`` knows only Prefect's types).

    Created here, through the stack's Prefect API, not by starting another interpreter. A pool of
    another type (an earlier ``fulfill up --process-worker``) is replaced; ``prefect deploy`` then points
    the deployments at the new one.
    """
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from deployments.worker import ensure_pool

    api = {PREFECT_API_URL: env["PREFECT_API_URL"], PREFECT_API_AUTH_STRING: env["PREFECT_API_AUTH_STRING"]}
    with temporary_settings(api):
        ensure_pool(INTENT_POOL)
        ensure_pool(MAINTENANCE_POOL)


def _migrate(env: dict[str, str]) -> None:
    """The local stack's database is a development one: bring its schema to head (``fulfill db upgrade``)."""
    _run([str(Path(sys.executable).with_name("fulfill")), "db", "upgrade"], env)


def _run(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[1:3])} failed: {(done.stderr or done.stdout)[-2000:]}")
