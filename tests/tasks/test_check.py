"""The tenant self-check (``tasks.check``) and ``fulfill tenant check``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from typer.testing import CliRunner

from connectors.base import ConnectorCheck, Guarantee, Precondition
from connectors.errors import AuthenticationFailed
from fulfill import tenants
from fulfill.db import transaction
from surfaces.cli import app
from tasks import check

runner = CliRunner()


class _Checked:
    """A connector whose org lacks the External ID on Task (crm.create_task is not enabled)."""

    system = "salesforce"

    def check(self) -> ConnectorCheck:
        missing = Precondition(
            name="Task.Fulfill_Intent_Key__c is an External ID and Unique",
            ok=False,
            action_types=frozenset({"crm.create_task"}),
            fix="Create the Text(64) field Fulfill_Intent_Key__c on Task, marked External ID and Unique.",
        )
        guarantees: Mapping[str, Guarantee] = {
            "crm.create_task": Guarantee.DISABLED,
            "crm.create_opportunity": Guarantee.PROVIDER_KEY,
            "crm.update_field": Guarantee.PROVIDER_KEY,
        }
        return ConnectorCheck(system=self.system, preconditions=(missing,), guarantees=guarantees)


class _Unreachable:
    def check(self) -> ConnectorCheck:
        raise AuthenticationFailed("token endpoint answered 400 invalid_client")


@pytest.fixture
def configured(engine: Any, tenant: str) -> str:
    with transaction(engine) as session:
        tenants.configure(session, tenant, actor="test", crm_provider="salesforce", crm_block="sf")
    return tenant


def test_a_failed_precondition_disables_its_action_type_and_says_what_to_set_up(
    configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved: list[str] = []
    real = check.resolve_connector

    def resolve(tenant_id: str, action_type: str) -> Any:
        resolved.append(action_type)
        return _Checked() if action_type.startswith("crm.") else real(tenant_id, action_type)

    monkeypatch.setattr(check, "resolve_connector", resolve)
    crm, calendar, internal = check.check_tenant(configured)

    assert crm.system == "salesforce" and not crm.ok and crm.disabled == ["crm.create_task"]
    assert crm.fixes == {"crm.create_task": [_Checked().check().preconditions[0].fix]}
    assert crm.guarantees["crm.create_opportunity"] is Guarantee.PROVIDER_KEY
    assert not calendar.configured and calendar.disabled == ["calendar.draft_meeting"]
    assert "calendar.draft_meeting" not in resolved, "an unconfigured calendar is not contacted"
    assert internal.system == "internal" and internal.ok


def test_an_unreachable_provider_disables_its_family_by_error_class(
    configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(check, "resolve_connector", lambda tenant_id, action_type: _Unreachable())
    (crm,) = check.check_tenant(configured, ("crm",))
    assert crm.error_class == "AuthenticationFailed" and "invalid_client" not in (crm.error or "")
    assert set(crm.disabled) == {"crm.create_task", "crm.create_opportunity", "crm.update_field"}


def test_the_cli_prints_the_guarantee_per_action_type_and_exits_1_on_a_failed_check(
    configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = check.resolve_connector

    def resolve(tenant_id: str, action_type: str) -> Any:
        return _Checked() if action_type.startswith("crm.") else real(tenant_id, action_type)

    monkeypatch.setattr(check, "resolve_connector", resolve)
    shown = runner.invoke(app, ["tenant", "check", configured, "--json"])
    assert shown.exit_code == 1, shown.output
    by_family = {c["family"]: c for c in json.loads(shown.stdout)}
    assert by_family["crm"]["guarantees"]["crm.create_opportunity"] == "exactly once by a provider key"
    assert by_family["crm"]["disabled"] == ["crm.create_task"]
    assert by_family["internal"]["ok"] is True, "fulfill's own keys need nothing set up"
    assert by_family["calendar"]["configured"] is False

    table = runner.invoke(app, ["tenant", "check", configured])
    assert "Fulfill_Intent_Key__c" in table.stdout and "not enabled" in table.stdout


def test_checking_an_unknown_tenant_is_one_line(database_url: str) -> None:
    result = runner.invoke(app, ["tenant", "check", "no-such-tenant"])
    assert (
        result.exit_code == 1
        and result.stderr.strip() == "not found: tenant 'no-such-tenant' is not configured"
    )
