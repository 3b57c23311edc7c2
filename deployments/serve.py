"""Serve every fulfill flow from one long-lived process (Prefect ``serve``).

Process start-up dominates per-run latency with a process work pool (PREFECT_NOTES: ≈3 s of
``python -m prefect.engine`` per run); a served runner keeps the interpreter warm. Schedules
match ``prefect.yaml``.
"""

from __future__ import annotations

from typing import Any

from prefect import serve

from flows.execute_intent import execute_intent
from flows.health import connector_health
from flows.maintenance import deliver_signals, expire_sweeper, reconcile


def main() -> None:
    """Register the deployments and poll for runs until interrupted."""
    deployments: list[Any] = [
        execute_intent.to_deployment(name="execute-intent", tags=["fulfill"]),
        reconcile.to_deployment(
            name="reconcile", interval=60, parameters={"watch_seconds": 60}, tags=["fulfill", "maintenance"]
        ),
        expire_sweeper.to_deployment(name="expire-sweeper", interval=300, tags=["fulfill", "maintenance"]),
        deliver_signals.to_deployment(name="deliver-signals", interval=30, tags=["fulfill", "signals"]),
        connector_health.to_deployment(
            name="connector-health", interval=300, tags=["fulfill", "maintenance"]
        ),
    ]
    serve(*deployments)


if __name__ == "__main__":
    main()
