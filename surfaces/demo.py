"""``fulfill demo``: sample intents executed through the real flow on the embedded defaults.

Everything runs in this process: Prefect's ephemeral server (unless ``PREFECT_API_URL`` is
set), the SQLite ledger under ``FULFILL_DATA_DIR`` and the provider emulators on loopback.
The demo signs its sample intents with its OWN throw-away approval key (kept in the data
directory, trusted only inside the demo process), so it never weakens the operator's
``FULFILL_APPROVAL_KEYS``. The data stays where ``fulfill status ID`` finds it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from fulfill.approval import b64url_encode, sign_intent
from fulfill.db import upgrade_database
from fulfill.settings import load_settings, reload_settings
from sandbox.base import Fault
from sandbox.local import Sandbox

DEMO_KEY_ID = "fulfill-demo"
SF_TENANT = "demo-sf"
HS_TENANT = "demo-hs"


@dataclass
class Scenario:
    """One demo case: what it shows, the intent, and an optional set-up at the emulators."""

    title: str
    intent: dict[str, Any]
    expect: str
    setup: Callable[[Sandbox], None] | None = None
    tamper: Callable[[dict[str, Any]], None] | None = None
    outcome: dict[str, Any] = field(default_factory=dict)


def demo_keys(data_dir: Path) -> tuple[Path, str]:
    """The demo's approval key pair: (path of its public-key document, private seed)."""
    path = data_dir / "demo-approval-keys.json"
    seed_path = data_dir / "demo-approval-key.seed"
    if not seed_path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        private = Ed25519PrivateKey.generate()
        seed = b64url_encode(private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
        public = b64url_encode(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        seed_path.write_text(seed)
        seed_path.chmod(0o600)
        path.write_text(
            json.dumps({"keys": [{"key_id": DEMO_KEY_ID, "alg": "Ed25519", "public_key_b64url": public}]})
        )
    return path, seed_path.read_text().strip()


def _intent(
    run: str, n: int, tenant: str, account: str, action_type: str, params: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    intent: dict[str, Any] = {
        "schema_version": "action_intent.v1",
        "action_intent_id": f"ai_demo_{run}_{n:02d}",
        "tenant_id": tenant,
        "account_id": account,
        "decision_id": f"dec_demo_{run}_{n:02d}",
        "action_type": action_type,
        "parameters": params,
        "approval": {
            "approval_id": f"apr_demo_{run}_{n:02d}",
            "approved_by": "jordan@acme.example",
            "approved_at": "2026-11-27T15:02:11Z",
            "edited": False,
            "key_id": DEMO_KEY_ID,
        },
        "created_at": "2026-11-27T15:00:00Z",
        "expires_at_epoch": int(time.time()) + 24 * 3600,
    }
    intent.update(extra)
    return intent


def scenarios(run: str) -> list[Scenario]:
    """The sample intents, in order."""
    sf_account, hs_company = "001Hs00002abcDEIAY", "1001"  # the Salesforce emulator's seeded Account
    task = _intent(
        run,
        1,
        SF_TENANT,
        sf_account,
        "internal.create_task",
        {"title": "Prepare the QBR deck", "assignee": "sam@acme.example", "due_date": "2026-12-01"},
    )

    def fail_follow_up(sandbox: Sandbox) -> None:
        sandbox.salesforce.add_validation_rule(
            "Task", "Subject", "[blocked]", "Tasks cannot be created on opportunities in Prospecting."
        )

    return [
        Scenario("internal task", task, "SUCCEEDED"),
        Scenario("same intent delivered again", dict(task), "SUCCEEDED (nothing re-executed)"),
        Scenario(
            "internal brief (2 steps)",
            _intent(
                run,
                2,
                SF_TENANT,
                sf_account,
                "internal.attach_brief",
                {"title": "Acme account brief", "content": "# Acme\n\n* ARR 1.2M\n* Renewal in Q1\n"},
            ),
            "SUCCEEDED",
        ),
        Scenario(
            "Salesforce task, one 503 then OK",
            _intent(
                run,
                3,
                SF_TENANT,
                sf_account,
                "crm.create_task",
                {"subject": "Follow up on renewal pricing", "due_date": "2026-12-04", "priority": "High"},
            ),
            "SUCCEEDED after a retry",
            setup=lambda s: s.salesforce.inject(
                Fault(
                    "status",
                    method="PATCH",
                    path=r"/sobjects/Task/",
                    status=503,
                    body=[{"message": "Server unavailable", "errorCode": "SERVER_UNAVAILABLE"}],
                )
            ),
        ),
        Scenario(
            "Salesforce opportunity + follow-up rejected",
            _intent(
                run,
                4,
                SF_TENANT,
                sf_account,
                "crm.create_opportunity",
                {
                    "name": "Acme – 3-year renewal",
                    "stage": "Prospecting",
                    "close_date": "2027-01-31",
                    "amount": 120000,
                    "follow_up_task": {"subject": "Send the quote [blocked]", "due_date": "2026-12-05"},
                },
            ),
            "FAILED, opportunity undone",
            setup=fail_follow_up,
        ),
        Scenario(
            "HubSpot task, answer lost after commit",
            _intent(
                run,
                5,
                HS_TENANT,
                hs_company,
                "crm.create_task",
                {"subject": "Book the pricing call", "priority": "Normal"},
            ),
            "SUCCEEDED, one task",
            setup=lambda s: s.hubspot.inject(Fault("drop", method="POST", path=r"/crm/v3/objects/tasks$")),
        ),
        Scenario(
            "HubSpot deal stage update",
            _intent(
                run,
                6,
                HS_TENANT,
                hs_company,
                "crm.update_field",
                {
                    "object": "Opportunity",
                    "record_id": "2001",
                    "field": "dealstage",
                    "value": "decisionmakerboughtin",
                    "previous_value": "presentationscheduled",
                },
            ),
            "SUCCEEDED",
        ),
        Scenario(
            "Google Calendar draft (nobody invited)",
            _intent(
                run,
                7,
                SF_TENANT,
                sf_account,
                "calendar.draft_meeting",
                {
                    "title": "Renewal pricing review",
                    "start": "2026-12-03T16:00:00+01:00",
                    "end": "2026-12-03T16:30:00+01:00",
                    "organizer": "jordan@acme.example",
                    "attendees": ["cfo@customer.example"],
                },
            ),
            "SUCCEEDED",
        ),
        Scenario(
            "Salesforce update, record changed since approval",
            _intent(
                run,
                8,
                SF_TENANT,
                sf_account,
                "crm.update_field",
                {
                    "object": "Opportunity",
                    "record_id": "006Hs00001xyzABIAY",
                    "field": "StageName",
                    "value": "Closed Won",
                    "previous_value": "Negotiation/Review",
                },
            ),
            "FAILED, nothing written",
        ),
        Scenario(
            "approval already expired",
            _intent(
                run,
                9,
                SF_TENANT,
                sf_account,
                "internal.log_note",
                {"body": "Too late."},
                expires_at_epoch=int(time.time()) - 60,
            ),
            "EXPIRED",
        ),
        Scenario(
            "tampered after approval",
            _intent(run, 10, SF_TENANT, sf_account, "internal.log_note", {"body": "Approved text."}),
            "REJECTED (APPROVAL_INVALID)",
            tamper=lambda i: i["parameters"].update(body="Text changed after approval."),
        ),
    ]


def configure_sandbox_tenants(sandbox: Sandbox) -> None:
    """Save the sandbox credentials blocks and point the demo tenants at them."""
    sandbox.configure_tenant(
        SF_TENANT, crm="salesforce", prefix="demo", actor="demo", name="Demo (Salesforce)"
    )
    sandbox.configure_tenant(HS_TENANT, crm="hubspot", prefix="demo", actor="demo", name="Demo (HubSpot)")


def run_demo(emit: Callable[[str], None] = print) -> list[Scenario]:
    """Execute every scenario through the real flow; returns them with their outcomes."""
    from sandbox.local import start_sandbox
    from surfaces.service import ExecutionService, IntentRejected

    settings = load_settings()
    keys_path, seed = demo_keys(settings.data_dir)
    os.environ["FULFILL_APPROVAL_KEYS"] = str(keys_path)  # this process only
    os.environ["FULFILL_ALLOW_LOOPBACK_PROVIDERS"] = "1"  # the blocks aim at the loopback emulators
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(settings.data_dir / "prefect-results"))
    reload_settings()  # settings are read once per process: pick up the demo's approval keys
    upgrade_database()  # the demo's database is its own: it migrates it explicitly
    run = uuid.uuid4().hex[:6]
    service = ExecutionService()
    sandbox = start_sandbox()
    try:
        configure_sandbox_tenants(sandbox)
        cases = scenarios(run)
        for case in cases:
            signed = sign_intent(case.intent, key_id=DEMO_KEY_ID, seed_b64url=seed)
            if case.tamper:
                case.tamper(signed)
            if case.setup:
                case.setup(sandbox)
            emit(f"→ {case.title}: {signed['action_intent_id']}")
            try:
                status = service.execute_action_intent(signed)
                case.outcome = status.model_dump(mode="json")
            except IntentRejected as rejected:
                case.outcome = {
                    "action_intent_id": signed["action_intent_id"],
                    "status": "REJECTED",
                    "explanation": rejected.reason,
                    "failure": {"code": rejected.code},
                }
        return cases
    finally:
        sandbox.shutdown()
