"""Admission of hostile documents: refused as VALIDATION_FAILED and ledgered the same on both databases."""

from __future__ import annotations

import json
import pickle
import time
from typing import Any

import pytest
from pydantic import TypeAdapter
from sqlmodel import select
from typer.testing import CliRunner

from fulfill import executions
from fulfill.db import transaction
from fulfill.intent import MAX_EXPIRES_AT_EPOCH, MAX_INTENT_BYTES
from fulfill.ledger import verify_chains
from fulfill.settings import DEFAULT_MAX_APPROVAL_TTL, load_settings
from fulfill.states import FailureCode
from fulfill.tables import Execution, LedgerEntry
from surfaces.cli import app
from surfaces.service import ExecutionService
from tasks.admit import Admission, Admitted, Rejected, verify_and_register

SOON = 3600  # seconds: well inside the default approval lifetime


def _soon() -> int:
    return int(time.time()) + SOON


def _refused(admission: Admission) -> Rejected:
    assert isinstance(admission, Rejected), admission
    return admission


def _rejections(engine: Any, tenant_id: str) -> list[LedgerEntry]:
    with transaction(engine) as session:
        query = select(LedgerEntry).where(
            LedgerEntry.tenant_id == tenant_id, LedgerEntry.event_type == "INTENT_REJECTED"
        )
        return list(session.exec(query))


def _no_execution(engine: Any, action_intent_id: str) -> bool:
    with transaction(engine) as session:
        return session.get(Execution, action_intent_id) is None


def _chains_ok(engine: Any, tenant_id: str) -> bool:
    with transaction(engine) as session:
        return all(report.ok for report in verify_chains(session, [tenant_id]))


@pytest.mark.parametrize(
    ("where", "field"),
    [
        (lambda d: d["parameters"].update(subject="Call\x00back"), "parameters.subject"),
        (lambda d: d["parameters"].update({"sub\x00ject": "x"}), "parameters.sub\\x00ject"),
        (lambda d: d["parameters"].update(subject="lone \ud800 surrogate"), "parameters.subject"),
        (lambda d: d["approval"].update(approved_by="jordan\x00@acme.example"), "approval.approved_by"),
        (lambda d: d.update(account_id="\udfff"), "account_id"),
    ],
)
def test_nul_and_lone_surrogates_are_refused_and_ledgered(
    engine: Any, make_intent: Any, tenant: str, where: Any, field: str
) -> None:
    intent = make_intent("internal.create_task", {"title": "Hostile"}, expires_at_epoch=_soon())
    where(intent)

    admission = _refused(verify_and_register(intent))

    assert (admission.admitted, admission.code, admission.field) == (False, "VALIDATION_FAILED", field)
    rows = _rejections(engine, tenant)
    assert len(rows) == 1
    assert rows[0].action_intent_id == intent["action_intent_id"]
    assert rows[0].details["code"] == "VALIDATION_FAILED"
    assert rows[0].details["field"] == field
    reason = rows[0].details["reason"]
    assert reason.startswith(f"{field}: ") and ("NUL character" in reason or "lone surrogate" in reason)
    assert _no_execution(engine, intent["action_intent_id"])
    assert _chains_ok(engine, tenant)


@pytest.mark.parametrize("poison", ["\x00", "\ud800"])
def test_a_poisoned_tenant_or_intent_id_is_still_ledgered(engine: Any, unique: str, poison: str) -> None:
    hostile_id = f"ai_{unique}{poison}" + "z" * 300
    document = {"tenant_id": f"t{poison}x", "action_intent_id": hostile_id, "schema_version": 1}

    admission = _refused(verify_and_register(document))

    assert admission.code == "VALIDATION_FAILED" and admission.field == "tenant_id"
    assert admission.action_intent_id is not None
    assert poison not in admission.action_intent_id
    admission.model_dump_json()  # serialisable (Prefect persists task results as JSON)
    with transaction(engine) as session:
        rows = list(
            session.exec(
                select(LedgerEntry).where(
                    LedgerEntry.tenant_id == "_unknown", LedgerEntry.event_type == "INTENT_REJECTED"
                )
            )
        )
    mine = [r for r in rows if (r.action_intent_id or "").startswith(f"ai_{unique}")]
    assert len(mine) == 1
    replacement = "\ufffd" if poison == "\x00" else "?"
    assert mine[0].action_intent_id == hostile_id.replace(poison, replacement)[:128]


