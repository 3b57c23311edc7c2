"""HubSpot task idempotency without a unique property: search before create, the indexing window,
lost answers, and the portal self-check that picks the strategy (issue 10.1, 10.4, 10.5, 10.6).

The emulator is configured like a real portal: ``fulfill_intent_key`` exists on tasks WITHOUT unique
values (HubSpot allows none on tasks), its search index lags writes by ``INDEX_DELAY`` seconds, and
answers get lost. Connector and emulator share one fake clock; the connector's waits advance it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from connectors.base import ExternalRef, Guarantee, StepCall, idempotency_key
from connectors.errors import Conflict, NotConfigured, OutcomeUnknown, OutcomeUnsettled, ValidationRejected
from connectors.hubspot import HubSpotConnector, forget_attempts
from sandbox.base import Fault
from sandbox.hubspot import KEY_PROPERTY, HubSpotEmulator
from tests.connectors.cases_hubspot import API, OPPORTUNITY_PARAMS, TASK_PARAMS, make_credentials

INDEX_DELAY = 3.0
SETTLE = 10.0
TASKS = r"^/crm/v3/objects/tasks$"


class FakeClock:
    """Seconds since the epoch that only move when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1_790_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture(autouse=True)
def _fresh_memory() -> Iterator[None]:
    forget_attempts()
    yield
    forget_attempts()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def portal(clock: FakeClock, **options: Any) -> HubSpotEmulator:
    return HubSpotEmulator(clock=clock, index_delay=options.pop("index_delay", INDEX_DELAY), **options)


def hub(emulator: HubSpotEmulator, clock: FakeClock, **creds: Any) -> HubSpotConnector:
    client = httpx.Client(transport=emulator.transport())
    credentials = make_credentials(search_settle_seconds=SETTLE, **creds)
    return HubSpotConnector(client, credentials, clock=clock, sleep=clock.sleep)


def task_call(intent: str = "ai_idem_1", **params: Any) -> StepCall:
    return StepCall(
        action_intent_id=intent,
        tenant_id="acme",
        account_id="1001",
        action_type="crm.create_task",
        step="create_task",
        idempotency_key=idempotency_key(intent, "create_task"),
        params={**TASK_PARAMS, **params},
    )


def sent(emulator: HubSpotEmulator, method: str, path: str) -> int:
    return sum(1 for r in emulator.requests if r.method == method and r.url.path == path)


def tasks_with_key(emulator: HubSpotEmulator, key: str) -> list[str]:
    return [
        i
        for i, r in emulator.objects["tasks"].items()
        if not r["archived"] and r["properties"].get(KEY_PROPERTY) == key
    ]


# -- the strategy comes from the property definition ---------------------------------------------
def test_check_reads_the_definitions_and_picks_a_strategy_per_object_type(clock: FakeClock) -> None:
    emulator = portal(clock)
    result = hub(emulator, clock).check()
    assert result.guarantees["crm.create_task"] is Guarantee.LOOKUP_WINDOW
    assert result.guarantees["crm.create_opportunity"] is Guarantee.LOOKUP_WINDOW  # its follow-up task
    assert result.guarantees["crm.update_field"] is Guarantee.PROVIDER_KEY
    unique = {p.name: p.ok for p in result.preconditions if "unique" in p.name}
    assert unique == {
        f"the tasks property {KEY_PROPERTY} requires unique values": False,
        f"the deals property {KEY_PROPERTY} requires unique values": True,
    }
    paths = {r.url.path for r in emulator.requests}
    assert f"/crm/v3/properties/tasks/{KEY_PROPERTY}" in paths
    assert f"/crm/v3/properties/deals/{KEY_PROPERTY}" in paths
    assert all(r.method == "GET" for r in emulator.requests), "a check never writes"


