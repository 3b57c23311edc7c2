"""Signal sinks (contract §7): where an outcome signal goes, besides the database outbox.

Every sink gets the signal's JSON payload with its stable ``signal_id``; delivery is at least
once (the ``deliver-signals`` flow retries a signal until every sink took it), so consumers
de-duplicate on ``signal_id``.

* :class:`PrefectEventSink` — always: a Prefect event ``fulfill.action.executed`` / ``fulfill.action.failed``.
* :class:`WebhookSink` — ``FULFILL_SIGNAL_WEBHOOK_URLS``: an HTTP POST signed per Standard Webhooks
  (``webhook-id`` = ``signal_id``, ``webhook-timestamp``, ``webhook-signature: v1,…``) with
  ``FULFILL_SIGNAL_WEBHOOK_SECRET``; any 2xx answer is a delivery.
* :class:`EventBridgeSink` — ``FULFILL_SIGNAL_EVENTBRIDGE_BUS``: ``PutEvents`` (source ``fulfill``,
  detail-type the signal kind, detail the payload) through a boto3 ``events`` client made from the
  prefect-aws ``AwsCredentials`` block ``FULFILL_SIGNAL_AWS_CREDENTIALS_BLOCK`` (its client
  parameters — endpoint, region — apply).

A sink raises :class:`SinkError` with a message that names the sink and never carries a secret or
a response body.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import httpx
from prefect.events import emit_event
from standardwebhooks.webhooks import Webhook

from fulfill.settings import Settings, load_settings

EVENT_SOURCE = "fulfill"
WEBHOOK_TIMEOUT_SECONDS = 10.0
MAX_ATTEMPTS = 10
BACKOFF_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 3600.0
MAX_ERROR_CHARS = 1000


class SinkError(Exception):
    """A sink did not take the signal; the message is safe to store (no secret, no body)."""


@dataclass(frozen=True)
class OutgoingSignal:
    signal_id: str
    kind: str
    payload: dict[str, Any]


class Sink(Protocol):
    name: str

    def deliver(self, signal: OutgoingSignal) -> None:
        """Hand the signal over; raise :class:`SinkError` when the sink did not take it."""


def body_of(signal: OutgoingSignal) -> str:
    """The JSON body every sink sends (the payload, with its ``signal_id``), canonical key order."""
    return json.dumps(
        {**signal.payload, "signal_id": signal.signal_id}, sort_keys=True, separators=(",", ":")
    )


class PrefectEventSink:
    name = "prefect-event"

    def deliver(self, signal: OutgoingSignal) -> None:
        payload = signal.payload
        event = emit_event(
            event=f"fulfill.{signal.kind.lower().replace('_', '.')}",
            resource={
                "prefect.resource.id": f"fulfill.intent.{payload.get('action_intent_id')}",
                "fulfill.tenant": str(payload.get("tenant_id")),
                "fulfill.signal-id": signal.signal_id,
                # Labels automations can match on (deployments/automations.py).
                "fulfill.status": str(payload.get("status") or ""),
                "fulfill.reason": str(payload.get("reason") or ""),
                "fulfill.action-type": str(payload.get("action_type") or ""),
            },
            payload=payload,
        )
        if event is None:
            raise SinkError("prefect-event: events are not enabled in this process (no Prefect API)")


def _display_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


class WebhookSink:
    """POSTs the signal to one URL, signed per Standard Webhooks."""

    def __init__(self, url: str, secret: str, client: httpx.Client | None = None) -> None:
        self.url = url
        self.name = f"webhook {_display_url(url)}"
        self._webhook = Webhook(secret)
        self._client = client

    def deliver(self, signal: OutgoingSignal) -> None:
        body = body_of(signal)
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": signal.signal_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._webhook.sign(signal.signal_id, now, body),
        }
        try:
            if self._client is not None:
                response = self._client.post(self.url, content=body, headers=headers)
            else:
                with httpx.Client(timeout=WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False) as client:
                    response = client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SinkError(f"{self.name}: {type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise SinkError(f"{self.name}: HTTP {response.status_code}")


class EventBridgeSink:
    """``PutEvents`` on one bus, through a client from the prefect-aws credentials block."""

    def __init__(self, bus: str, client_factory: Callable[[], Any]) -> None:
        self.bus = bus
        self.name = f"eventbridge {bus}"
        self._client_factory = client_factory
        self._client: Any = None

    def deliver(self, signal: OutgoingSignal) -> None:
        try:
            if self._client is None:
                self._client = self._client_factory()
            answer = self._client.put_events(
                Entries=[
                    {
                        "Source": EVENT_SOURCE,
                        "DetailType": signal.kind,
                        "Detail": body_of(signal),
                        "EventBusName": self.bus,
                    }
                ]
            )
        except SinkError:
            raise
        except Exception as exc:  # botocore errors, a block that does not load
            raise SinkError(f"{self.name}: {type(exc).__name__}") from None
        if answer.get("FailedEntryCount"):
            codes = {entry.get("ErrorCode") for entry in answer.get("Entries", []) if entry.get("ErrorCode")}
            raise SinkError(f"{self.name}: entry refused ({', '.join(sorted(map(str, codes))) or 'unknown'})")


def eventbridge_client(block_name: str | None) -> Any:
    """A boto3 ``events`` client: from the named ``AwsCredentials`` block (with its client
    parameters: endpoint, region, …), else from boto3's default credential chain."""
    if block_name is None:
        import boto3

        return boto3.client("events")
    from prefect_aws import AwsCredentials

    credentials = cast(AwsCredentials, AwsCredentials.load(block_name))
    overrides = credentials.aws_client_parameters.get_params_override()
    return credentials.get_boto3_session().client("events", **overrides)


def configured_sinks(settings: Settings | None = None) -> list[Sink]:
    """The Prefect event sink, plus every sink the operator configured."""
    settings = settings or load_settings()
    sinks: list[Sink] = [PrefectEventSink()]
    if settings.signal_webhook_urls and settings.signal_webhook_secret:
        sinks += [WebhookSink(url, settings.signal_webhook_secret) for url in settings.signal_webhook_urls]
    if settings.signal_eventbridge_bus:
        block = settings.signal_aws_credentials_block
        sinks.append(EventBridgeSink(settings.signal_eventbridge_bus, lambda: eventbridge_client(block)))
    return sinks


def deliver_to_all(sinks: list[Sink], signal: OutgoingSignal) -> str | None:
    """Deliver to every sink; ``None`` when all took it, else the (safe, bounded) errors."""
    errors: list[str] = []
    for sink in sinks:
        try:
            sink.deliver(signal)
        except SinkError as exc:
            errors.append(str(exc))
    return "; ".join(errors)[:MAX_ERROR_CHARS] if errors else None


def next_delay(attempts: int, base_seconds: float = BACKOFF_SECONDS) -> timedelta:
    """Backoff after the ``attempts``-th failed delivery: base, 2×base, 4×base, … at most an hour."""
    return timedelta(seconds=min(base_seconds * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS))