def test_record_rejection_stores_any_text_on_every_backend(engine: Any, tenant: str, unique: str) -> None:
    hostile = "a\x00b\ud800c\udfff" * 5000
    with transaction(engine) as session:
        executions.record_rejection(
            session,
            {"tenant_id": tenant, "action_intent_id": f"ai_{unique}\x00\ud800"},
            code="VALIDATION_FAILED\x00",
            field=hostile,
            reason=hostile,
            actor=hostile,
        )
    [row] = _rejections(engine, tenant)
    details = row.details
    assert details["code"] == "VALIDATION_FAILED\ufffd"
    assert len(details["field"]) <= 256 and len(details["reason"]) <= 500 and len(row.actor) <= 320
    for text in (details["field"], details["reason"], row.actor, row.action_intent_id or ""):
        assert "\x00" not in text
        text.encode("utf-8")  # no lone surrogate left
    assert row.action_intent_id == f"ai_{unique}\ufffd?"
    assert _chains_ok(engine, tenant)


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (b'{"tenant_id": "t", "bad": "\xff\xfe"}', "$", "not valid UTF-8"),
        ('{"schema_version": ' + "9" * 5000 + "}", "schema_version", "5000 digits"),
        ("[" * 10_000 + "]" * 10_000, "$", "nests deeper than 32"),
        ('{"parameters": ' + '{"a": ' * 10_000 + "1" + "}" * 10_001, "$", "nests deeper than 32"),
        ('{"account_id": "\\ud800"}', "account_id", "lone surrogate"),
        ('{"account_id": "a\\u0000"}', "account_id", "NUL"),
        ('{"account_id": "a", "account_id": "b"}', "account_id", "more than once"),
        ('{"expires_at_epoch": NaN}', "expires_at_epoch", "NaN"),
        ("x" * (8 * 1024 * 1024), "$", f"the limit is {MAX_INTENT_BYTES} bytes"),
    ],
    ids=[
        "bad-utf8",
        "5000-digits",
        "deep-array",
        "deep-object",
        "surrogate",
        "nul",
        "dup-key",
        "nan",
        "8MiB",
    ],
)
def test_hostile_text_is_refused_with_its_field_and_ledgered(
    engine: Any, text: str | bytes, field: str, words: str
) -> None:
    before = len(_rejections(engine, "_unknown"))

    admission = _refused(verify_and_register(text))

    assert (admission.admitted, admission.code, admission.field) == (False, "VALIDATION_FAILED", field)
    assert words in (admission.reason or "")
    assert len(_rejections(engine, "_unknown")) == before + 1


