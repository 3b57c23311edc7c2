"""Prefect mechanisms the engine relies on, verified (PREFECT_NOTES: names can mislead)."""

from __future__ import annotations

import time
from datetime import UTC, timedelta
from typing import Any

import httpx
import pytest
from prefect import flow
from sqlmodel import select

from connectors.base import ExternalRef, StepCall, StepResult
from connectors.errors import NotFound, OutcomeUnknown, ProviderUnavailable, RateLimitedError
from connectors.hubspot import HubSpotConnector
from connectors.internal import InternalConnector
from flows.execute_intent import ExecutionFailed, execute_intent
from fulfill import controls, executions, ledger
from fulfill.db import db_now, transaction
from fulfill.storage import LocalObjectStore
from fulfill.tables import Execution, InternalTask
from sandbox.hubspot import HubSpotEmulator, rate_limit_fault
from tasks.admit import verify_and_register
from tasks.connector_step import (
    DEFAULT_RETRIES,
    LEASE_RENEWAL_SECONDS,
    RATE_LIMIT_RETRIES,
    Halted,
    make_retry_condition,
    run_step,
)
from tests.connectors.cases_hubspot import COMPANY_ID, TASK_PARAMS, make_credentials

pytestmark = pytest.mark.usefixtures("prefect_server")


class Counting:
    system = "internal"

    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.calls = 0
        self.failures = failures or []

    def execute(self, call: StepCall) -> StepResult:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return StepResult(
            ref=ExternalRef(system="internal", object="task", id=str(self.calls)),
            created=True,
            summary="done",
        )


