"""The closed vocabularies of an execution: statuses, failure codes, compensation, step states.

Each is a ``StrEnum``: a member IS its string (``ExecutionStatus.SUCCEEDED == "SUCCEEDED"``, same
hash, same JSON), so tables keep plain string columns, JSON stays the contract's strings, and rows
or documents written before these types existed read back unchanged.
"""

from __future__ import annotations

from enum import StrEnum


class ExecutionStatus(StrEnum):
    """Contract §5 ``status``: PENDING → EXECUTING → SUCCEEDED | FAILED | EXPIRED | CANCELLED."""

    PENDING = "PENDING"
    EXECUTING = "EXECUTING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"


class FailureCode(StrEnum):
    """Contract §5 ``failure.code``, plus ``CONFLICT`` (admission only, see below)."""

    APPROVAL_INVALID = "APPROVAL_INVALID"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    CONNECTOR_REJECTED = "CONNECTOR_REJECTED"
    RETRIES_EXHAUSTED = "RETRIES_EXHAUSTED"
    STALE_PRECONDITION = "STALE_PRECONDITION"
    KILL_SWITCH = "KILL_SWITCH"
    NOT_CONFIGURED = "NOT_CONFIGURED"
    AMBIGUOUS_OUTCOME = "AMBIGUOUS_OUTCOME"
    CANCELLED_BY_USER = "CANCELLED_BY_USER"
    #: An ``action_intent_id`` received again with other content. Only a rejection says it (the
    #: ``INTENT_REJECTED`` ledger row, the flow's ``AdmissionRejected``): a rejected intent has no
    #: execution, so no status body ever carries it.
    CONFLICT = "CONFLICT"


class Compensation(StrEnum):
    """Contract §5 ``failure.compensation``: how undoing the finished steps ended."""

    NONE = "NONE"
    COMPENSATED = "COMPENSATED"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"


class StepStatus(StrEnum):
    """A step record's state (``steps.status``)."""

    CALL_STARTED = "CALL_STARTED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    COMPENSATED = "COMPENSATED"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"


class RefusalReason(StrEnum):
    """Why a claim started no attempt."""

    ALREADY_FINISHED = "ALREADY_FINISHED"  # SUCCEEDED, EXPIRED or CANCELLED: never again
    BUSY = "BUSY"  # another executor holds a live lease
    COMPENSATING = "COMPENSATING"  # an undo is owed; no rerun until it is done
    EXPIRED = "EXPIRED"  # the approval ran out (the claim made it EXPIRED)
    KILL_SWITCH = "KILL_SWITCH"  # an operator control is engaged (the claim made it FAILED)


class HaltKind(StrEnum):
    """What stopped a run before an external call."""

    KILL_SWITCH = "KILL_SWITCH"
    EXPIRED = "EXPIRED"


class TokenRole(StrEnum):
    """What an API bearer token may do (``api_tokens.role``).

    ``viewer`` reads its tenant's executions; ``operator`` also cancels them, reads their ledger and
    switches its own tenant's kill switch; ``admin`` (bound to no tenant) may do all, everywhere.
    """

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"
