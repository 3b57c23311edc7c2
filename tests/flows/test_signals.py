"""Signals out (contract §7): signed webhooks and EventBridge, at least once, retried, dead-lettered."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
from moto.server import ThreadedMotoServer
from prefect_aws import AwsCredentials
from prefect_aws.client_parameters import AwsClientParameters
from sqlmodel import select
from standardwebhooks.webhooks import Webhook

from flows.execute_intent import execute_intent
from flows.maintenance import deliver_signals
from fulfill.db import transaction
from fulfill.settings import SettingsError, load_settings
from fulfill.tables import Signal

pytestmark = pytest.mark.usefixtures("prefect_server")

SECRET = "whsec_" + "c2lnbmFscy10ZXN0LXNlY3JldC0xMjM0NTY3ODkw"


class Receiver:
    """A webhook endpoint on 127.0.0.1 that verifies each delivery's Standard Webhooks signature."""

    def __init__(self, status: int = 204) -> None:
        self.status = status
        self.received: list[dict[str, Any]] = []
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"])).decode()
                try:
                    payload = Webhook(SECRET).verify(body, dict(self.headers.items()))
                except Exception:
                    receiver.bad_signatures += 1
                    self.send_response(401)
                else:
                    receiver.received.append({"id": self.headers["webhook-id"], "payload": payload})
                    self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/signals"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[Receiver]:
    r = Receiver()
    monkeypatch.setenv("FULFILL_SIGNAL_WEBHOOK_URLS", r.url)
    monkeypatch.setenv("FULFILL_SIGNAL_WEBHOOK_SECRET", SECRET)
    yield r
    r.close()


def _signals(engine: Any, tenant: str) -> list[Signal]:
    with transaction(engine) as session:
        return list(session.exec(select(Signal).where(Signal.tenant_id == tenant)).all())


def test_each_signal_reaches_the_webhook_signed_once_per_delivery(
    engine: Any, make_intent: Any, tenant: str, receiver: Receiver
) -> None:
    ok = make_intent("internal.create_task", {"title": "Signal me"})
    late = make_intent("internal.create_task", {"title": "Late"}, expires_at_epoch=1_000_000_000)
    execute_intent(ok)
    execute_intent(late)

    assert deliver_signals(tenant_id=tenant) == 2
    assert deliver_signals(tenant_id=tenant) == 0, "a delivered signal is not sent again"

    assert receiver.bad_signatures == 0
    ids = {s.signal_id: s for s in _signals(engine, tenant)}
    assert sorted(r["id"] for r in receiver.received) == sorted(ids)
    for delivery in receiver.received:
        assert delivery["payload"]["signal_id"] == delivery["id"]
        assert delivery["payload"]["type"] == ids[delivery["id"]].kind
    assert {r["payload"]["type"] for r in receiver.received} == {"ACTION_EXECUTED", "ACTION_FAILED"}
    assert all(s.delivered_at is not None and s.delivery_attempts == 1 for s in ids.values())


def test_a_failing_receiver_gets_retries_with_backoff_then_the_signal_is_dead_lettered(
    engine: Any, make_intent: Any, tenant: str, receiver: Receiver
) -> None:
    receiver.status = 500
    execute_intent(make_intent("internal.create_task", {"title": "Nobody listens"}))

    assert deliver_signals(tenant_id=tenant, backoff_seconds=3600) == 0
    [row] = _signals(engine, tenant)
    assert row.delivery_attempts == 1 and row.next_attempt_at is not None and row.dead_lettered_at is None
    assert row.last_error == f"webhook {receiver.url}: HTTP 500"
    deliver_signals(tenant_id=tenant, backoff_seconds=3600)
    assert _signals(engine, tenant)[0].delivery_attempts == 1, "not retried before its backoff ends"
    with engine.begin() as conn:  # the backoff has passed
        conn.execute(
            sa.text("UPDATE signals SET next_attempt_at = :t WHERE tenant_id = :tenant"),
            {"t": "2000-01-01 00:00:00", "tenant": tenant},
        )

    for _ in range(2):
        deliver_signals(tenant_id=tenant, max_attempts=3, backoff_seconds=0)
    [row] = _signals(engine, tenant)
    assert row.delivery_attempts == 3 and row.delivered_at is None
    assert row.dead_lettered_at is not None and "HTTP 500" in (row.last_error or "")
    assert [r["id"] for r in receiver.received] == [row.signal_id] * 3, "the same signal_id every time"

    receiver.status = 200
    assert deliver_signals(tenant_id=tenant, backoff_seconds=0) == 0, "a dead letter is not retried"
    assert len(receiver.received) == 3


def test_webhook_settings_refuse_plain_http_off_loopback_and_unsigned_delivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FULFILL_SIGNAL_WEBHOOK_URLS", "http://hooks.example.com/x")
    monkeypatch.setenv("FULFILL_SIGNAL_WEBHOOK_SECRET", SECRET)
    with pytest.raises(SettingsError, match="FULFILL_SIGNAL_WEBHOOK_URLS"):
        load_settings()
    monkeypatch.setenv("FULFILL_SIGNAL_WEBHOOK_URLS", "https://hooks.example.com/x http://[::1]:8080/y")
    assert load_settings().signal_webhook_urls == ("https://hooks.example.com/x", "http://[::1]:8080/y")
    monkeypatch.delenv("FULFILL_SIGNAL_WEBHOOK_SECRET")
    with pytest.raises(SettingsError, match="FULFILL_SIGNAL_WEBHOOK_SECRET"):
        load_settings()


@pytest.fixture
def eventbridge(prefect_server: str, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[Any]:
    """moto on loopback: a bus whose rule copies every fulfill event to an SQS queue we can read."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    keys = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    events = boto3.client("events", endpoint_url=endpoint, **keys)
    sqs = boto3.client("sqs", endpoint_url=endpoint, **keys)
    bus = f"fulfill-{uuid.uuid4().hex[:8]}"
    events.create_event_bus(Name=bus)
    queue_url = sqs.create_queue(QueueName=bus)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name="all", EventBusName=bus, EventPattern=json.dumps({"source": ["fulfill"]}))
    events.put_targets(Rule="all", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}])
    block = f"signals-aws-{uuid.uuid4().hex[:8]}"
    AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=endpoint),
    ).save(block, overwrite=True)
    monkeypatch.setenv("FULFILL_SIGNAL_EVENTBRIDGE_BUS", bus)
    monkeypatch.setenv("FULFILL_SIGNAL_AWS_CREDENTIALS_BLOCK", block)
    try:
        yield sqs, queue_url
    finally:
        server.stop()


def test_each_signal_is_put_on_the_eventbridge_bus(
    engine: Any, make_intent: Any, tenant: str, eventbridge: Any
) -> None:
    sqs, queue_url = eventbridge
    execute_intent(make_intent("internal.create_task", {"title": "To the bus"}))

    assert deliver_signals(tenant_id=tenant) == 1

    [signal] = _signals(engine, tenant)
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2)["Messages"]
    events = [json.loads(m["Body"]) for m in messages]
    assert [(e["source"], e["detail-type"], e["detail"]["signal_id"]) for e in events] == [
        ("fulfill", "ACTION_EXECUTED", signal.signal_id)
    ]
    assert events[0]["detail"]["action_intent_id"] == signal.action_intent_id