def test_a_deal_is_created_once_by_its_unique_key_without_a_search(clock: FakeClock) -> None:
    emulator = portal(clock)
    connector = hub(emulator, clock)
    call = StepCall(
        action_intent_id="ai_idem_d",
        tenant_id="acme",
        account_id="1001",
        action_type="crm.create_opportunity",
        step="create_opportunity",
        idempotency_key="ai_idem_d:create_opportunity",
        params=OPPORTUNITY_PARAMS,
    )
    emulator.inject(Fault(kind="drop", method="POST", path=r"^/crm/v3/objects/deals$"))
    with pytest.raises(OutcomeUnknown):
        connector.execute(call)
    again = connector.execute(call)  # 409 -> read back by idProperty, no waiting for any index
    assert again.created is False
    assert sent(emulator, "POST", "/crm/v3/objects/deals/search") == 0
    assert len(emulator.live("deals")) == 2  # the seeded deal and ours


def test_a_portal_whose_deal_key_is_not_unique_searches_for_deals_too(clock: FakeClock) -> None:
    emulator = portal(clock, key_properties={"tasks": {KEY_PROPERTY: False}, "deals": {KEY_PROPERTY: False}})
    connector = hub(emulator, clock)
    assert connector.check().guarantees["crm.create_opportunity"] is Guarantee.LOOKUP_WINDOW
    described = connector.describe(
        StepCall(
            action_intent_id="ai_idem_e",
            tenant_id="acme",
            account_id="1001",
            action_type="crm.create_opportunity",
            step="create_opportunity",
            idempotency_key="ai_idem_e:create_opportunity",
            params=OPPORTUNITY_PARAMS,
        )
    )
    assert [(d.method, d.url.rsplit("/", 2)[-2:], d.write) for d in described] == [
        ("POST", ["deals", "search"], False),
        ("POST", ["objects", "deals"], True),
    ]


# -- search before create, lost answers and the indexing delay --------------------------------------
def test_first_attempt_searches_then_creates_once(clock: FakeClock) -> None:
    emulator = portal(clock)
    connector = hub(emulator, clock)
    call = task_call()
    result = connector.execute(call)
    assert result.created is True
    assert sent(emulator, "POST", "/crm/v3/objects/tasks/search") == 1
    assert sent(emulator, "POST", "/crm/v3/objects/tasks") == 1
    assert tasks_with_key(emulator, call.idempotency_key) == [result.ref.id]


def test_a_repeated_call_within_the_index_lag_reads_the_created_id_instead_of_trusting_the_search(
    clock: FakeClock,
) -> None:
    emulator = portal(clock)
    connector = hub(emulator, clock)
    call = task_call()
    first = connector.execute(call)
    second = hub(emulator, clock).execute(call)  # a rebuilt connector in the same process
    assert second.ref.id == first.ref.id and second.created is False
    assert tasks_with_key(emulator, call.idempotency_key) == [first.ref.id]


def test_a_lost_answer_waits_out_the_index_then_finds_the_one_task(clock: FakeClock) -> None:
    emulator = portal(clock)
    connector = hub(emulator, clock)
    call = task_call()
    emulator.inject(Fault(kind="drop", method="POST", path=TASKS))
    with pytest.raises(OutcomeUnknown):
        connector.execute(call)
    clock.sleep(0.5)  # the flow's first backoff
    with pytest.raises(OutcomeUnknown) as waiting:
        connector.execute(call)  # the search cannot see it yet: no second create, a wait instead
    assert waiting.value.retry_after == pytest.approx(SETTLE - 0.5)
    assert sent(emulator, "POST", "/crm/v3/objects/tasks") == 1
    clock.sleep(waiting.value.retry_after or 0)
    found = connector.execute(call)
    assert found.created is False
    assert tasks_with_key(emulator, call.idempotency_key) == [found.ref.id]
    assert sent(emulator, "POST", "/crm/v3/objects/tasks") == 1, "never a second create"


def test_a_later_attempt_in_another_process_waits_one_window_before_trusting_a_miss(clock: FakeClock) -> None:
    """The first attempt's process died after HubSpot committed; this process remembers nothing of it."""
    emulator = portal(clock)
    first = hub(emulator, clock).execute(task_call())
    forget_attempts()  # a new worker process
    elsewhere = hub(emulator, clock)
    retried = task_call().model_copy(update={"attempt": 2})

    with pytest.raises(OutcomeUnknown) as waiting:
        elsewhere.execute(retried)  # the index may not show the earlier create yet: wait, do not create
    assert waiting.value.retry_after == SETTLE
    clock.sleep(SETTLE)
    found = elsewhere.execute(retried)

    assert (found.created, found.ref.id) == (False, first.ref.id)
    assert sent(emulator, "POST", "/crm/v3/objects/tasks") == 1, "never a second create"


