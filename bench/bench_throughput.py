"""P3 — sustained intents per second on one host, through the running stack, with 1, 2 and 4 executors.

    .venv/bin/python bench/bench_throughput.py --intents 40 --repeats 3 --limits 1,2,4 \
        [--postgres-url postgresql://postgres@127.0.0.1:5432/bench_p3_ledger] [--write section.md] \
        [--flame docs/profiles]
    # PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://… for a PostgreSQL-backed Prefect server

For each ledger database (SQLite; PostgreSQL too with ``--postgres-url``, created if missing) and each
limit, starts the whole stack (``fulfill up``'s ``running_stack``: Prefect server, pools, deployments,
the warm worker with ``--limit`` executors — one flow run each at a time — and the API), warms it with
one approval, then ``--repeats`` times: posts ``--intents`` signed approvals from 8 concurrent clients
and waits until every execution is SUCCEEDED. A repetition's rate is its intents divided by the time
from its first post to its last SUCCEEDED. Each repetition is followed by one of the baseline on the same
stack (``bare.py``: as many runs of a bare Prefect flow — one task inserting one row into the ledger's
database — created through Prefect's API by the same clients, on a warm worker of their own with as many
executors, timed until every row is written): Prefect's own per-run cost on this path. Reports the
median and the p95 (slow side) rates, fulfill's against the bare flow's and against one executor's (the
goal is ≥ 20 intents/s, rising with executors), and the CPU each process used per run of each kind.
With ``--flame``, one more repetition of intents after the SQLite ledger's with the most executors,
not measured, runs under py-spy (``flame.py``): flame graphs of Prefect's server and the warm worker, and
a table of what the server spent its samples on. Speed goals live here, never in timed tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from bare import bare_runs
from bench_intake import SECRET, Deliveries, wait_succeeded
from common import (
    cpu_seconds_by_group,
    ensure_database,
    fresh_prefect_database,
    load_note,
    machine,
    percentile,
    publish,
)
from flame import RATE, shares
from flame import record as record_flames

CLIENTS = 8


#: The processes profiled (``--flame``) and the names of their flame graphs.
FLAMES = {"prefect-server": "p3-prefect-server", "worker-fulfill": "p3-warm-worker"}


#: What a repetition runs: fulfill's intents, then the bare baseline's flow runs.
KINDS = ("fulfill", "bare flow")
Rates = dict[str, list[float]]  # kind → runs per second of each repetition
Cpu = dict[str, dict[str, list[float]]]  # kind → process group → CPU seconds per run of each repetition


def _measure(
    ledger_url: str, limit: int, intents: int, repeats: int, flame: Path | None = None
) -> tuple[Rates, Cpu, dict[str, Path] | str | None]:
    """Rates (runs/s) of ``repeats`` batches of each kind (:data:`KINDS`, alternating) through a fresh stack
    with ``limit`` executors, and the CPU seconds per run each process group (and PostgreSQL) used in each
    batch; with ``flame``, one more batch of intents, not measured, with py-spy recording Prefect's server
    and the warm worker (:data:`FLAMES`) into that directory (the flame graphs, or why there are none)."""
    data = Path(tempfile.mkdtemp(prefix="fulfill-bench-p3-"))
    os.environ["FULFILL_DATA_DIR"] = str(data)
    os.environ["FULFILL_DATABASE_URL"] = ledger_url.replace("{data}", str(data))
    os.environ["FULFILL_WEBHOOK_SECRETS"] = SECRET
    os.environ.pop("PREFECT_API_URL", None)

    from fulfill.settings import reload_settings
    from surfaces.demo import demo_keys
    from surfaces.service import ExecutionService
    from surfaces.up import running_stack

    keys, seed = demo_keys(data)
    os.environ["FULFILL_APPROVAL_KEYS"] = str(keys)
    reload_settings()
    deliveries = Deliveries(seed)
    rates: Rates = {kind: [] for kind in KINDS}
    cpu: Cpu = {kind: {} for kind in KINDS}
    with (
        fresh_prefect_database(data),
        running_stack(
            data, prefect_port=4291, api_port=8098, emit=lambda _: None, worker_limit=limit
        ) as stack,
        bare_runs(stack, limit, data / "logs") as bare,
    ):
        service = ExecutionService()
        wait_succeeded(service, deliveries.post(stack.api_url), time.perf_counter())  # warm-up
        groups = {name: child.pid for name, child in stack.children}
        kinds: dict[str, tuple[Callable[[], str], Callable[[str, float], float]]] = {
            "fulfill": (
                lambda: deliveries.post(stack.api_url),
                lambda intent_id, started: wait_succeeded(service, intent_id, started),
            ),
            "bare flow": (bare.post, bare.wait_written),
        }

        def batch(kind: str) -> float:
            """Post ``intents`` of ``kind`` from the clients; seconds until all are done."""
            post, wait = kinds[kind]
            started = time.perf_counter()
            with ThreadPoolExecutor(CLIENTS) as clients:
                ids = list(clients.map(lambda _: post(), range(intents)))
            for run_id in ids:
                wait(run_id, started)
            return time.perf_counter() - started

        for _ in range(repeats):
            for kind in KINDS:
                before = cpu_seconds_by_group(groups)
                rates[kind].append(intents / batch(kind))
                for name, seconds in cpu_seconds_by_group(groups).items():
                    cpu[kind].setdefault(name, []).append((seconds - before[name]) / intents)
        flames = (
            None
            if flame is None
            else record_flames({FLAMES[n]: groups[n] for n in FLAMES}, flame, lambda: batch("fulfill"))
        )
    return rates, cpu, flames


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--intents", type=int, default=40, help="approvals per repetition")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limits", default="1,2,4", help="executor counts, comma-separated")
    parser.add_argument("--postgres-url", default=None, help="also measure with the ledger on this database")
    parser.add_argument("--write", type=Path, default=None, help="write the Markdown section to this file")
    parser.add_argument(
        "--flame",
        type=Path,
        default=None,
        help="after the SQLite ledger's repetitions with the most executors, one more with py-spy recording"
        " Prefect's server and the warm worker: their flame graphs go into this directory",
    )
    args = parser.parse_args()
    limits = [int(limit) for limit in args.limits.split(",")]
    ledgers = {"SQLite": "sqlite:///{data}/fulfill.db"}
    if args.postgres_url:
        ledgers["PostgreSQL"] = ensure_database(args.postgres_url)

    load_start = os.getloadavg()[0]
    results: dict[tuple[str, int], Rates] = {}
    cpu: dict[tuple[str, int], Cpu] = {}
    flames: dict[str, Path] | str | None = None
    for name, url in ledgers.items():
        for limit in limits:
            flame = args.flame if (name, limit) == ("SQLite", max(limits)) else None
            results[name, limit], cpu[name, limit], flamed = _measure(
                url, limit, args.intents, args.repeats, flame
            )
            if flame is not None:
                flames = flamed
            for kind, measured in results[name, limit].items():
                print(
                    f"{name}, {limit} executors, {kind}: {[round(rate, 2) for rate in measured]}", flush=True
                )
    load_end = os.getloadavg()[0]

    prefect_db = (
        "PostgreSQL"
        if os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL", "").startswith("postgres")
        else "SQLite"
    )
    rows = []
    for (name, limit), rates in results.items():
        (median, slow), (bare, bare_slow) = (_rate(rates[kind]) for kind in KINDS)
        one = statistics.median(results[name, limits[0]]["fulfill"])
        rows.append(
            f"| {name} | {limit} | {median:.2f} | {slow:.2f} | {bare:.2f} | {bare_slow:.2f} | {median / bare:.2f}"
            f" | {median / one:.2f} | " + ("met" if slow >= 20 else "**not met**") + " |"
        )
    lines = [
        f"## P3 — sustained intents/s on one host through the stack ({datetime.now(tz=UTC):%Y-%m-%d})",
        "",
        f"`bench/bench_throughput.py --intents {args.intents} --repeats {args.repeats} --limits {args.limits}"
        + (" --postgres-url postgresql://…" if args.postgres_url else "")
        + (" --flame docs/profiles" if args.flame else "")
        + "`",
        "",
        f"Machine: {machine()}. {load_note(load_start, load_end)}",
        "",
        f"Prefect's own server on {prefect_db}; intents on the warm worker with the given number of executors"
        f" (flow runs at a time); {args.intents} internal intents per repetition from {CLIENTS} concurrent"
        " clients, timed from the first post to the last SUCCEEDED. Each repetition is followed by one of the"
        f" baseline on the same stack: {args.intents} runs of a bare Prefect flow (one task inserting one row"
        " into the ledger's database) created through Prefect's API by as many clients, on a warm worker of"
        " their own (`bench/bare.py`) with as many executors, timed until every row is written.",
        "",
        "| ledger | executors | fulfill intents/s median | p95 (slow side) | bare flow runs/s median | p95"
        f" (slow side) | fulfill ÷ bare flow | fulfill ÷ {limits[0]} executor(s) | goal ≥ 20/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        "CPU seconds per run by process during the repetitions (median; `worker-bare` is the bare flow's warm"
        " worker with its executors; the load generator — this script's 8 posting clients and its polling —"
        " is not counted):",
        "",
        _cpu_table(cpu),
        "",
        *_flame_lines(flames, max(limits), args.intents),
    ]
    publish(lines, args.write)


def _flame_lines(flames: dict[str, Path] | str | None, limit: int, intents: int) -> list[str]:
    """The flame graphs' paragraph and the table of Prefect's server's samples (none without ``--flame``)."""
    if flames is None:
        return []
    if isinstance(flames, str):
        return [f"No flame graphs: {flames}.", ""]
    links = ", ".join(f"[`{path.name}`](profiles/{path.name})" for path in flames.values())
    lines = [
        f"Flame graphs (py-spy, {RATE} samples a second of the threads holding the GIL, subprocesses"
        f" included) of Prefect's server and the warm worker during one more repetition of {intents} intents"
        f" (SQLite ledger, {limit} executors), after the measured ones: {links} (open them in a browser: they"
        " are interactive). py-spy reads the processes without pausing them (`--nonblocking`), so a sample's"
        " innermost frames can be off: the graphs show where the work is, the CPU table above how much.",
        "",
    ]
    total, rows = shares(flames["p3-prefect-server"].with_suffix(".collapsed"))
    if total:
        lines += [
            f"What Prefect's server was doing in those samples ({total:,} samples; one counts under the API route"
            " whose handler it was in, else the background service, else the layer of its innermost frame):",
            "",
            "| what | share of the samples |",
            "|---|---:|",
            *[f"| {what} | {share:.0%} |" for what, share in rows],
            "",
        ]
    return lines


def _rate(rates: list[float]) -> tuple[float, float]:
    """The median rate and the p95 of the slow side (a low rate)."""
    return statistics.median(rates), percentile([-rate for rate in rates], 0.95) * -1


def _cpu_table(cpu: dict[tuple[str, int], Cpu]) -> str:
    processes = sorted({process for kinds in cpu.values() for used in kinds.values() for process in used})
    lines = [
        "| ledger | executors | runs | " + " | ".join(processes) + " | total |",
        "|---|---:|---|" + "---:|" * (len(processes) + 1),
    ]
    for (name, limit), kinds in cpu.items():
        for kind, used in kinds.items():
            medians = [statistics.median(used[process]) if process in used else 0.0 for process in processes]
            lines.append(
                f"| {name} | {limit} | {kind} | "
                + " | ".join(f"{m:.3f}" for m in medians)
                + f" | {sum(medians):.3f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
