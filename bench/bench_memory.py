"""Benchmark P6: resident memory of an executor process and of the API process, beside ``import prefect``.

    ./run fulfill --help >/dev/null   # make sure the environment exists
    .venv/bin/python bench/bench_memory.py [--repeat 5] [--requests 100] [--run-intent] \\
        [--processes python,prefect,executor,api] [--write docs/benchmarks.md]

Goal (issue 13): at most 250 MB (10⁶ bytes) resident per worker.

Every measured process is a fresh interpreter of this environment, started by the bench on a fresh
SQLite database in a temporary directory (``PREFECT_HOME`` there too, ``PREFECT_API_URL`` unset). When
it has done its work it says so and waits; the bench then reads ``VmRSS`` (resident now) and ``VmHWM``
(peak resident) from ``/proc/<pid>/status`` (psutil's RSS where there is no ``/proc``) and ends it.
One process at a time, ``--repeat`` rounds, the kinds taking turns within a round:

- ``python``: a bare interpreter (``python -c pass``, then wait) — the floor.
- ``prefect``: ``python -c "import prefect"`` — the baseline.
- ``executor``: imports what an executor imports — every module of ``flows`` (``execute_intent``,
  ``maintenance``, ``health``, ``hooks``), ``tasks`` and ``connectors``, ``surfaces.service`` (the
  in-process path of ``bench_execute.py``) and the API app (``surfaces.api``) — then admits one signed
  ``internal.create_task`` intent with ``tasks.admit.verify_and_register`` (approval verified,
  execution registered, ledger row appended). Running the flow needs a Prefect server, so by default
  it is not run. ``--run-intent`` runs the intent to SUCCEEDED in-process instead, as
  ``bench_execute.py`` does: Prefect then starts its ephemeral API server as a child process, whose
  memory is reported on its own line (a deployment's workers talk to a shared server instead).
- ``api``: ``python -m uvicorn surfaces.api:create_app --factory`` (one process) on a free loopback
  port, measured after ``--requests`` requests that all must answer 200: ``/healthz``, an intent's
  status, timeline and ledger, an account's executions, ``/controls`` and ``/metrics`` (viewer,
  operator and admin tokens).

Figures are the median and p95 (nearest rank) over the rounds; the goal is "met" when the p95 of
the peak is within it. Memory goals live here, never in timed tests.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from common import free_port, load_note, machine, percentile

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
GOAL_MB = 250.0
MB = 1_000_000
READY = "READY"
LEDGER_SECRET = "fulfill-bench-memory-not-a-secret-0123456789"
TENANT = "bench"
ACCOUNT = "acct-1"  # bench_intent's account


class Kind(StrEnum):
    """The processes the bench measures."""

    PYTHON = "python"
    PREFECT = "prefect"
    EXECUTOR = "executor"
    API = "api"


# --- small helpers (pure) ------------------------------------------------------------------------
def versions() -> str:
    """Versions of the packages that make up most of the footprint (read from their metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("prefect", "sqlalchemy", "sqlmodel", "pydantic", "fastapi", "uvicorn", "httpx"):
        with contextlib.suppress(PackageNotFoundError):
            found.append(f"{name} {version(name)}")
    return ", ".join(found)


# --- reading a process's memory ------------------------------------------------------------------
@dataclass(frozen=True)
class Memory:
    """Resident bytes now and at the peak (``None`` where the platform does not say)."""

    rss: int
    peak: int | None


def memory_of(pid: int) -> Memory:
    """``VmRSS`` and ``VmHWM`` of ``pid`` from ``/proc``; psutil's RSS elsewhere."""
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        fields: dict[str, int] = {}
        for line in status.read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024  # kB
        return Memory(fields["VmRSS"], fields.get("VmHWM"))
    psutil: Any = importlib.import_module("psutil")
    return Memory(int(psutil.Process(pid).memory_info().rss), None)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux: from ``/proc/*/status``; psutil elsewhere)."""
    if not Path("/proc/self/status").exists():
        psutil: Any = importlib.import_module("psutil")
        return [int(p.pid) for p in psutil.Process(pid).children(recursive=True)]
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("PPid:"):
                        parents[int(entry.name)] = int(line.split()[1])
                        break
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


# --- the measured processes (run as children of the bench) --------------------------------------
def _ready(facts: dict[str, Any]) -> None:
    """Tell the bench the work is done, then wait until it has read this process's memory."""
    print(READY, json.dumps(facts), flush=True)
    sys.stdin.read()


def child_executor(seed: str, intent_n: int, run_intent: bool) -> None:
    """What an executor holds: its modules, then one admitted (or, with ``run_intent``, executed) intent."""
    import pkgutil

    sys.path[:0] = [str(ROOT), str(BENCH)]
    modules = ["flows.execute_intent", "surfaces.service", "surfaces.api"]
    for package in ("flows", "tasks", "connectors"):
        path = [str(ROOT / package)]
        modules += [f"{package}.{info.name}" for info in pkgutil.iter_modules(path)]
    modules = list(dict.fromkeys(modules))
    for name in modules:
        importlib.import_module(name)

    from intents import bench_intent

    intent = bench_intent(f"mem{os.getpid()}", intent_n, seed)
    if run_intent:
        from surfaces.service import ExecutionService

        status = ExecutionService().execute_action_intent(intent).status
        if status != "SUCCEEDED":
            raise SystemExit(f"the intent ended {status}")
        outcome = "SUCCEEDED"
    else:
        from tasks.admit import Admitted, verify_and_register

        admission = verify_and_register(intent)
        if not isinstance(admission, Admitted):
            raise SystemExit(f"the intent was refused: {admission}")
        outcome = "admitted"
    _ready({"modules": len(modules), "outcome": outcome})


# --- the bench ----------------------------------------------------------------------------------
@dataclass
class Series:
    """The samples of one kind of process."""

    label: str
    did: str
    rss: list[int] = field(default_factory=list)
    peak: list[int] = field(default_factory=list)

    def add(self, memory: Memory) -> None:
        self.rss.append(memory.rss)
        if memory.peak is not None:
            self.peak.append(memory.peak)


def _env(data: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update(
        PREFECT_HOME=str(data / "prefect-home"),
        PREFECT_LOGGING_LEVEL="WARNING",
        DO_NOT_TRACK="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@contextlib.contextmanager
def started(
    command: list[str], env: dict[str, str], log: Path, *, read_stdout: bool = True
) -> Iterator[subprocess.Popen[str]]:
    """A child process (stdin a pipe it may wait on, stdout a pipe or ``log``, stderr to ``log``);
    ended on exit."""
    with log.open("a") as err:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE if read_stdout else err,
            stderr=err,
            text=True,
        )
    try:
        yield process
    finally:
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def measure_waiting(
    command: list[str], env: dict[str, str], log: Path
) -> tuple[Memory, dict[str, Any], list[Memory]]:
    """Run ``command`` until it prints READY; its memory, the facts it printed, its descendants' memory."""
    with started(command, env, log) as process:
        assert process.stdout is not None
        while True:
            line = process.stdout.readline()
            if not line:
                process.wait()
                tail = log.read_text(errors="replace")[-2000:]
                raise SystemExit(f"{shlex.join(command[:3])}… exited with {process.returncode}:\n{tail}")
            if line.startswith(READY):
                facts: dict[str, Any] = json.loads(line[len(READY) :].strip() or "{}")
                break
        children = []
        for pid in descendants(process.pid):
            with contextlib.suppress(OSError, KeyError):
                children.append(memory_of(pid))
        return memory_of(process.pid), facts, children


@dataclass(frozen=True)
class ApiFixture:
    """What the API's requests read: one registered intent and a token per role."""

    intent_id: str
    viewer: str
    operator: str
    admin: str


def prepare(data: Path) -> tuple[str, Path]:
    """The bench's environment: approval keys, migrated SQLite database. Returns (seed, keys file)."""
    from fulfill.db import upgrade_database
    from fulfill.settings import reload_settings
    from surfaces.demo import demo_keys

    keys, seed = demo_keys(data)
    os.environ["FULFILL_APPROVAL_KEYS"] = str(keys)
    reload_settings()
    upgrade_database()
    return seed, keys


def api_fixture(seed: str) -> ApiFixture:
    """Register one signed intent (PENDING) and create viewer, operator and admin tokens."""
    from intents import bench_intent

    from fulfill import executions, tokens
    from fulfill.db import get_engine, transaction
    from fulfill.intent import parse_intent
    from fulfill.states import TokenRole

    raw = bench_intent(f"api{uuid.uuid4().hex[:6]}", 0, seed)
    with transaction(get_engine()) as session:
        executions.register(session, raw, parse_intent(raw))

        def token(role: TokenRole, tenant: str | None) -> str:
            return tokens.create(
                session, role=role, tenant_id=tenant, expires_in=timedelta(hours=6), name="bench-memory"
            ).secret

        return ApiFixture(
            str(raw["action_intent_id"]),
            token(TokenRole.VIEWER, TENANT),
            token(TokenRole.OPERATOR, TENANT),
            token(TokenRole.ADMIN, None),
        )


def measure_api(env: dict[str, str], log: Path, fixture: ApiFixture, requests: int) -> Memory:
    """Serve the app under uvicorn (one process), send ``requests`` requests, read its memory."""
    import httpx

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "surfaces.api:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    base = f"http://127.0.0.1:{port}"
    calls = [
        ("/healthz", None),
        (f"/actions/{fixture.intent_id}/status", fixture.viewer),
        (f"/actions/{fixture.intent_id}/timeline", fixture.viewer),
        (f"/accounts/{ACCOUNT}/executions", fixture.viewer),
        ("/controls", fixture.viewer),
        (f"/actions/{fixture.intent_id}/ledger", fixture.operator),
        ("/metrics", fixture.admin),
    ]
    with (
        started(command, env, log, read_stdout=False) as process,
        httpx.Client(base_url=base, timeout=60) as client,
    ):
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise SystemExit(f"uvicorn exited with {process.returncode}:\n{log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"uvicorn did not answer /healthz:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        for n in range(requests):
            path, token = calls[n % len(calls)]
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            answer = client.get(path, headers=headers)
            if answer.status_code != 200:
                raise SystemExit(f"GET {path}: {answer.status_code} {answer.text[:300]}")
        memory = memory_of(process.pid)
        process.terminate()
        return memory


# --- report --------------------------------------------------------------------------------------
def _mb(value: float) -> str:
    return f"{value / MB:,.0f}"


def report(
    series: list[Series], args: argparse.Namespace, loads: tuple[float, float], extra: Series | None
) -> list[str]:
    words = [shlex.quote(w) for w in sys.argv[1:]]
    baseline = next((s for s in series if s.label.startswith("baseline")), None)
    lines = [
        f"## P6 — resident memory per process ({datetime.now(tz=UTC):%Y-%m-%d})",
        "",
        f"`{' '.join(['.venv/bin/python', 'bench/bench_memory.py', *words])}`",
        "",
        f"Machine: {machine()}; {versions()}. {load_note(*loads)}",
        "",
        f"{args.repeat} rounds, one process at a time, each a fresh interpreter on a fresh SQLite database. "
        "MB = 10⁶ bytes; RSS is `VmRSS` once the work is done, peak is `VmHWM`; median and p95 (nearest "
        "rank) over the rounds. The goal is met when the p95 of the peak is within it.",
        "",
        "| process | what it did | RSS median | RSS p95 | peak median | peak p95 | RSS − baseline (median) | goal | |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    rows = [*series, *([extra] if extra else [])]
    for s in rows:
        rss_median = statistics.median(s.rss)
        peak = (_mb(statistics.median(s.peak)), _mb(percentile(s.peak, 0.95))) if s.peak else ("–", "–")
        versus = (
            f"{(rss_median - statistics.median(baseline.rss)) / MB:+,.0f}"
            if baseline is not None and s is not baseline
            else "–"
        )
        goal, verdict = "", ""
        if s.label in ("executor", "API"):
            worst = percentile(s.peak or s.rss, 0.95)
            goal = f"≤ {GOAL_MB:,.0f}"
            verdict = "met" if worst <= GOAL_MB * MB else "**not met**"
        lines.append(
            f"| {s.label} | {s.did} | {_mb(rss_median)} | {_mb(percentile(s.rss, 0.95))} | {peak[0]} | "
            f"{peak[1]} | {versus} | {goal} | {verdict} |"
        )
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="rounds (each kind once per round)")
    parser.add_argument("--requests", type=int, default=100, help="requests to the API before measuring it")
    parser.add_argument(
        "--processes",
        default=",".join(Kind),
        help=f"comma-separated kinds to measure, of {', '.join(Kind)}",
    )
    parser.add_argument(
        "--run-intent",
        action="store_true",
        help="the executor runs its intent to SUCCEEDED (Prefect's ephemeral server starts) instead of admitting it",
    )
    parser.add_argument("--write", type=Path, default=None, help="append the results to this Markdown file")
    parser.add_argument("--child", choices=[Kind.EXECUTOR], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", default="", help=argparse.SUPPRESS)
    parser.add_argument("--intent-n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == Kind.EXECUTOR:
        child_executor(args.seed, args.intent_n, args.run_intent)
        return
    try:
        kinds = [Kind(k.strip()) for k in args.processes.split(",") if k.strip()]
    except ValueError:
        raise SystemExit(f"--processes: each one of {', '.join(Kind)}, not {args.processes!r}") from None
    if args.repeat < 1 or args.requests < 1 or not kinds:
        raise SystemExit("--repeat and --requests must be at least 1, --processes must name a kind")

    load_start = os.getloadavg()[0]
    tmp = tempfile.TemporaryDirectory(prefix="fulfill-bench-memory-")
    data = Path(tmp.name)
    log = data / "children.log"
    os.environ["FULFILL_DATA_DIR"] = str(data)
    os.environ["FULFILL_DATABASE_URL"] = f"sqlite:///{data / 'fulfill.db'}"
    os.environ["FULFILL_LEDGER_KEY"] = LEDGER_SECRET
    for name in ("FULFILL_MIGRATION_DATABASE_URL", "FULFILL_RUNTIME_ROLE"):
        os.environ.pop(name, None)
    sys.path.insert(0, str(ROOT))

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with tmp:
        seed = ""
        fixture = None
        if Kind.EXECUTOR in kinds or Kind.API in kinds:
            seed, _ = prepare(data)
        if Kind.API in kinds:
            fixture = api_fixture(seed)
        env = _env(data)
        python = sys.executable
        executor_did = (
            "ran one internal intent to SUCCEEDED in-process"
            if args.run_intent
            else "imported flows, tasks, connectors, surfaces.service and surfaces.api; admitted one intent"
        )
        series = {
            Kind.PYTHON: Series("bare interpreter", "`python -c pass`"),
            Kind.PREFECT: Series("baseline: `import prefect`", '`python -c "import prefect"`'),
            Kind.EXECUTOR: Series("executor", executor_did),
            Kind.API: Series("API", f"uvicorn, one process, after {args.requests} requests"),
        }
        server = Series("Prefect ephemeral server (child of the executor)", "started by `--run-intent`")
        wait = f"import sys; print({READY!r}, flush=True); sys.stdin.read()"
        for rnd in range(args.repeat):
            for kind in kinds:
                t0 = time.perf_counter()
                if kind == Kind.PYTHON:
                    memory, _, _ = measure_waiting([python, "-c", wait], env, log)
                elif kind == Kind.PREFECT:
                    memory, _, _ = measure_waiting([python, "-c", "import prefect; " + wait], env, log)
                elif kind == Kind.EXECUTOR:
                    command = [
                        python,
                        str(Path(__file__).resolve()),
                        "--child",
                        Kind.EXECUTOR,
                        "--seed",
                        seed,
                        "--intent-n",
                        str(rnd),
                        *(["--run-intent"] if args.run_intent else []),
                    ]
                    memory, facts, children = measure_waiting(command, env, log)
                    if children:  # the ephemeral server (and anything it started), as one figure
                        peaks = [c.peak for c in children]
                        server.add(
                            Memory(
                                sum(c.rss for c in children),
                                None if None in peaks else sum(p or 0 for p in peaks),
                            )
                        )
                    series[kind].did = executor_did + f" ({facts.get('modules')} modules)"
                else:
                    assert fixture is not None
                    memory = measure_api(env, log, fixture, args.requests)
                series[kind].add(memory)
                say(
                    f"round {rnd + 1}/{args.repeat} {kind}: RSS {memory.rss / MB:,.0f} MB"
                    + (f", peak {memory.peak / MB:,.0f} MB" if memory.peak else "")
                    + f" ({time.perf_counter() - t0:.1f} s)"
                )
    lines = report(
        [series[k] for k in Kind if k in kinds],
        args,
        (load_start, os.getloadavg()[0]),
        server if server.rss else None,
    )
    print("\n".join(lines))
    if args.write:
        with args.write.open("a", encoding="utf-8") as out:
            out.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
