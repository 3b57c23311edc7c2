"""Admission of hostile documents: refused as VALIDATION_FAILED and recorded the same on both databases.

A refusal whose approval signature verified is ledgered in the tenant's chain; one nobody
authenticated goes to the security log only — never into a tenant's chain or timeline.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import TypeAdapter
from sqlmodel import col, select
from typer.testing import CliRunner

from fulfill import executions
from fulfill.db import transaction
from fulfill.intent import MAX_EXPIRES_AT_EPOCH, MAX_INTENT_BYTES
from fulfill.ledger import verify_chains
from fulfill.settings import DEFAULT_MAX_APPROVAL_TTL, load_settings
from fulfill.states import FailureCode
from fulfill.tables import Execution, LedgerEntry, SecurityEvent
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
        return list(session.exec(query.order_by(col(LedgerEntry.seq))))


def _chain(engine: Any, tenant_id: str) -> list[LedgerEntry]:
    with transaction(engine) as session:
        query = select(LedgerEntry).where(LedgerEntry.tenant_id == tenant_id)
        return list(session.exec(query.order_by(col(LedgerEntry.seq))))


def _logged(engine: Any, **where: str) -> list[SecurityEvent]:
    with transaction(engine) as session:
        query = select(SecurityEvent)
        for name, value in where.items():
            query = query.where(getattr(SecurityEvent, name) == value)
        return list(session.exec(query.order_by(SecurityEvent.id)))  # type: ignore[arg-type]


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
def test_nul_and_lone_surrogates_are_refused_and_logged_apart(
    engine: Any, make_intent: Any, tenant: str, where: Any, field: str
) -> None:
    intent = make_intent("internal.create_task", {"title": "Hostile"}, expires_at_epoch=_soon())
    where(intent)  # after signing: nobody authenticated this document

    admission = _refused(verify_and_register(intent))

    assert (admission.admitted, admission.code, admission.field) == (False, "VALIDATION_FAILED", field)
    assert _chain(engine, tenant) == []
    [row] = _logged(engine, claimed_tenant_id=tenant)
    assert row.claimed_intent_id == intent["action_intent_id"]
    assert (row.code, row.field, row.count) == ("VALIDATION_FAILED", field, 1)
    assert row.reason.startswith(f"{field}: ")
    assert "NUL character" in row.reason or "lone surrogate" in row.reason
    assert _no_execution(engine, intent["action_intent_id"])


@pytest.mark.parametrize("poison", ["\x00", "\ud800"])
def test_a_poisoned_tenant_or_intent_id_is_still_logged(engine: Any, unique: str, poison: str) -> None:
    hostile_id = f"ai_{unique}{poison}" + "z" * 300
    document = {"tenant_id": f"t{poison}x", "action_intent_id": hostile_id, "schema_version": 1}

    admission = _refused(verify_and_register(document))

    assert admission.code == "VALIDATION_FAILED" and admission.field == "tenant_id"
    assert admission.action_intent_id is not None
    assert poison not in admission.action_intent_id
    admission.model_dump_json()  # serialisable (Prefect persists task results as JSON)
    rows = _logged(engine, claimed_tenant_id="_unknown")
    mine = [r for r in rows if (r.claimed_intent_id or "").startswith(f"ai_{unique}")]
    assert len(mine) == 1
    replacement = "\ufffd" if poison == "\x00" else "?"
    assert mine[0].claimed_intent_id == hostile_id.replace(poison, replacement)[:128]
    assert not [
        r for r in _rejections(engine, "_unknown") if (r.action_intent_id or "").startswith(f"ai_{unique}")
    ]


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
        ('{"parameters": ' + "[" * 40 + "]" * 40 + "}", "parameters" + ".0" * 31, "nests deeper than 32"),
        (
            '{"parameters": ' + '{"a": ' * 40 + "1" + "}" * 41,
            "parameters" + ".a" * 31,
            "nests deeper than 32",
        ),
        ("[" * 10_000 + "]" * 10_000, "$", "more than 1000 values and containers"),
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
        "10000-levels",
        "surrogate",
        "nul",
        "dup-key",
        "nan",
        "8MiB",
    ],
)
def test_hostile_text_is_refused_with_its_field_and_logged(
    engine: Any, text: str | bytes, field: str, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FULFILL_SECURITY_LOG_PER_MINUTE", "100000")  # the shared database's other tests
    before = len(_rejections(engine, "_unknown"))
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    earlier = len(_logged(engine, document_sha256=digest.hexdigest()))  # PostgreSQL's database outlives a run

    admission = _refused(verify_and_register(text))

    assert (admission.admitted, admission.code, admission.field) == (False, "VALIDATION_FAILED", field)
    assert words in (admission.reason or "")
    assert len(_rejections(engine, "_unknown")) == before
    [row] = _logged(engine, document_sha256=digest.hexdigest())[earlier:]
    assert (row.claimed_tenant_id, row.field) == ("_unknown", field)


def test_refused_text_is_logged_with_the_tenant_it_claims_outside_its_chain(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    intent = make_intent("internal.create_task", {"title": "x"}, expires_at_epoch=_soon())
    text = json.dumps(intent).replace('"title": "x"', '"title": "x\\u0000"')

    admission = _refused(verify_and_register(text.encode()))

    assert (admission.code, admission.field) == ("VALIDATION_FAILED", "parameters.title")
    assert _chain(engine, tenant) == []
    [row] = _logged(engine, claimed_tenant_id=tenant)
    assert row.claimed_intent_id == intent["action_intent_id"]
    assert row.key_id == intent["approval"]["key_id"]


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

    assert _chain(engine, tenant) == []
    [row] = _logged(engine, claimed_tenant_id=tenant)
    assert row.field == "parameters.title"
    assert _no_execution(engine, intent["action_intent_id"])


# --- forgeries never write into a tenant's chain or timeline (issue 11.5) ------------------------
@pytest.fixture(autouse=True)
def _generous_security_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """The PostgreSQL database is shared by the whole session: keep other tests' refusals from rate-limiting these."""
    monkeypatch.setenv("FULFILL_SECURITY_LOG_PER_MINUTE", "100000")


