"""Approval intake (contract §4): a Standard Webhooks delivery becomes a run of ``execute-intent``.

Order of checks, each before anything is stored:

1. body size (``MAX_BODY_BYTES``) — refused with 413;
2. the Standard Webhooks signature over the RAW body (``standardwebhooks``, every configured
   ``whsec_`` secret for rotation, ±5 minutes) — 401, and nothing but a security log line;
3. the envelope (``type: action_intent.approved``, ``data`` an object) and the intent: the safe loader,
   the envelope, the approval signature and then the schema (admission) — 422 naming the field; recorded
   in the tenant's ledger when the signature verified, else in the security log only;
4. registration once per ``action_intent_id`` (same id, other content: 409; same content: 200, and
   nothing new starts) and a flow run of the deployment, created with ``idempotency_key =
   action_intent_id`` so concurrent deliveries share one run. An approval already past its TTL is
   recorded EXPIRED and answered 200 with that status.

The run carries only ``action_intent_id``: the verified intent is stored first (Prefect caps flow-run
parameters at 512 KiB), and the flow verifies it again.
"""

from __future__ import annotations

import binascii
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from deployments.launch import RunLauncher, launch_deployment_run
from fulfill import executions
from fulfill.db import get_engine, transaction
from fulfill.intent import IntentInvalid, load_intent_document
from fulfill.settings import load_settings
from fulfill.states import ExecutionStatus, FailureCode
from tasks.admit import Rejected, verify_and_register

EVENT_TYPE = "action_intent.approved"
MAX_BODY_BYTES = 8 * 1024 * 1024  # an intent of up to 7 MiB (fulfill.intent.MAX_INTENT_BYTES) + envelope
security_log = logging.getLogger("fulfill.security")


@dataclass(frozen=True)
class IntakeAnswer:
    """The HTTP answer of one delivery: a status code and a JSON body."""

    status_code: int
    body: dict[str, Any]


def _error(status_code: int, code: str, message: str, field: str | None = None) -> IntakeAnswer:
    return IntakeAnswer(status_code, {"error": {"code": code, "field": field, "message": message}})


def verify_delivery(body: bytes, headers: Mapping[str, str], secrets: tuple[str, ...]) -> str | None:
    """Check the Standard Webhooks signature against every secret; returns why it failed, or None."""
    if not secrets:
        return "no webhook secret is configured (FULFILL_WEBHOOK_SECRETS)"
    lowered = {key.lower(): value for key, value in headers.items()}
    reason = "no matching signature"
    for secret in secrets:
        try:
            Webhook(secret).verify(body, lowered, json_parse=False)
        except WebhookVerificationError as exc:
            reason = str(exc)
        except (ValueError, binascii.Error, UnicodeDecodeError):  # malformed header or body bytes
            reason = "malformed signature header or body"
        else:
            return None
    return reason


class ApprovalIntake:
    """Receives approval webhooks.

    Args:
        launcher: Creates the flow run of a received intent (default: a run of the deployment).
    """

    def __init__(self, launcher: RunLauncher = launch_deployment_run) -> None:
        self.launcher = launcher

    def receive(self, body: bytes, headers: Mapping[str, str]) -> IntakeAnswer:
        """Answer one delivery (see the module docstring for the order of checks)."""
        if len(body) > MAX_BODY_BYTES:
            return _error(413, "PAYLOAD_TOO_LARGE", f"the body is larger than {MAX_BODY_BYTES} bytes")
        refused = verify_delivery(body, headers, load_settings().webhook_secrets)
        if refused is not None:
            security_log.warning(
                "approval webhook refused: %s (webhook-id %r)",
                refused,
                str({k.lower(): v for k, v in headers.items()}.get("webhook-id", ""))[:64],
            )
            return _error(401, "UNAUTHORIZED", "the webhook signature could not be verified")
        try:
            envelope = load_intent_document(body)
        except IntentInvalid as exc:
            return self._invalid(body, exc.field, exc.message)
        if envelope.get("type") != EVENT_TYPE:
            return _error(422, "VALIDATION_FAILED", f"must be {EVENT_TYPE!r}", "type")
        intent = envelope.get("data")
        if not isinstance(intent, dict):
            return _error(422, "VALIDATION_FAILED", "must be the ActionIntentV1 object", "data")
        admission = verify_and_register(intent)
        if isinstance(admission, Rejected):
            field = f"data.{admission.field}" if admission.field else "data"
            status_code = 409 if admission.code == FailureCode.CONFLICT else 422
            return _error(status_code, admission.code, admission.reason, field)
        return self._start(admission.action_intent_id, created=admission.created)

    def _invalid(self, body: bytes, field: str, message: str) -> IntakeAnswer:
        verify_and_register(body)  # ledgers the rejection (under the tenant it claims, if readable)
        return _error(422, "VALIDATION_FAILED", message, field)

    def _start(self, action_intent_id: str, *, created: bool) -> IntakeAnswer:
        with transaction(get_engine()) as session:
            executions.expire_if_due(session, action_intent_id)
            execution = executions.get(session, None, action_intent_id)
            status, flow_run_id = execution.status, execution.flow_run_id
            tenant_id, action_type = execution.tenant_id, execution.action_type
        if status == ExecutionStatus.PENDING:
            flow_run_id = self.launcher(action_intent_id, tenant_id=tenant_id, action_type=action_type)
            with transaction(get_engine()) as session:
                executions.attach_flow_run(session, action_intent_id, flow_run_id)
        body = {"action_intent_id": action_intent_id, "status": status, "flow_run_id": flow_run_id}
        return IntakeAnswer(202 if created and status == ExecutionStatus.PENDING else 200, body)