def test_a_later_attempt_that_finds_nothing_after_the_window_creates_once(clock: FakeClock) -> None:
    """The earlier attempt (another process) never reached HubSpot: after one window the miss is trusted."""
    emulator = portal(clock)
    connector = hub(emulator, clock)
    retried = task_call().model_copy(update={"attempt": 3})
    with pytest.raises(OutcomeUnknown):
        connector.execute(retried)
    clock.sleep(SETTLE)
    assert connector.execute(retried).created is True
    assert len(tasks_with_key(emulator, retried.idempotency_key)) == 1


def test_a_lost_answer_the_search_cannot_settle_flags_a_person_and_never_creates_again(
    clock: FakeClock,
) -> None:
    """The request timed out before HubSpot processed it: nothing to find, so nobody can tell."""
    emulator = portal(clock)
    connector = hub(emulator, clock)
    call = task_call()
    emulator.inject(Fault(kind="timeout", method="POST", path=TASKS))
    with pytest.raises(OutcomeUnknown):
        connector.execute(call)
    clock.sleep(SETTLE)
    with pytest.raises(OutcomeUnsettled) as raised:
        connector.execute(call)
    assert raised.value.code == "AMBIGUOUS_OUTCOME" and raised.value.retryable is False
    assert sent(emulator, "POST", "/crm/v3/objects/tasks") == 1
    assert tasks_with_key(emulator, call.idempotency_key) == []
    # A person checked and reran it: the search (long settled) finds nothing, so it is created once.
    clock.sleep(600)
    assert connector.execute(call).created is True
    assert len(tasks_with_key(emulator, call.idempotency_key)) == 1


def test_an_index_slower_than_the_window_ends_unsettled_not_duplicated(clock: FakeClock) -> None:
    emulator = portal(clock, index_delay=SETTLE * 3)
    connector = hub(emulator, clock)
    call = task_call()
    emulator.inject(Fault(kind="drop", method="POST", path=TASKS))
    with pytest.raises(OutcomeUnknown):
        connector.execute(call)
    clock.sleep(SETTLE)
    with pytest.raises(OutcomeUnsettled):
        connector.execute(call)
    assert len(tasks_with_key(emulator, call.idempotency_key)) == 1


def test_lookup_after_a_lost_answer_waits_the_window_and_finds_the_task(clock: FakeClock) -> None:
    emulator = portal(clock)
    connector = hub(emulator, clock)
    call = task_call()
    emulator.inject(Fault(kind="drop", method="POST", path=TASKS))
    with pytest.raises(OutcomeUnknown):
        connector.execute(call)
    found = connector.lookup(call)
    assert found is not None and found.created is False
    assert clock.slept == [pytest.approx(SETTLE)]
    assert tasks_with_key(emulator, call.idempotency_key) == [found.ref.id]


def test_two_tasks_holding_one_key_are_a_conflict(clock: FakeClock) -> None:
    emulator = portal(clock, index_delay=0.0)
    call = task_call()
    for _ in range(2):
        response = httpx.Client(transport=emulator.transport()).post(
            f"{API}/crm/v3/objects/tasks",
            headers={"Authorization": "Bearer pat-na1-emulator-0000"},
            json={"properties": {"hs_timestamp": "2026-12-03T12:00:00Z", KEY_PROPERTY: call.idempotency_key}},
        )
        assert response.status_code == 201
    with pytest.raises(Conflict, match="2 HubSpot tasks hold this step's key"):
        hub(emulator, clock).execute(call)


