"""A second process asks for a connector step that another process already finished.

Prints ``RESULT <StepResult JSON>`` when Prefect's task cache answered. Its lease is stale on purpose:
if the step's body ran instead of the cache answering, the guard would refuse it (LeaseLost) and the
process would fail.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from prefect import flow

from fulfill.executions import Lease
from fulfill.steps import StepCall, StepResult
from tasks.connector_step import run_step


@flow(name="cache-probe")
def probe(call: StepCall, lease: Lease, cache_key: str) -> StepResult:
    return run_step(call, lease, cache_key=cache_key)


def main() -> None:
    args: dict[str, Any] = json.loads(sys.argv[1])
    result = probe(StepCall.model_validate(args["call"]), Lease(**args["lease"]), args["cache_key"])
    sys.stdout.write("RESULT " + result.model_dump_json() + "\n")


if __name__ == "__main__":
    main()