def _forge(intent: dict[str, Any], **approval: Any) -> dict[str, Any]:
    forged = json.loads(json.dumps(intent))
    forged["approval"].update(approval)
    return forged


@pytest.mark.parametrize(
    "forgery",
    [
        pytest.param({"signature": "A" * 86}, id="bad-signature"),
        pytest.param({"key_id": "Mallory was here: call +1-555-0100 " * 20}, id="unknown-key"),
        pytest.param({"signature": ""}, id="no-signature"),
    ],
)
def test_a_forgery_adds_nothing_to_the_tenants_chain_or_its_real_intents_timeline(
    engine: Any, make_intent: Any, tenant: str, forgery: dict[str, Any]
) -> None:
    real = make_intent("internal.create_task", {"title": "Real"}, expires_at_epoch=_soon())
    assert verify_and_register(real).admitted
    service = ExecutionService(engine)
    chain_before = [(r.seq, r.row_hash) for r in _chain(engine, tenant)]
    timeline_before = service.get_timeline(real["action_intent_id"])

    forged = _forge(real, **forgery)
    forged["parameters"]["title"] = "Forged"
    admission = _refused(verify_and_register(forged))

    # (an oversize key_id or an empty signature is refused by the schema, before the signature check)
    assert admission.code in ("APPROVAL_INVALID", "VALIDATION_FAILED")
    assert [(r.seq, r.row_hash) for r in _chain(engine, tenant)] == chain_before
    assert service.get_timeline(real["action_intent_id"]) == timeline_before
    assert "Mallory" not in service.get_timeline(real["action_intent_id"]).model_dump_json()
    assert _chains_ok(engine, tenant)
    [row] = _logged(engine, claimed_intent_id=real["action_intent_id"])
    assert (row.code, row.claimed_tenant_id, row.count) == (admission.code, tenant, 1)
    assert row.key_id is not None and len(row.key_id) <= 64
    assert len(row.reason) <= 500