# -- not enabled: NOT_CONFIGURED before any write ------------------------------------------------
def test_a_portal_without_the_key_property_disables_tasks_before_any_write(clock: FakeClock) -> None:
    emulator = portal(clock, key_properties={"deals": {KEY_PROPERTY: True}})
    connector = hub(emulator, clock)
    result = connector.check()
    assert result.guarantees["crm.create_task"] is Guarantee.DISABLED
    assert not result.enabled("crm.create_opportunity")
    [problem] = result.problems("crm.create_task")
    assert KEY_PROPERTY in problem and "tasks" in problem
    with pytest.raises(NotConfigured) as raised:
        connector.execute(task_call())
    assert KEY_PROPERTY in str(raised.value)
    assert all(r.method == "GET" for r in emulator.requests), "nothing was written"


def test_unreadable_leads_refuse_a_lead_update_only(clock: FakeClock) -> None:
    emulator = portal(clock, unreadable=frozenset({"leads"}))
    connector = hub(emulator, clock)
    assert connector.check().enabled("crm.update_field")
    update = StepCall(
        action_intent_id="ai_idem_l",
        tenant_id="acme",
        account_id="1001",
        action_type="crm.update_field",
        step="update_field",
        idempotency_key="ai_idem_l:update_field",
        params={"object": "Lead", "record_id": "4001", "field": "hs_lead_label", "value": "HOT"},
    )
    with pytest.raises(NotConfigured, match="leads"):
        connector.execute(update)


# -- leads are their own object ----------------------------------------------------------------------
def test_a_lead_update_goes_to_the_leads_object(clock: FakeClock) -> None:
    emulator = portal(clock)
    connector = hub(emulator, clock)
    update = StepCall(
        action_intent_id="ai_idem_m",
        tenant_id="acme",
        account_id="1001",
        action_type="crm.update_field",
        step="update_field",
        idempotency_key="ai_idem_m:update_field",
        params={"object": "Lead", "record_id": "4001", "field": "hs_lead_label", "value": "HOT"},
    )
    result = connector.execute(update)
    assert emulator.property_value("leads", "4001", "hs_lead_label") == "HOT"
    assert result.ref == ExternalRef(
        system="hubspot",
        object="lead",
        id="4001",
        url="https://app.hubspot.com/contacts/4471234/record/0-136/4001",
    )
    assert emulator.property_value("contacts", "4001", "hs_lead_label") is None


def test_a_task_related_to_a_lead_is_refused_naming_the_field(clock: FakeClock) -> None:
    connector = hub(portal(clock), clock)
    params = {"subject": "Call", "related_to": {"object": "Lead", "id": "4001"}}
    with pytest.raises(ValidationRejected, match=r"parameters\.related_to\.object: .*Lead"):
        connector.validate("crm.create_task", params)


# -- deal currency: one of the portal's ------------------------------------------------------------
def _deal_call(currency: str) -> StepCall:
    params = {k: v for k, v in OPPORTUNITY_PARAMS.items() if k != "follow_up_task"}
    return StepCall(
        action_intent_id=f"ai_cur_{currency}",
        tenant_id="acme",
        account_id="1001",
        action_type="crm.create_opportunity",
        step="create_opportunity",
        idempotency_key=f"ai_cur_{currency}:create_opportunity",
        params={**params, "currency": currency},
    )


def test_a_currency_the_portal_lacks_is_refused_before_any_write(clock: FakeClock) -> None:
    emulator = portal(clock, currencies=("USD", "GBP"))
    connector = hub(emulator, clock)
    with pytest.raises(ValidationRejected) as raised:
        connector.execute(_deal_call("EUR"))
    assert str(raised.value).startswith("parameters.currency: EUR")
    assert "USD, GBP" in str(raised.value)
    assert all(r.method == "GET" for r in emulator.requests), "nothing was written"
    created = connector.execute(_deal_call("GBP"))
    assert emulator.property_value("deals", created.ref.id, "deal_currency_code") == "GBP"


def test_currencies_are_read_once_per_connector(clock: FakeClock) -> None:
    emulator = portal(clock)
    connector = hub(emulator, clock)
    connector.execute(_deal_call("USD"))
    connector.execute(_deal_call("EUR"))
    assert sent(emulator, "GET", "/account-info/v3/details") == 1
