"""Flow state hooks: the backstop that records crashes, cancellations and unexpected failures.

Ledger writes that must not be lost happen in the flow's own fenced transactions; a hook that
raises is swallowed by Prefect, so hooks only close what the flow could not, through SQLModel
like every other write:

* a run **cancelled** in the Prefect UI/CLI (``on_cancellation``) is a fulfill cancel: the
  execution it held (EXECUTING under its lease, or PENDING and attached to it) becomes CANCELLED
  through the same domain cancel as ``fulfill cancel`` (actor ``prefect-ui``), which marks the
  undo of its finished steps as owed; the run's lease is released at once so the ``reconcile``
  flow undoes them on its next pass instead of waiting for the lease to expire;
* a run that **crashed or failed** unexpectedly leaves its execution FAILED (needs a human when
  a step's outcome is unknown).
"""

from __future__ import annotations

import logging
from typing import Any

from fulfill import executions
from fulfill.db import get_engine, transaction
from fulfill.executions import Failure, Lease
from fulfill.states import ExecutionStatus, FailureCode, StepStatus

logger = logging.getLogger("fulfill.hooks")

UI_CANCEL_ACTOR = "prefect-ui"


def _cancelled(state: Any) -> bool:
    cancelling = getattr(state, "is_cancelling", None)  # Prefect hands over Cancelling or Cancelled
    return bool(state.is_cancelled() or (cancelling is not None and cancelling()))


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
            if _cancelled(state) and _cancel_for_run(session, execution, str(flow_run.id)):
                return
            if not owner.startswith(f"{flow_run.id}/"):
                return
            if execution.compensation_pending:
                # Cancelled (or halted) while undoing: the reconciler finishes the undo, now.
                executions.release_undo(session, intent_id, owner)
                return
            if execution.status != ExecutionStatus.EXECUTING:
                return
            if execution.failure_code is not None:
                # It died undoing a failed attempt: that failure stands; the reconciler finishes the undo.
                executions.fail_mid_undo(session, execution)
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


def _cancel_for_run(session: Any, execution: Any, flow_run_id: str) -> bool:
    """Cancel the execution a cancelled run held, as ``fulfill cancel`` does; True when it did.

    EXECUTING under this run's lease: CANCELLED, undo owed (``compensation_pending``), lease
    released so ``reconcile`` undoes the finished steps (a step in flight is confirmed by lookup
    first). PENDING and attached to this run (cancelled before it claimed): CANCELLED, nothing to
    undo — otherwise ``reconcile`` would pick the orphan up and run what a person just cancelled.
    """
    owner = execution.lease_owner or ""
    if execution.status == ExecutionStatus.EXECUTING and owner.startswith(f"{flow_run_id}/"):
        executions.cancel(session, None, execution.action_intent_id, actor=UI_CANCEL_ACTOR)
        executions.release_undo(session, execution.action_intent_id, owner)
        logger.warning(
            "flow run %s was cancelled: %s CANCELLED, its finished steps are undone by reconcile",
            flow_run_id,
            execution.action_intent_id,
        )
        return True
    if execution.status == ExecutionStatus.PENDING and execution.flow_run_id == flow_run_id:
        executions.cancel(session, None, execution.action_intent_id, actor=UI_CANCEL_ACTOR)
        return True
    return False
