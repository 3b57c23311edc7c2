"""Automations declared in code: created on the Prefect server, and they notify a local receiver."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prefect.automations import Automation
from prefect.events import emit_event

from deployments.automations import NAMES, ensure_automations

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def operator_inbox() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ops", received
    server.shutdown()
    server.server_close()


def test_automations_are_created_once_by_name_and_notify_the_operator(
    operator_inbox: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = operator_inbox
    ensure_automations(url, block_name=f"ops-{uuid.uuid4().hex[:8]}")
    saved = ensure_automations(url, block_name=f"ops-{uuid.uuid4().hex[:8]}")  # again: replaced, not doubled
    assert [a.name for a in saved] == list(NAMES)
    for name in NAMES:
        assert Automation.read(name=name).id in {a.id for a in saved}

    intent_id = f"ai_{uuid.uuid4().hex[:8]}"
    emit_event(
        event="fulfill.action.failed",
        resource={
            "prefect.resource.id": f"fulfill.intent.{intent_id}",
            "fulfill.tenant": "acme",
            "fulfill.reason": "AMBIGUOUS_OUTCOME",
            "fulfill.action-type": "crm.create_task",
        },
        payload={"action_intent_id": intent_id},
    )
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and not any(intent_id in m.get("body", "") for m in received):
        time.sleep(0.5)
    mine = [m for m in received if intent_id in m.get("body", "")]
    assert [m["subject"] for m in mine] == ["fulfill: ambiguous outcome"], received
