"""The command line, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fulfill.cli import app
from tests.conftest import KEYS, VECTORS

runner = CliRunner()


@pytest.fixture
def keys_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FULFILL_APPROVAL_KEYS", str(VECTORS / "keys.json"))


@pytest.mark.usefixtures("keys_env")
@pytest.mark.parametrize("path", sorted(VECTORS.glob("*id-*.json")), ids=lambda p: p.name)
def test_intent_verify_on_every_vector(path: Path) -> None:
    result = runner.invoke(app, ["intent", "verify", str(path)])
    if path.name.startswith("valid-"):
        assert (result.exit_code, result.output.strip()) == (0, "valid")
    else:
        assert result.exit_code == 1
        assert result.output.startswith("invalid: APPROVAL_INVALID: ")


def test_intent_verify_without_trusted_keys_refuses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FULFILL_APPROVAL_KEYS", raising=False)
    monkeypatch.setenv("FULFILL_DATA_DIR", str(tmp_path))
    result = runner.invoke(app, ["intent", "verify", str(VECTORS / "valid-crm-create-task.json")])
    assert result.exit_code == 1 and "FULFILL_APPROVAL_KEYS" in result.output


@pytest.mark.usefixtures("keys_env")
def test_intent_verify_names_the_bad_field(tmp_path: Path) -> None:
    document = json.loads((VECTORS / "valid-crm-create-task.json").read_text())
    document["parameters"]["priority"] = "Urgent"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))
    result = runner.invoke(app, ["intent", "verify", str(bad)])
    assert result.exit_code == 1 and "parameters.priority" in result.output
    bad.write_text("{not json")
    result = runner.invoke(app, ["intent", "verify", str(bad)])
    assert result.exit_code == 1 and "not valid JSON" in result.output


@pytest.mark.usefixtures("keys_env")
def test_intent_sign_produces_a_verifiable_intent(tmp_path: Path) -> None:
    unsigned = json.loads((VECTORS / "invalid-missing-signature.json").read_text())
    unsigned["parameters"]["subject"] = "Re-signed for a test set-up"
    source = tmp_path / "unsigned.json"
    source.write_text(json.dumps(unsigned))
    key = KEYS["keys"][0]
    signed = runner.invoke(
        app, ["intent", "sign", str(source), "--key-seed", key["private_key_seed_b64url_TEST_ONLY"]]
    )
    assert signed.exit_code == 0
    target = tmp_path / "signed.json"
    target.write_text(signed.output)
    assert runner.invoke(app, ["intent", "verify", str(target)]).output.strip() == "valid"


@pytest.mark.usefixtures("prefect_server")
def test_execute_then_read_status_timeline_ledger_as_json(
    database_url: str, make_intent: Any, tmp_path: Path
) -> None:
    intent = make_intent("internal.log_note", {"body": "From the CLI", "title": "CLI note"})
    path = tmp_path / "intent.json"
    path.write_text(json.dumps(intent))
    executed = runner.invoke(app, ["execute", str(path), "--json"])
    assert executed.exit_code == 0, executed.output
    assert json.loads(executed.output)["status"] == "SUCCEEDED"
    status = json.loads(runner.invoke(app, ["status", intent["action_intent_id"], "--json"]).output)
    assert status["external_refs"][0]["object"] == "note"
    timeline = json.loads(runner.invoke(app, ["timeline", intent["action_intent_id"], "--json"]).output)
    assert [e["stage"] for e in timeline["events"]][-1] == "outcome"
    other = runner.invoke(app, ["status", intent["action_intent_id"], "--tenant", "someone-else"])
    assert other.exit_code == 1 and "not found" in other.output
    chains = json.loads(
        runner.invoke(app, ["ledger", "verify", "--tenant", intent["tenant_id"], "--json"]).output
    )
    assert chains[0]["ok"] is True
    listed = json.loads(runner.invoke(app, ["executions", "--tenant", intent["tenant_id"], "--json"]).output)
    assert [i["action_intent_id"] for i in listed["items"]] == [intent["action_intent_id"]]


def test_controls_set_and_list(database_url: str, tenant: str) -> None:
    assert (
        runner.invoke(
            app, ["controls", "set", "tenant", tenant, "--disabled", "--reason", "incident"]
        ).exit_code
        == 0
    )
    listed = json.loads(runner.invoke(app, ["controls", "list", "--json"]).output)
    mine = [s for s in listed["switches"] if s["key"] == tenant]
    assert mine and mine[0]["enabled"] is False and mine[0]["reason"] == "incident"
    assert listed["emergency_stop"] is False


@pytest.mark.usefixtures("prefect_server")
def test_the_readme_demo_runs_every_scenario_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FULFILL_DATA_DIR", str(tmp_path / "demo"))
    monkeypatch.delenv("FULFILL_DATABASE_URL", raising=False)
    monkeypatch.delenv("FULFILL_APPROVAL_KEYS", raising=False)
    result = runner.invoke(app, ["demo", "--json"])
    assert result.exit_code == 0, result.output
    outcomes = json.loads(result.output[result.output.index("[\n") :])
    by_title = {o["scenario"]: o for o in outcomes}
    assert [o["status"] for o in outcomes] == [
        "SUCCEEDED",
        "SUCCEEDED",
        "SUCCEEDED",
        "SUCCEEDED",
        "FAILED",
        "SUCCEEDED",
        "SUCCEEDED",
        "SUCCEEDED",
        "FAILED",
        "EXPIRED",
        "REJECTED",
    ]
    assert by_title["Salesforce task, one 503 then OK"]["attempts"] == 2
    assert by_title["Salesforce opportunity + follow-up rejected"]["failure"]["compensation"] == "COMPENSATED"
    assert (
        by_title["Salesforce update, record changed since approval"]["failure"]["code"]
        == "STALE_PRECONDITION"
    )
    assert by_title["tampered after approval"]["failure"]["code"] == "APPROVAL_INVALID"
    # The data stays where `fulfill status` finds it, from a new invocation.
    status = runner.invoke(app, ["status", by_title["internal task"]["action_intent_id"], "--json"])
    assert json.loads(status.output)["status"] == "SUCCEEDED"
    assert runner.invoke(app, ["ledger", "verify"]).exit_code == 0
