"""Benchmark: sequential execute-intent throughput and latency on the embedded defaults.

    ./run fulfill --help >/dev/null   # make sure the environment exists
    .venv/bin/python bench/bench_execute.py --runs 20 [--database-url postgresql+psycopg://…]

Prints the median and p95 wall time per intent (admit → claim → step → finish) once Prefect's
server is up. Speed goals live here, never in timed tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from common import percentile
from intents import bench_intent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="fulfill-bench-"))
    os.environ.setdefault("FULFILL_DATA_DIR", str(data))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    if args.database_url:
        os.environ["FULFILL_DATABASE_URL"] = args.database_url

    from fulfill.db import upgrade_database
    from fulfill.settings import reload_settings
    from surfaces.demo import demo_keys
    from surfaces.service import ExecutionService

    keys, seed = demo_keys(data)
    os.environ["FULFILL_APPROVAL_KEYS"] = str(keys)
    reload_settings()
    upgrade_database()
    service = ExecutionService()
    run = uuid.uuid4().hex[:6]

    def intent(n: int) -> dict[str, object]:
        return bench_intent(run, n, seed)

    started = time.perf_counter()
    service.execute_action_intent(intent(0))  # warm-up: starts the ephemeral server
    print(f"first intent (server start-up included): {time.perf_counter() - started:.2f} s")
    timings = []
    for n in range(1, args.runs + 1):
        t0 = time.perf_counter()
        assert service.execute_action_intent(intent(n)).status == "SUCCEEDED"
        timings.append(time.perf_counter() - t0)
    p95 = percentile(timings, 0.95)
    print(
        f"{args.runs} intents: median {statistics.median(timings) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"{args.runs / sum(timings):.2f} intents/s sequential"
    )


if __name__ == "__main__":
    main()
