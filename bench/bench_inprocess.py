"""P1 — one intent executed in-process, beside a bare Prefect flow doing a comparable write and the write alone.

    .venv/bin/python bench/bench_inprocess.py --runs 30 \
        [--prefect-database-url postgresql+asyncpg://…/bench_prefect] [--database-url postgresql+psycopg://…] \
        [--profile docs/profiles] [--write section.md]

Two parts, each in this one run:

1. **Against a Prefect server** (started here on a free loopback port; on PostgreSQL with
   ``--prefect-database-url``, else on its default SQLite). Interleaved, ``--runs`` times each, after one
   unmeasured warm-up of each:

   * ``fulfill``: ``ExecutionService.execute_action_intent`` of a signed ``internal.create_task`` intent
     (verify and register, then the ``execute-intent`` flow: admit, claim, plan, checkpoint, the step,
     its record, finish; the ledger rows of each) — what the warm worker's executor does per run;
   * ``bare flow``: a Prefect flow with one task that inserts one row (the same columns as the task
     record the step writes) into a table of the same database, in one transaction;
   * ``bare write``: that insert alone, no Prefect.

2. **Embedded default** (Prefect's ephemeral server, SQLite ledger; a child process of its own): the same
   intents back to back and isolated (a 2 s pause before each), in alternating blocks of five after three
   unmeasured ones. The goal: back to back no slower.

``--profile DIR`` also profiles 10 more fulfill intents with pyinstrument (statistical, 1 ms) and writes
``DIR/p1-fulfill.html`` (an interactive flame graph: open it in a browser; not committed, ~5 MB) and
``DIR/p1-fulfill.txt`` (the call tree as text, which the section also shows).
Speed goals live here, never in timed tests.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from common import ensure_database, free_port, load_note, machine, percentile, publish
from intents import bench_intent

EMBEDDED_FLAG = "--embedded-child"
#: Intents profiled with ``--profile`` (after the measured runs).
PROFILED = 10


@contextmanager
def _prefect_server(database_url: str | None, home: Path) -> Iterator[str]:
    """A Prefect server on a free loopback port (its own PREFECT_HOME), started, watched and stopped as
    ``fulfill up`` does it; yields its API URL."""
    from surfaces.up import Stack

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    home.mkdir(parents=True, exist_ok=True)
    stack = Stack(prefect_url=api, api_url="", env=env)
    try:
        stack.start_prefect_server(port, home, timeout=180)
        yield api
    finally:
        stack.stop()


def _prepare(data: Path, database_url: str | None) -> tuple[Any, Callable[[int], dict[str, Any]]]:
    """Migrate the ledger database and return the service and a maker of signed intents."""
    os.environ["FULFILL_DATA_DIR"] = str(data)
    os.environ["FULFILL_DATABASE_URL"] = database_url or f"sqlite:///{data / 'fulfill.db'}"
    from fulfill.db import upgrade_database
    from fulfill.settings import reload_settings
    from surfaces.demo import demo_keys
    from surfaces.service import ExecutionService

    keys, seed = demo_keys(data)
    os.environ["FULFILL_APPROVAL_KEYS"] = str(keys)
    reload_settings()
    upgrade_database()
    run = uuid.uuid4().hex[:6]
    return ExecutionService(), lambda n: bench_intent(run, n, seed)


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def _against_server(args: argparse.Namespace, data: Path) -> dict[str, list[float]]:
    """Part 1: fulfill, the bare flow and the bare write, interleaved, in milliseconds."""
    from bare import bare_flow, create_table, write
    from prefect.settings import temporary_settings

    service, intent = _prepare(data, args.database_url)
    create_table()
    timings: dict[str, list[float]] = {"fulfill": [], "bare flow": [], "bare write": []}
    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        service.execute_action_intent(intent(0))
        bare_flow(f"warm-{uuid.uuid4().hex}")
        for n in range(1, args.runs + 1):
            key = uuid.uuid4().hex
            timings["fulfill"].append(_timed(partial(service.execute_action_intent, intent(n))))
            timings["bare flow"].append(_timed(partial(bare_flow, f"flow-{key}")))
            timings["bare write"].append(_timed(partial(write, f"write-{key}")))
        if args.profile:
            profiled = [intent(10_000 + n) for n in range(PROFILED)]
            _profile(args.profile, lambda: [service.execute_action_intent(raw) for raw in profiled])
    return timings


def _profile(directory: Path, work: Callable[[], object]) -> None:
    from pyinstrument import Profiler

    directory.mkdir(parents=True, exist_ok=True)
    profiler = Profiler(interval=0.001)
    with profiler:
        work()
    (directory / "p1-fulfill.html").write_text(profiler.output_html(), encoding="utf-8")
    (directory / "p1-fulfill.txt").write_text(
        profiler.output_text(unicode=True, show_all=False, color=False), encoding="utf-8"
    )


#: Part 2 alternates blocks of this many intents back to back and as many isolated, so that neither kind
#: has the process's first runs or the quiet after part 1 to itself (all back to back, then all isolated, had
#: measured 170 against 159 ms in one full run and 156 against 156, 152 against 157 in the part alone).
EMBEDDED_BLOCK = 5
#: Unmeasured intents after the ephemeral server's start, before the first block.
EMBEDDED_WARM_UP = 3


def _embedded(runs: int) -> dict[str, list[float]]:
    """Part 2 (in a child process: Prefect's ephemeral server): blocks back to back and isolated, in turn."""
    data = Path(tempfile.mkdtemp(prefix="fulfill-bench-p1e-"))
    os.environ.pop("PREFECT_API_URL", None)
    service, intent = _prepare(data, None)
    numbers = itertools.count()
    for _ in range(EMBEDDED_WARM_UP):  # the first starts the ephemeral server
        service.execute_action_intent(intent(next(numbers)))
    timings: dict[str, list[float]] = {"back to back": [], "isolated": []}
    while len(timings["isolated"]) < runs:
        for kind in timings:
            for _ in range(min(EMBEDDED_BLOCK, runs - len(timings[kind]))):
                if kind == "isolated":
                    time.sleep(2)
                timings[kind].append(_timed(partial(service.execute_action_intent, intent(next(numbers)))))
    return timings


def _row(name: str, values: list[float], baselines: dict[str, list[float]]) -> str:
    median, p95 = statistics.median(values), percentile(values, 0.95)
    ratios = " | ".join(f"{median / statistics.median(base):.2f}" for base in baselines.values())
    return f"| {name} | {median:.1f} | {p95:.1f} | {ratios} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--prefect-database-url", default=None, help="the Prefect server's database (else SQLite)"
    )
    parser.add_argument(
        "--database-url", default=None, help="the ledger database (else SQLite in a temp dir)"
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="write pyinstrument profiles to this directory"
    )
    parser.add_argument("--write", type=Path, default=None, help="write the Markdown section to this file")
    parser.add_argument(EMBEDDED_FLAG, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    os.environ["DO_NOT_TRACK"] = "1"
    if args.embedded_child:
        print(json.dumps(_embedded(args.runs)))
        return

    load_start = os.getloadavg()[0]
    data = Path(tempfile.mkdtemp(prefix="fulfill-bench-p1-"))
    if args.prefect_database_url:
        ensure_database(args.prefect_database_url)  # created when missing (a new machine)
    with _prefect_server(args.prefect_database_url, data / "prefect") as api:
        os.environ["PREFECT_API_URL"] = api
        timings = _against_server(args, data)
    child_env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    child_env.pop("FULFILL_DATABASE_URL", None)
    child_env["PREFECT_HOME"] = str(data / "embedded-home")  # a new ephemeral database, nobody else's
    child_env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = (
        "180"  # it migrates the new database first
    )
    child = subprocess.run(
        [sys.executable, __file__, "--runs", str(args.runs), EMBEDDED_FLAG],
        env=child_env,
        capture_output=True,
        text=True,
    )
    if child.returncode != 0:
        sys.exit(f"the embedded-default run failed (exit {child.returncode}):\n{child.stderr[-3000:]}")
    embedded: dict[str, list[float]] = json.loads(child.stdout.splitlines()[-1])
    load_end = os.getloadavg()[0]

    prefect_db = "PostgreSQL" if (args.prefect_database_url or "").startswith("postgres") else "SQLite"
    ledger_db = "PostgreSQL" if (args.database_url or "").startswith("postgres") else "SQLite"
    baselines = {"bare flow": timings["bare flow"], "bare write": timings["bare write"]}
    fulfill_ratio = statistics.median(timings["fulfill"]) / statistics.median(timings["bare flow"])
    back, isolated = statistics.median(embedded["back to back"]), statistics.median(embedded["isolated"])
    lines = [
        f"## P1 — one intent in-process, beside a bare Prefect flow ({datetime.now(tz=UTC):%Y-%m-%d})",
        "",
        f"`bench/bench_inprocess.py --runs {args.runs}"
        + (" --prefect-database-url postgresql+asyncpg://…" if args.prefect_database_url else "")
        + (" --database-url postgresql+psycopg://…" if args.database_url else "")
        + "`",
        "",
        f"Machine: {machine()}. {load_note(load_start, load_end)}",
        "",
        f"Against a Prefect server on {prefect_db} (ledger on {ledger_db}); {args.runs} of each, interleaved;"
        " milliseconds per run:",
        "",
        "| run | median | p95 | ÷ bare flow | ÷ bare write |",
        "|---|---:|---:|---:|---:|",
        _row("fulfill: one `internal.create_task` intent", timings["fulfill"], baselines),
        _row("bare flow: one task inserting one row", timings["bare flow"], baselines),
        _row("bare write: the insert alone", timings["bare write"], baselines),
        "",
        "On the embedded default (Prefect's ephemeral server, SQLite ledger), milliseconds per intent:",
        "",
        "| intents | median | p95 |",
        "|---|---:|---:|",
        *[
            f"| {name} | {statistics.median(values):.1f} | {percentile(values, 0.95):.1f} |"
            for name, values in embedded.items()
        ],
        "",
        f"Goals (issue 13): fulfill ≤ 1.25 × the bare flow — {fulfill_ratio:.2f}: "
        + ("met" if fulfill_ratio <= 1.25 else "**not met**")
        + f"; back to back no slower than isolated — {back:.0f} ms against {isolated:.0f} ms: "
        + ("met" if back <= isolated * 1.05 else "**not met**")
        + ".",
        "",
    ]
    if args.profile:
        tree = (args.profile / "p1-fulfill.txt").read_text(encoding="utf-8").strip()
        lines += [
            f"Where a fulfill intent's time goes: pyinstrument over {PROFILED} intents after the measured ones"
            " (Prefect's own frames folded; the interactive flame graph is `docs/profiles/p1-fulfill.html`"
            " after a run):",
            "",
            "```text",
            tree,
            "```",
            "",
        ]
    publish(lines, args.write)


if __name__ == "__main__":
    main()
