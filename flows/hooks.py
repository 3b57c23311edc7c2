"""Flow state hooks: the backstop that records crashes, cancellations and unexpected failures.

Ledger writes that must not be lost happen in the flow's own fenced transactions; a hook that
raises is swallowed by Prefect, so hooks only close what the flow could not: an execution
still EXECUTING under this flow run's lease is finished here (FAILED, needs a human when a
step's outcome is unknown), through SQLModel like every other write.
"""

from __future__ import annotations

import logging
from typing import Any

from fulfill import executions
from fulfill.db import get_engine, transaction
from fulfill.executions import Failure, Lease
from fulfill.states import ExecutionStatus, FailureCode, StepStatus

logger = logging.getLogger("fulfill.hooks")


def record_flow_end(flow: Any, flow_run: Any, state: Any) -> None:
    """on_failure / on_crashed / on_cancellation: close an execution this run left EXECUTING."""
    parameters = flow_run.parameters or {}
    intent = parameters.get("intent") or {}
    intent_id = intent.get("action_intent_id") if isinstance(intent, dict) else None
    intent_id = intent_id or parameters.get("action_intent_id")
    if not isinstance(intent_id, str):
        return
    try:
        with transaction(get_engine()) as session:
            try:
                execution = executions.get(session, None, intent_id)
            except executions.ExecutionNotFound:
                return
            owner = execution.lease_owner or ""
            if not owner.startswith(f"{flow_run.id}/"):
                return
            if execution.compensation_pending:
                # Cancelled (or halted) while undoing: the reconciler finishes the undo, now.
                executions.release_undo(session, intent_id, owner)
                return
            if execution.status != ExecutionStatus.EXECUTING:
                return
            steps = executions.steps_of(session, intent_id, execution.generation)
            unknown = [s.step for s in steps if s.status == StepStatus.CALL_STARTED]
            kind = "cancelled" if state.is_cancelled() else "crashed" if state.is_crashed() else "failed"
            if unknown:
                failure = Failure(
                    FailureCode.AMBIGUOUS_OUTCOME,
                    "The run stopped while a change was in flight; a person will check it "
                    "(a rerun finds and reuses the change if it was made).",
                    needs_human=True,
                )
            else:
                failure = Failure(
                    FailureCode.RETRIES_EXHAUSTED, f"The run {kind} before it finished; it can be rerun."
                )
            lease = Lease(intent_id, execution.tenant_id, owner, execution.attempt, execution.generation)
            executions.finish(
                session,
                lease,
                status=ExecutionStatus.FAILED,
                explanation=failure.message,
                failure=failure,
                refs=[],
            )
    except Exception:  # a hook must never raise (Prefect swallows it anyway); log for operators
        logger.exception("could not record the end of flow run %s for %s", flow_run.id, intent_id)
