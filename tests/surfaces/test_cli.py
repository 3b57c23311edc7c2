"""The command line, as a user runs it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from surfaces.cli import app
from tests.conftest import KEYS, REPO, VECTORS

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
    rows = json.loads(runner.invoke(app, ["ledger", "show", intent["action_intent_id"], "--json"]).output)
    assert (
        rows[0]["event_type"] == "INTENT_RECEIVED"
        and rows[-1]["action_intent_id"] == intent["action_intent_id"]
    )
    listed = json.loads(runner.invoke(app, ["executions", "--tenant", intent["tenant_id"], "--json"]).output)
    assert [i["action_intent_id"] for i in listed["items"]] == [intent["action_intent_id"]]


def test_controls_set_and_list(database_url: str, tenant: str) -> None:
    runner.invoke(app, ["tenant", "set", tenant, "--name", "Acme"])
    result = runner.invoke(app, ["controls", "set", "tenant", tenant, "--disabled", "--reason", "incident"])
    assert result.exit_code == 0 and result.stderr == ""
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
    outcomes = json.loads(result.stdout)  # only the JSON: progress goes to stderr
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


# --- hostile documents: one clear line and exit 1, never a traceback -----------------------------
_VECTOR = (VECTORS / "valid-crm-create-task.json").read_bytes()
HOSTILE = {
    "nul": (_VECTOR.replace(b'"priority": "High"', b'"priority": "Hi\\u0000gh"'), "parameters.priority"),
    "surrogate": (_VECTOR.replace(b'"priority": "High"', b'"priority": "\\ud800"'), "parameters.priority"),
    "bad-utf8": (_VECTOR.replace(b"Follow up", b"Follow \xff\xfe"), "$"),
    "5000-digits": (_VECTOR.replace(b"4102444800", b"9" * 5000), "expires_at_epoch"),
    "deep": (b"[" * 10_000 + b"]" * 10_000, "$"),
    "year-10000": (_VECTOR.replace(b"4102444800", b"253402300800"), "expires_at_epoch"),
}


def _one_line(result: Any) -> str:
    """The command failed cleanly (exit 1, no exception) and said exactly one line."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert len(lines) == 1, lines
    return str(lines[0])


@pytest.mark.usefixtures("keys_env")
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_intent_verify_refuses_a_hostile_document_in_one_line(name: str, tmp_path: Path) -> None:
    data, field = HOSTILE[name]
    path = tmp_path / "hostile.json"
    path.write_bytes(data)
    assert _one_line(runner.invoke(app, ["intent", "verify", str(path)])).startswith(
        f"invalid: VALIDATION_FAILED: {field}: "
    )
    from_stdin = runner.invoke(app, ["intent", "verify", "-"], input=data)
    assert _one_line(from_stdin).startswith(f"invalid: VALIDATION_FAILED: {field}: ")


@pytest.mark.usefixtures("keys_env")
def test_intent_verify_does_not_apply_the_approval_lifetime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FULFILL_MAX_APPROVAL_TTL", "60")  # the vector expires in 2100
    result = runner.invoke(app, ["intent", "verify", str(VECTORS / "valid-crm-create-task.json")])
    assert (result.exit_code, result.output.strip()) == (0, "valid")


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    for command in (["intent", "verify"], ["execute"], ["plan"]):
        line = _one_line(runner.invoke(app, [*command, str(tmp_path / "missing.json")]))
        assert line.startswith("cannot read ") and "missing.json" in line


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_plan_refuses_a_hostile_document_in_one_line(name: str, tmp_path: Path) -> None:
    data, field = HOSTILE[name]
    path = tmp_path / "hostile.json"
    path.write_bytes(data)
    result = runner.invoke(app, ["plan", str(path)])
    # The loader's refusals are "invalid: …"; the schema's (year 10000) come from the planner.
    prefix = "cannot plan" if name == "year-10000" else "invalid"
    assert _one_line(result).startswith(f"{prefix}: VALIDATION_FAILED: {field}: ")
    assert result.stdout == ""


