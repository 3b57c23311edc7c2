"""One conformance suite, parametrised over every connector and action step.

Each check is the same for every provider: idempotent writes, error classification,
lookup after a lost response, compensation, and pure validation naming the field.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

import httpx
import pytest

import tests.connectors as connector_tests
from blocks.auth import TOKEN_REQUEST
from connectors.base import StepCall, idempotency_key
from connectors.errors import ConnectorError, TransientError, ValidationRejected
from tests.connectors.conformance import ConformanceCase, ConformanceEnv, ErrorCase


def _all_cases() -> list[ConformanceCase]:
    cases: list[ConformanceCase] = []
    for module in pkgutil.iter_modules(connector_tests.__path__):
        if module.name.startswith("cases_"):
            cases.extend(importlib.import_module(f"tests.connectors.{module.name}").CASES)
    return cases


CASES = _all_cases()
ERROR_CASES = [
    pytest.param(case, error, id=f"{case.id}-{error.id or error.status}")
    for case in CASES
    for error in case.error_cases
]


def _call(case: ConformanceCase, env: ConformanceEnv, intent_id: str = "ai_conf_0001") -> StepCall:
    return StepCall(
        action_intent_id=intent_id,
        tenant_id="acme",
        account_id=case.account_id,
        action_type=case.action_type,
        step=case.step,
        idempotency_key=idempotency_key(intent_id, case.step),
        params=case.params,
        prior=case.prior(env),
    )


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> ConformanceCase:
    return request.param  # type: ignore[no-any-return]


def test_there_is_a_case_for_every_connector() -> None:
    systems = {case.id.split(":")[0] for case in CASES}
    assert {"salesforce", "hubspot", "google_calendar", "internal"} <= systems


def test_same_key_twice_makes_one_effect(case: ConformanceCase, tmp_path: Path) -> None:
    env = case.make_env(tmp_path)
    call = _call(case, env)
    before = env.observe()
    first = env.connector.execute(call)
    after_one = env.observe()
    second = env.connector.execute(call)
    assert after_one != before, "the step must have an effect"
    assert env.observe() == after_one, "a repeated call with the same key must not add a second effect"
    assert second.ref.id == first.ref.id


def test_lookup_finds_a_write_whose_response_was_lost(case: ConformanceCase, tmp_path: Path) -> None:
    env = case.make_env(tmp_path)
    call = _call(case, env)
    assert env.connector.lookup(call) is None
    env.drop_next_write()
    with pytest.raises(TransientError):
        env.connector.execute(call)
    committed = env.observe()
    found = env.connector.lookup(call)
    assert found is not None, "lookup must find the committed write"
    retried = env.connector.execute(call)
    assert retried.ref.id == found.ref.id
    assert env.observe() == committed, "the retry after a lost response must not duplicate"


def test_compensate_undoes_and_is_idempotent(case: ConformanceCase, tmp_path: Path) -> None:
    env = case.make_env(tmp_path)
    call = _call(case, env)
    before = env.observe()
    result = env.connector.execute(call)
    env.connector.compensate(call, result)
    assert env.observe() == before
    env.connector.compensate(call, result)
    assert env.observe() == before


def test_validate_rejects_bad_parameters_naming_the_field(case: ConformanceCase, tmp_path: Path) -> None:
    env = case.make_env(tmp_path)
    with pytest.raises(ValidationRejected) as raised:
        env.connector.validate(case.action_type, case.bad_params)
    assert case.bad_field in str(raised.value)
    env.connector.validate(case.action_type, case.params)


def test_steps_plan_includes_the_step(case: ConformanceCase, tmp_path: Path) -> None:
    env = case.make_env(tmp_path)
    assert case.step in env.connector.steps(case.action_type, case.params)


@pytest.mark.parametrize(("case", "error"), ERROR_CASES)
def test_documented_errors_are_classified(case: ConformanceCase, error: ErrorCase, tmp_path: Path) -> None:
    env = case.make_env(tmp_path)
    call = _call(case, env)
    env.fail_next(error.status, error.body, error.headers)
    with pytest.raises(ConnectorError) as raised:
        env.connector.execute(call)
    assert isinstance(raised.value, error.expected), f"{type(raised.value).__name__} is not {error.expected}"
    assert raised.value.retryable == error.expected.retryable


def test_describe_lists_exactly_what_execute_sends(case: ConformanceCase, tmp_path: Path) -> None:
    env = case.make_env(tmp_path)
    call = _call(case, env)
    described = env.connector.describe(call)
    emulator = getattr(env, "emulator", None)
    if emulator is None:  # internal records: no HTTP; the dry-run tests compare its rows
        assert [d.write for d in described] == [True]
        return
    env.connector.execute(call)
    sent = [r for r in emulator.requests if not r.extensions.get(TOKEN_REQUEST)]
    assert [(r.method, r.url) for r in sent] == [
        (d.method, httpx.URL(d.url, params=d.params or None)) for d in described
    ]
    for request, description in zip(sent, described, strict=True):
        body = json.loads(request.content) if request.content else None
        assert body == description.body, f"{case.id}: {description.purpose}"
        is_search = request.method == "POST" and request.url.path.endswith("/search")  # HubSpot's CRM search
        assert description.write == (request.method != "GET" and not is_search)