def test_refused_text_is_ledgered_under_the_tenant_it_claims(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    intent = make_intent("internal.create_task", {"title": "x"}, expires_at_epoch=_soon())
    text = json.dumps(intent).replace('"title": "x"', '"title": "x\\u0000"')

    admission = _refused(verify_and_register(text.encode()))

    assert (admission.code, admission.field) == ("VALIDATION_FAILED", "parameters.title")
    [row] = _rejections(engine, tenant)
    assert row.action_intent_id == intent["action_intent_id"]


def test_a_clean_text_intent_is_admitted(engine: Any, make_intent: Any) -> None:
    intent = make_intent("internal.create_task", {"title": "As text"}, expires_at_epoch=_soon())
    admission = verify_and_register(json.dumps(intent, ensure_ascii=False).encode())
    assert admission.admitted and admission.created


def test_admission_is_admitted_or_rejected_and_either_survives_serialisation(
    engine: Any, make_intent: Any
) -> None:
    intent = make_intent("internal.create_task", {"title": "Verdicts"}, expires_at_epoch=_soon())
    admitted = verify_and_register(intent)
    assert isinstance(admitted, Admitted)
    assert (admitted.action_intent_id, admitted.tenant_id, admitted.created) == (
        intent["action_intent_id"],
        intent["tenant_id"],
        True,
    )
    assert verify_and_register(intent) == admitted.model_copy(update={"created": False})
    other = make_intent(
        "internal.create_task", {"title": "Other"}, action_intent_id=intent["action_intent_id"]
    )
    conflict = _refused(verify_and_register(other))
    assert (conflict.code, conflict.field) == (FailureCode.CONFLICT, "action_intent_id")
    invalid = _refused(verify_and_register({"schema_version": 1}))
    assert invalid.code is FailureCode.VALIDATION_FAILED and invalid.reason
    verdicts = TypeAdapter(Admission)
    for verdict in (admitted, conflict, invalid):
        assert verdicts.validate_json(verdict.model_dump_json()) == verdict
        assert pickle.loads(pickle.dumps(verdict)) == verdict
    assert json.loads(conflict.model_dump_json())["code"] == "CONFLICT"


# --- approval lifetime (FULFILL_MAX_APPROVAL_TTL) ----------------------------------------------
def test_an_expiry_beyond_the_default_lifetime_is_refused_after_the_signature(
    engine: Any, make_intent: Any, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FULFILL_MAX_APPROVAL_TTL", raising=False)
    assert load_settings().max_approval_ttl == DEFAULT_MAX_APPROVAL_TTL == 2592000
    ok = make_intent(
        "internal.create_task", {"title": "29 days"}, expires_at_epoch=int(time.time()) + 29 * 86400
    )
    late = make_intent(
        "internal.create_task", {"title": "31 days"}, expires_at_epoch=int(time.time()) + 31 * 86400
    )

    assert verify_and_register(ok).admitted
    refused = _refused(verify_and_register(late))

    assert (refused.code, refused.field) == ("VALIDATION_FAILED", "expires_at_epoch")
    assert "FULFILL_MAX_APPROVAL_TTL" in (refused.reason or "")
    assert _no_execution(engine, late["action_intent_id"])
    [row] = _rejections(engine, tenant)
    assert row.action_intent_id == late["action_intent_id"]
    assert row.details["field"] == "expires_at_epoch"


def test_a_forged_long_expiry_is_an_approval_failure_not_a_lifetime_one(
    engine: Any, make_intent: Any
) -> None:
    intent = make_intent("internal.create_task", {"title": "x"}, expires_at_epoch=_soon())
    intent["expires_at_epoch"] = int(time.time()) + 365 * 86400  # edited after approval
    assert _refused(verify_and_register(intent)).code == "APPROVAL_INVALID"


def test_the_lifetime_is_configurable(engine: Any, make_intent: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FULFILL_MAX_APPROVAL_TTL", "60")
    intent = make_intent("internal.create_task", {"title": "x"}, expires_at_epoch=_soon())
    assert _refused(verify_and_register(intent)).field == "expires_at_epoch"
    monkeypatch.setenv("FULFILL_MAX_APPROVAL_TTL", str(2 * SOON))
    assert verify_and_register(intent).admitted


@pytest.mark.parametrize("value", ["0", "-5", "thirty days", "1.5", "9" * 40])
def test_a_bad_lifetime_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("FULFILL_MAX_APPROVAL_TTL", value)
    with pytest.raises(ValueError, match="^FULFILL_MAX_APPROVAL_TTL: must be a positive whole number"):
        load_settings()


def test_a_validly_signed_year_10000_expiry_is_refused(engine: Any, make_intent: Any, tenant: str) -> None:
    for expires in (MAX_EXPIRES_AT_EPOCH, 10**15, MAX_EXPIRES_AT_EPOCH - 1):
        intent = make_intent("internal.create_task", {"title": "Forever"}, expires_at_epoch=expires)
        admission = _refused(verify_and_register(intent))
        assert (admission.code, admission.field) == ("VALIDATION_FAILED", "expires_at_epoch")
        assert _no_execution(engine, intent["action_intent_id"])
    assert len(_rejections(engine, tenant)) == 3


@pytest.mark.parametrize("stored", [MAX_EXPIRES_AT_EPOCH, 9_000_000_000_000_000_000, -(10**15)])
def test_views_never_crash_on_an_out_of_range_stored_expiry(
    engine: Any, make_intent: Any, stored: int
) -> None:
    intent = make_intent("internal.create_task", {"title": "Stored"}, expires_at_epoch=_soon())
    assert verify_and_register(intent).admitted
    with transaction(engine) as session:  # as if written before the schema bound existed
        row = session.get(Execution, intent["action_intent_id"])
        assert row is not None
        row.expires_at_epoch = stored
        session.add(row)

    status = ExecutionService(engine).get_execution_status(intent["action_intent_id"])
    timeline = ExecutionService(engine).get_timeline(intent["action_intent_id"])

    assert status.expires_at == str(stored)
    assert [e.stage for e in timeline.events] == ["decision", "approval"]
    runner = CliRunner()
    for command in (["status"], ["timeline"], ["status", "--json"], ["timeline", "--json"]):
        result = runner.invoke(app, [*command[:1], intent["action_intent_id"], *command[1:]])
        assert result.exit_code == 0, result.output
    shown = runner.invoke(app, ["status", intent["action_intent_id"], "--json"])
    assert json.loads(shown.output)["expires_at"] == str(stored)


@pytest.mark.usefixtures("prefect_server")
def test_a_hand_started_flow_run_refuses_the_same_way(engine: Any, make_intent: Any, tenant: str) -> None:
    # (A lone surrogate cannot get this far: Prefect's client fails to send it as a flow-run parameter.)
    from flows.execute_intent import ExecutionFailed, execute_intent

    intent = make_intent("internal.create_task", {"title": "Hostile"}, expires_at_epoch=_soon())
    intent["parameters"]["title"] = "Hos\x00tile"

    with pytest.raises(ExecutionFailed, match=r"VALIDATION_FAILED: parameters\.title: contains "):
        execute_intent(intent)

    [row] = _rejections(engine, tenant)
    assert row.details["field"] == "parameters.title"
    assert _no_execution(engine, intent["action_intent_id"])