def test_a_forgery_through_the_service_and_the_cli_adds_nothing_to_the_chain(
    engine: Any, make_intent: Any, tenant: str, tmp_path: Any
) -> None:
    from surfaces.service import IntentRejected

    real = make_intent("internal.create_task", {"title": "Real"}, expires_at_epoch=_soon())
    forged = _forge(real, signature="B" * 86)
    with pytest.raises(IntentRejected, match="APPROVAL_INVALID"):
        ExecutionService(engine).execute_action_intent(forged)
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged))
    result = CliRunner().invoke(app, ["execute", str(path)])
    assert result.exit_code == 1 and "APPROVAL_INVALID" in result.output
    assert _chain(engine, tenant) == []

    found = CliRunner().invoke(app, ["security", "log", "--intent", real["action_intent_id"], "--json"])
    assert found.exit_code == 0, found.output
    rows = json.loads(found.stdout)
    assert [(r["code"], r["claimed_tenant_id"], r["count"]) for r in rows] == [
        ("APPROVAL_INVALID", tenant, 1)
    ] * 2
    table = CliRunner().invoke(app, ["security", "log", "--tenant", tenant])
    assert table.exit_code == 0 and "Security log" in table.stdout


def test_a_signed_intent_refused_later_stays_in_the_tenants_chain(
    engine: Any, make_intent: Any, tenant: str
) -> None:
    """The signature verified: conflict, lifetime and schema refusals are the tenant's own story."""
    intent = make_intent("internal.create_task", {"title": "x"}, expires_at_epoch=_soon())
    assert verify_and_register(intent).admitted
    conflict = make_intent(
        "internal.create_task", {"title": "y"}, action_intent_id=intent["action_intent_id"]
    )
    signed_but_invalid = make_intent("internal.log_note", {"body": "hello", "colour": "red"})

    assert _refused(verify_and_register(conflict)).code == "CONFLICT"
    assert _refused(verify_and_register(signed_but_invalid)).field == "parameters.colour"

    fields = [r.details["field"] for r in _rejections(engine, tenant)]
    assert fields == ["action_intent_id", "parameters.colour"]
    assert _logged(engine, claimed_tenant_id=tenant) == []


def test_the_security_log_counts_what_exceeds_its_rate(
    engine: Any, make_intent: Any, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fulfill.security_log as security_log

    monkeypatch.setenv("FULFILL_SECURITY_LOG_PER_MINUTE", "3")
    minute = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)  # one fixed window, whatever the clock does
    monkeypatch.setattr(security_log, "db_now", lambda session: minute)
    real = make_intent("internal.create_task", {"title": "Real"}, expires_at_epoch=_soon())

    for n in range(7):
        _refused(verify_and_register(_forge(real, signature=f"{n:02d}" + "C" * 84)))

    rows = _logged(engine, claimed_tenant_id=tenant)
    assert [r.count for r in rows] == [1, 1, 1, 4]
    assert rows[-1].bucket == f"2031-01-02T03:04|{tenant}"
    assert "counted, not stored" in rows[-1].reason
    assert _chain(engine, tenant) == []


def test_claimed_text_is_bounded_in_the_security_log(engine: Any, unique: str) -> None:
    document = {
        "tenant_id": "t" * 5000,
        "action_intent_id": f"ai_{unique}" + "\x00" * 5000,
        "approval": {"key_id": "k\ud800" * 5000, "signature": "x"},
    }
    _refused(verify_and_register(document))
    [row] = _logged(engine, claimed_intent_id=f"ai_{unique}" + "\ufffd" * (128 - len(f"ai_{unique}")))
    assert row.claimed_tenant_id == "_unknown"  # not a plausible tenant id
    assert row.key_id is not None and len(row.key_id) <= 64 and "\ud800" not in row.key_id
    assert row.field is not None and len(row.field) <= 256 and len(row.reason) <= 500