def _rejected_rows(tenant_id: str) -> list[Any]:
    from sqlmodel import select

    from fulfill.db import get_engine, transaction
    from fulfill.tables import LedgerEntry

    with transaction(get_engine()) as session:
        query = select(LedgerEntry).where(
            LedgerEntry.tenant_id == tenant_id, LedgerEntry.event_type == "INTENT_REJECTED"
        )
        return [(row.action_intent_id, row.details) for row in session.exec(query)]


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_execute_refuses_a_hostile_document_and_logs_it_outside_the_ledger(
    database_url: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FULFILL_SECURITY_LOG_PER_MINUTE", "100000")  # the shared database's other tests
    data, field = HOSTILE[name]
    path = tmp_path / "hostile.json"
    path.write_bytes(data)
    tenant = "_unknown" if field == "$" else "acme"  # the vector's tenant, when it can be read

    def logged() -> list[Any]:
        shown = runner.invoke(app, ["security", "log", "--tenant", tenant, "--json", "--limit", "1000"])
        return [r for r in json.loads(shown.stdout) if r["field"] == field]

    before, chained = len(logged()), len(_rejected_rows(tenant))

    result = runner.invoke(app, ["execute", str(path)])

    assert _one_line(result).startswith(f"rejected: VALIDATION_FAILED: {field}: ")
    assert result.stdout == ""
    assert len(_rejected_rows(tenant)) == chained  # no signature verified: nothing in a tenant's chain
    rows = logged()
    assert len(rows) == before + 1 and rows[0]["code"] == "VALIDATION_FAILED"


def test_execute_refuses_a_signed_approval_that_outlives_the_limit(
    database_url: str, make_intent: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FULFILL_MAX_APPROVAL_TTL", raising=False)
    intent = make_intent("internal.log_note", {"body": "Forever"}, expires_at_epoch=253402300799)
    path = tmp_path / "intent.json"
    path.write_text(json.dumps(intent))

    line = _one_line(runner.invoke(app, ["execute", str(path)]))

    assert line.startswith("rejected: VALIDATION_FAILED: expires_at_epoch: is ")
    assert "FULFILL_MAX_APPROVAL_TTL" in line
    assert [details["field"] for _, details in _rejected_rows(intent["tenant_id"])] == ["expires_at_epoch"]
    assert _one_line(runner.invoke(app, ["status", intent["action_intent_id"]])).startswith("not found")


# --- user errors: one line on stderr, a non-zero exit, never a traceback (issue 8) ---------------
def _fails_in_one_line(result: Any, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    return str(lines[0])


@pytest.mark.parametrize(
    "command",
    [
        ["status", "no-such-intent-0000"],
        ["timeline", "no-such-intent-0000"],
        ["cancel", "no-such-intent-0000"],
        ["rerun", "no-such-intent-0000"],
        ["ledger", "show", "no-such-intent-0000"],
    ],
    ids=lambda c: c[0] if c[0] != "ledger" else "ledger-show",
)
def test_an_unknown_id_is_one_line(database_url: str, command: list[str]) -> None:
    assert _fails_in_one_line(runner.invoke(app, command)) == "not found: no-such-intent-0000"


def test_an_unconfigured_tenant_is_one_line(database_url: str, tenant: str) -> None:
    line = _fails_in_one_line(runner.invoke(app, ["tenant", "show", tenant]))
    assert line == f"not found: tenant {tenant!r} is not configured"


def test_tenant_set_then_show_and_a_bad_provider(database_url: str, tenant: str) -> None:
    configured = runner.invoke(app, ["tenant", "set", tenant, "--crm", "hubspot", "--crm-block", "hs"])
    assert configured.exit_code == 0, configured.output
    shown = json.loads(runner.invoke(app, ["tenant", "show", tenant]).stdout)
    assert (shown["crm_provider"], shown["crm_block"]) == ("hubspot", "hs")
    line = _fails_in_one_line(runner.invoke(app, ["tenant", "set", tenant, "--crm", "salesfrce"]), 2)
    assert line.startswith("invalid argument: CRM provider must be one of salesforce, hubspot")


def test_controls_refuse_a_bad_scope_and_an_unknown_action_type(database_url: str) -> None:
    line = _fails_in_one_line(runner.invoke(app, ["controls", "set", "no-such-scope", "x", "--disabled"]), 2)
    assert line == "invalid argument: scope must be one of tenant, action_type, not 'no-such-scope'"
    line = _fails_in_one_line(
        runner.invoke(app, ["controls", "set", "action_type", "crm.create_tsk", "--disabled"]), 2
    )
    assert "unknown action type 'crm.create_tsk' (did you mean 'crm.create_task'?)" in line
    listed = json.loads(runner.invoke(app, ["controls", "list", "--json"]).stdout)
    assert not [s for s in listed["switches"] if s["key"] in ("x", "crm.create_tsk")]


def test_controls_warn_about_a_tenant_nobody_knows(database_url: str, tenant: str) -> None:
    runner.invoke(app, ["tenant", "set", tenant])
    result = runner.invoke(app, ["controls", "set", "tenant", tenant + "x", "--disabled"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"warning: tenant {tenant + 'x'!r} is not configured and has no executions "
        f"(did you mean {tenant!r}?); the switch is set, check the spelling"
    ]


def test_a_database_without_schema_says_to_upgrade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FULFILL_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("FULFILL_DATABASE_URL", raising=False)
    for command in (
        ["status", "no-such-intent-0000"],
        ["rerun", "no-such-intent-0000"],
        ["ledger", "verify"],
    ):
        line = _fails_in_one_line(runner.invoke(app, command))
        assert line.startswith("the database schema is not at the current revision: it has no fulfill schema")
        assert line.endswith("run `fulfill db upgrade`")


def test_an_unreachable_database_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FULFILL_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nothing")
    assert _fails_in_one_line(runner.invoke(app, ["status", "x"])).startswith("database unavailable: ")


def test_a_bad_setting_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FULFILL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FULFILL_LATE_COMMIT_SECONDS", "soon")
    line = _fails_in_one_line(runner.invoke(app, ["status"]))
    assert line.startswith("configuration: FULFILL_LATE_COMMIT_SECONDS: ")


def test_execute_without_trusted_keys_is_one_line(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FULFILL_APPROVAL_KEYS")
    line = _fails_in_one_line(runner.invoke(app, ["execute", str(VECTORS / "valid-crm-create-task.json")]))
    assert line.startswith("configuration: no trusted approval keys: set FULFILL_APPROVAL_KEYS")
    monkeypatch.setenv("FULFILL_APPROVAL_KEYS", str(VECTORS / "no-such-keys.json"))
    line = _fails_in_one_line(runner.invoke(app, ["execute", str(VECTORS / "valid-crm-create-task.json")]))
    assert line.startswith("configuration: FULFILL_APPROVAL_KEYS: cannot be used: ")


@pytest.mark.usefixtures("prefect_server")
def test_rerun_exits_non_zero_until_the_execution_succeeds(
    database_url: str, make_intent: Any, tenant: str, tmp_path: Path
) -> None:
    runner.invoke(app, ["controls", "set", "tenant", tenant, "--disabled", "--reason", "incident"])
    intent = make_intent("internal.log_note", {"body": "Held, then rerun"})
    path = tmp_path / "intent.json"
    path.write_text(json.dumps(intent))
    executed = runner.invoke(app, ["execute", str(path), "--json"])
    assert executed.exit_code == 1 and json.loads(executed.stdout)["status"] == "FAILED"

    held = runner.invoke(app, ["rerun", intent["action_intent_id"], "--json"])
    assert held.exit_code == 1 and json.loads(held.stdout)["failure"]["code"] == "KILL_SWITCH"

    runner.invoke(app, ["controls", "set", "tenant", tenant, "--enabled"])
    released = runner.invoke(
        app, ["rerun", intent["action_intent_id"], "--json", "--actor", "sam@acme.example"]
    )
    assert released.exit_code == 0, released.output
    assert json.loads(released.stdout)["status"] == "SUCCEEDED"
    again = _fails_in_one_line(runner.invoke(app, ["rerun", intent["action_intent_id"]]))
    assert again == "conflict: only a FAILED execution can be rerun; this one is SUCCEEDED"
    ledger_rows = runner.invoke(app, ["ledger", "show", intent["action_intent_id"], "--json"])
    requested = [r for r in json.loads(ledger_rows.stdout) if r["event_type"] == "RERUN_REQUESTED"]
    assert [r["actor"] for r in requested] == ["operator", "sam@acme.example"]


def test_importing_the_cli_changes_no_environment() -> None:
    import subprocess
    import sys

    probe = "import os; before = dict(os.environ); import surfaces.cli; print(dict(os.environ) == before)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DO_NOT_TRACK"))}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "True"


def test_services_log_their_runs_to_prefect_and_in_process_commands_stay_quiet() -> None:
    from surfaces.cli import default_prefect_logging_level

    assert default_prefect_logging_level(["up"]) == "INFO"
    assert default_prefect_logging_level(["worker", "--pool", "fulfill", "--limit", "2"]) == "INFO"
    assert default_prefect_logging_level(["demo"]) == "CRITICAL"
    assert default_prefect_logging_level(["execute", "intent.json"]) == "CRITICAL"
    assert default_prefect_logging_level([]) == "CRITICAL"