@pytest.fixture
def leased(engine: Any, make_intent: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    def make(
        connector: Any,
        *,
        expires_in: int = 86400,
        action_type: str = "internal.create_task",
        params: dict[str, Any] | None = None,
        system: str = "internal",
        account_id: str = "a",
    ) -> tuple[executions.Lease, StepCall]:
        monkeypatch.setattr(
            "tasks.connector_step.resolve_connector", lambda tenant_id, action_type: connector
        )
        params = params or {"title": "x"}
        # Within FULFILL_MAX_APPROVAL_TTL (30 days) of receipt.
        intent = make_intent(action_type, params, expires_at_epoch=int(time.time()) + expires_in)
        assert verify_and_register(intent).admitted
        with transaction(engine) as session:
            lease = executions.claim(session, intent["action_intent_id"], owner="test/1", blocked=None)
            assert isinstance(lease, executions.Lease)
            call = StepCall(
                action_intent_id=lease.action_intent_id,
                tenant_id=lease.tenant_id,
                account_id=account_id,
                action_type=action_type,
                step="create_task",
                idempotency_key=f"{lease.action_intent_id}:create_task",
                params=params,
            )
            executions.checkpoint(session, lease, seq=0, system=system, call=call)
        return lease, call

    return make


def test_cache_skips_a_finished_step_on_rerun(leased: Any) -> None:
    connector = Counting()
    lease, call = leased(connector)

    @flow
    def twice() -> list[str]:
        first = run_step(call, lease, cache_key=f"{call.idempotency_key}:fp")
        second = run_step(call, lease, cache_key=f"{call.idempotency_key}:fp")
        return [first.ref.id, second.ref.id]

    assert twice() == ["1", "1"]
    assert connector.calls == 1, "the persisted result was reused; the provider was not called again"


def test_transient_errors_retry_and_permanent_do_not(leased: Any, engine: Any) -> None:
    connector = Counting([RateLimitedError("429", retry_after=0.01), RateLimitedError("429")])
    lease, call = leased(connector)

    @flow
    def once() -> StepResult:
        task = run_step.with_options(
            retry_delay_seconds=0, retry_condition_fn=make_retry_condition(lease, call)
        )
        return task(call, lease, cache_key=f"{call.idempotency_key}:a")

    assert once().ref.id == "3"
    with transaction(engine) as session:
        rows = ledger.entries_for_intent(session, lease.tenant_id, lease.action_intent_id)
        events = [e.event_type for e in rows]
    assert events.count("STEP_RETRY_SCHEDULED") == 2

    permanent = Counting([NotFound("404")])
    lease2, call2 = leased(permanent)

    @flow
    def fails() -> StepResult:
        task = run_step.with_options(
            retry_delay_seconds=0, retry_condition_fn=make_retry_condition(lease2, call2)
        )
        return task(call2, lease2, cache_key=f"{call2.idempotency_key}:b")

    with pytest.raises(NotFound):
        fails()
    assert permanent.calls == 1


def test_kill_switch_is_checked_before_every_call(leased: Any, engine: Any) -> None:
    connector = Counting()
    lease, call = leased(connector)
    with transaction(engine) as session:
        controls.set_switch(
            session, "action_type", "internal.create_task", enabled=False, reason="t", actor="ops"
        )
    try:

        @flow
        def blocked() -> StepResult:
            return run_step(call, lease, cache_key=f"{call.idempotency_key}:c")

        with pytest.raises(Halted, match="KILL_SWITCH"):
            blocked()
        assert connector.calls == 0
    finally:
        with transaction(engine) as session:
            controls.set_switch(
                session, "action_type", "internal.create_task", enabled=True, reason="", actor="ops"
            )


# -- never retry before the provider allows; wait within the approval's TTL ------------------------
@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The retry waits, recorded instead of slept (each is one chunk between lease renewals)."""
    recorded: list[float] = []
    monkeypatch.setattr("tasks.connector_step.sleep", recorded.append)
    return recorded


def _retry_events(engine: Any, lease: executions.Lease) -> list[dict[str, Any]]:
    with transaction(engine) as session:
        rows = ledger.entries_for_intent(session, lease.tenant_id, lease.action_intent_id)
    return [dict(row.details) for row in rows if row.event_type == "STEP_RETRY_SCHEDULED"]


def _fast(lease: executions.Lease, call: StepCall) -> Any:
    """``run_step`` as the flow runs it, without Prefect's own sub-second backoff (keeps tests fast)."""
    return run_step.with_options(retry_delay_seconds=0, retry_condition_fn=make_retry_condition(lease, call))


def test_hubspot_burst_429_is_retried_only_after_the_ten_second_window(
    leased: Any, engine: Any, waits: list[float]
) -> None:
    """A 429 without Retry-After, twice: each retry starts ≥ 10 s (virtual time) after the attempt before."""
    emulator = HubSpotEmulator()
    fault = rate_limit_fault("TEN_SECONDLY_ROLLING", times=2)
    del fault.headers["Retry-After"]
    fault.method, fault.path = "POST", r"^/crm/v3/objects/tasks$"
    emulator.inject(fault)
    inner = emulator.transport()
    attempts: list[float] = []

    def provider(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/crm/v3/objects/tasks":
            attempts.append(time.monotonic() + sum(waits))  # real time plus the time "slept"
        return inner.handle_request(request)

    hub = HubSpotConnector(httpx.Client(transport=httpx.MockTransport(provider)), make_credentials())
    lease, call = leased(
        hub,
        action_type="crm.create_task",
        params=TASK_PARAMS,
        system="hubspot",
        account_id=COMPANY_ID,
        expires_in=3600,
    )

    @flow
    def once() -> StepResult:
        return _fast(lease, call)(call, lease, cache_key=f"{call.idempotency_key}:hs")

    assert once().created is True
    assert len(attempts) == 3
    assert all(later - earlier >= 10.0 for earlier, later in zip(attempts, attempts[1:], strict=False))
    assert sum(waits) == 20.0 and max(waits) <= LEASE_RENEWAL_SECONDS, "10 s twice, renewing the lease"
    retries = _retry_events(engine, lease)
    assert [r["wait_seconds"] for r in retries] == [10.0, 10.0]
    assert [r["error"]["retry_after"] for r in retries] == [10.0, 10.0]
    assert len(emulator.live("tasks")) == 1


def test_long_retry_after_is_waited_in_full_renewing_the_lease(
    leased: Any, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retry-After 120 s with an hour of TTL left: waited in full (not cut to 60 s), lease renewed."""
    connector = Counting([RateLimitedError("429", retry_after=120.0)])
    lease, call = leased(connector, expires_in=3600)
    chunks: list[float] = []
    renewed: list[bool] = []

    def lapse_the_lease(seconds: float) -> None:
        """Record the chunk; check the lease was renewed since the last chunk, then let it lapse."""
        chunks.append(seconds)
        with transaction(engine) as session:
            execution = session.get(Execution, lease.action_intent_id)
            assert execution is not None and execution.lease_until is not None
            now = db_now(session)
            until = execution.lease_until
            renewed.append((until if until.tzinfo else until.replace(tzinfo=UTC)) > now)
            execution.lease_until = now - timedelta(seconds=1)
            session.add(execution)

    monkeypatch.setattr("tasks.connector_step.sleep", lapse_the_lease)

    @flow
    def once() -> StepResult:
        return _fast(lease, call)(call, lease, cache_key=f"{call.idempotency_key}:long")

    assert once().ref.id == "2"
    assert sum(chunks) == 120.0 and max(chunks) <= LEASE_RENEWAL_SECONDS
    assert LEASE_RENEWAL_SECONDS < executions.DEFAULT_LEASE_SECONDS / 2, "renewed well within the lease"
    assert chunks == [LEASE_RENEWAL_SECONDS] * 40
    assert renewed == [True] * 40, "the lease was renewed after every chunk of the wait"
    [retry] = _retry_events(engine, lease)
    assert retry["wait_seconds"] == 120.0 and retry["error"]["retry_after"] == 120.0


def test_retry_after_beyond_the_ttl_is_not_retried(leased: Any, engine: Any, waits: list[float]) -> None:
    """Retry-After 2 h with 1 h of TTL left: no wait, no retry, nothing ledgered as scheduled."""
    connector = Counting([RateLimitedError("429", retry_after=7200.0)])
    lease, call = leased(connector, expires_in=3600)

    @flow
    def once() -> StepResult:
        return _fast(lease, call)(call, lease, cache_key=f"{call.idempotency_key}:ttl")

    with pytest.raises(RateLimitedError) as raised:
        once()
    assert raised.value.code == "RETRIES_EXHAUSTED"
    assert connector.calls == 1 and waits == []
    assert _retry_events(engine, lease) == []


def test_a_lost_lease_ends_the_wait(leased: Any, engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    connector = Counting([RateLimitedError("429", retry_after=90.0)])
    lease, call = leased(connector, expires_in=3600)
    chunks: list[float] = []

    def cancel_meanwhile(seconds: float) -> None:
        chunks.append(seconds)
        with transaction(engine) as session:
            executions.cancel(session, lease.tenant_id, lease.action_intent_id, actor="ops@acme.example")

    monkeypatch.setattr("tasks.connector_step.sleep", cancel_meanwhile)

    @flow
    def once() -> StepResult:
        return _fast(lease, call)(call, lease, cache_key=f"{call.idempotency_key}:lost")

    with pytest.raises(RateLimitedError):
        once()
    assert chunks == [LEASE_RENEWAL_SECONDS], "the wait stopped at the first renewal that found it cancelled"
    assert connector.calls == 1


def test_rate_limits_get_more_retries_than_other_transient_errors(leased: Any, waits: list[float]) -> None:
    throttled = Counting([RateLimitedError("429", retry_after=0.0) for _ in range(RATE_LIMIT_RETRIES)])
    lease, call = leased(throttled, expires_in=3600)

    @flow
    def throttled_run() -> StepResult:
        return _fast(lease, call)(call, lease, cache_key=f"{call.idempotency_key}:rl")

    assert throttled_run().created is True
    assert throttled.calls == RATE_LIMIT_RETRIES + 1

    unavailable = Counting([ProviderUnavailable("503") for _ in range(RATE_LIMIT_RETRIES)])
    lease2, call2 = leased(unavailable, expires_in=3600)

    @flow
    def unavailable_run() -> StepResult:
        return _fast(lease2, call2)(call2, lease2, cache_key=f"{call2.idempotency_key}:503")

    with pytest.raises(ProviderUnavailable):
        unavailable_run()
    assert unavailable.calls == DEFAULT_RETRIES + 1


def test_plain_run_step_retries_only_connector_errors(leased: Any, waits: list[float]) -> None:
    """Without an explicit condition, ``run_step`` applies the same policy (here: retry after 5 s)."""
    connector = Counting([RateLimitedError("429", retry_after=5.0)])
    lease, call = leased(connector, expires_in=3600)

    @flow
    def once() -> StepResult:
        return run_step.with_options(retry_delay_seconds=0)(
            call, lease, cache_key=f"{call.idempotency_key}:p"
        )

    assert once().ref.id == "2"
    assert sum(waits) == 5.0 and max(waits) <= LEASE_RENEWAL_SECONDS


class _Throttled(InternalConnector):
    """The real internal connector, throttled once with a long Retry-After (an explicit test double)."""

    def __init__(self, base: InternalConnector, retry_after: float) -> None:
        super().__init__(base.engine, base.store)
        self.retry_after = retry_after
        self.calls = 0

    def execute(self, call: StepCall) -> StepResult:
        self.calls += 1
        if self.calls == 1:
            raise RateLimitedError("429 from provider", status_code=429, retry_after=self.retry_after)
        return super().execute(call)


def test_flow_ends_retries_exhausted_when_the_wait_outlives_the_approval(
    engine: Any,
    make_intent: Any,
    tenant: str,
    waits: list[float],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    connector = _Throttled(InternalConnector(engine, LocalObjectStore(tmp_path / "objects")), 7200.0)
    for module in ("tasks.resolve", "tasks.connector_step", "tasks.plan"):
        monkeypatch.setattr(f"{module}.resolve_connector", lambda tenant_id, action_type: connector)
    intent = make_intent(
        "internal.create_task", {"title": "Throttled"}, expires_at_epoch=int(time.time()) + 3600
    )

    with pytest.raises(ExecutionFailed) as failed:
        execute_intent(intent)

    assert failed.value.code == "RETRIES_EXHAUSTED"
    assert connector.calls == 1 and waits == []
    with transaction(engine) as session:
        rows = ledger.entries_for_intent(session, tenant, intent["action_intent_id"])
        tasks_made = session.exec(
            select(InternalTask).where(InternalTask.action_intent_id == intent["action_intent_id"])
        ).all()
    assert "STEP_RETRY_SCHEDULED" not in [row.event_type for row in rows]
    assert tasks_made == []


# -- the approval's expiry at send time ---------------------------------------------------------------
def test_a_slow_token_endpoint_cannot_push_the_write_past_the_expiry(leased: Any) -> None:
    """The TTL check before the step passes; the token endpoint then answers after the expiry: the
    write never starts and the step halts EXPIRED (it used to go out late and succeed)."""
    api_requests: list[httpx.Request] = []
    expires_at: list[float] = []

    def provider(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/v1/token":
            time.sleep(max(0.0, expires_at[0] - time.time()) + 0.3)  # answers after the expiry
            return httpx.Response(200, json={"access_token": "tok", "expires_in": 1800})
        api_requests.append(request)
        return httpx.Response(201, json={"id": "1", "properties": {}})

    hub = HubSpotConnector(httpx.Client(transport=httpx.MockTransport(provider)), make_credentials("oauth"))
    lease, call = leased(
        hub, expires_in=2, action_type="crm.create_task", params=TASK_PARAMS, system="hubspot"
    )
    expires_at.append(int(time.time()) + 2)  # no earlier than the intent's expires_at_epoch

    @flow
    def once() -> StepResult:
        return run_step(call, lease, cache_key=f"{call.idempotency_key}:ttl")

    with pytest.raises(Halted) as halted:
        once()
    assert halted.value.kind == "EXPIRED"
    assert api_requests == []  # no provider request started after the expiry


def test_a_provider_that_never_answers_is_cut_at_the_expiry(leased: Any) -> None:
    """A request in flight when the approval expires is cut then, not at the client's 30 s timeout."""
    import socket

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # accepts (the kernel does), never answers
    try:
        base = f"http://127.0.0.1:{server.getsockname()[1]}"
        credentials = make_credentials(api_base_url=base)
        hub = HubSpotConnector(credentials.get_client(timeout=httpx.Timeout(30.0)), credentials)
        lease, call = leased(
            hub, expires_in=2, action_type="crm.create_task", params=TASK_PARAMS, system="hubspot"
        )

        @flow
        def once() -> StepResult:
            return run_step(call, lease, cache_key=f"{call.idempotency_key}:cut")

        started = time.monotonic()
        with pytest.raises((Halted, OutcomeUnknown)) as cut:
            once()
        assert time.monotonic() - started < 10.0
        if isinstance(cut.value, Halted):
            assert cut.value.kind == "EXPIRED"
    finally:
        server.close()
