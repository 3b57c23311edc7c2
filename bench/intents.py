"""The signed internal intent the benchmark scripts submit (one shape, so their figures compare)."""

from __future__ import annotations

import time
from typing import Any


def bench_intent(run: str, n: int, seed_b64url: str) -> dict[str, Any]:
    """Intent ``n`` of benchmark run ``run``: an ``internal.create_task`` signed with the demo key.

    Imports lazily: the scripts set their environment before anything of fulfill is loaded.
    """
    from fulfill.approval import sign_intent
    from surfaces.demo import DEMO_KEY_ID

    return sign_intent(
        {
            "schema_version": "action_intent.v1",
            "action_intent_id": f"ai_bench_{run}_{n}",
            "tenant_id": "bench",
            "account_id": "acct-1",
            "decision_id": f"dec_{n}",
            "action_type": "internal.create_task",
            "parameters": {"title": f"Bench task {n}"},
            "approval": {
                "approval_id": "apr",
                "approved_by": "bench@example.com",
                "approved_at": "2026-11-27T15:02:11Z",
                "edited": False,
                "key_id": DEMO_KEY_ID,
            },
            "created_at": "2026-11-27T15:00:00Z",
            "expires_at_epoch": int(time.time()) + 3600,
        },
        key_id=DEMO_KEY_ID,
        seed_b64url=seed_b64url,
    )
