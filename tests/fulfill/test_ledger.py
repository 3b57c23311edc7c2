from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from fulfill import ledger
from fulfill.db import transaction


def _append(engine: Any, tenant: str, n: int, intent: str = "ai_1") -> None:
    for i in range(n):
        with transaction(engine) as session:
            ledger.append(
                session,
                tenant_id=tenant,
                event_type="STEP_SUCCEEDED",
                action_intent_id=intent,
                details={"i": i, "note": "Ünïcödé 🚀"},
            )


def _tamper(engine: Any, tenant: str, seq: int, column: str, value: str) -> None:
    """Set one column of row ``seq`` as a database owner can, bypassing the append-only trigger."""
    with engine.begin() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.execute(sa.text("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only"))
        else:
            conn.execute(sa.text("DROP TRIGGER ledger_no_update"))
        cast = "CAST(:v AS jsonb)" if postgres and column == "details" else ":v"
        conn.execute(
            sa.text(f"UPDATE ledger SET {column} = {cast} WHERE tenant_id = :t AND seq = :s"),
            {"t": tenant, "s": seq, "v": value},
        )
        if postgres:
            conn.execute(sa.text("ALTER TABLE ledger ENABLE TRIGGER ledger_append_only"))


def _report(engine: Any, tenant: str) -> ledger.ChainReport:
    with transaction(engine) as session:
        return ledger.verify_chains(session, [tenant])[0]


def test_chain_verifies_and_is_per_tenant(engine: Any, tenant: str) -> None:
    _append(engine, tenant, 3)
    _append(engine, f"{tenant}-other", 2)
    report = _report(engine, tenant)
    assert (report.ok, report.rows) == (True, 3)
    with transaction(engine) as session:
        rows = ledger.entries_for_intent(session, tenant, "ai_1")
    assert [r.seq for r in rows] == [1, 2, 3]
    assert rows[1].prev_hash == rows[0].row_hash


def test_ledger_refuses_update_and_delete(engine: Any, tenant: str) -> None:
    _append(engine, tenant, 1)
    for statement in (
        "UPDATE ledger SET actor = 'mallory' WHERE tenant_id = :t",
        "DELETE FROM ledger WHERE tenant_id = :t",
    ):
        with pytest.raises(DBAPIError, match="append-only"), transaction(engine) as session:
            session.exec(sa.text(statement).bindparams(t=tenant))  # type: ignore[call-overload]
    assert _report(engine, tenant).ok


@pytest.mark.parametrize("page", [None, 2], ids=["one page", "pages of 2"])
def test_tampering_is_reported_at_the_first_broken_row(
    engine: Any, tenant: str, page: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if page is not None:
        monkeypatch.setattr(ledger, "VERIFY_PAGE", page)
    _append(engine, tenant, 4)
    # A database owner can bypass the trigger; the hash chain still catches the edit.
    _tamper(engine, tenant, 3, "actor", "mallory")
    report = _report(engine, tenant)
    assert not report.ok
    assert report.broken_seq == 3
    assert "hash" in (report.reason or "")


def test_secrets_are_redacted_before_hashing(engine: Any, tenant: str) -> None:
    with transaction(engine) as session:
        row = ledger.append(
            session,
            tenant_id=tenant,
            event_type="TENANT_CONFIGURED",
            details={"client_secret": "canary-5ecret", "nested": {"access_token": "canary-t0ken"}},
        )
    assert "canary" not in str(row.details)
    assert _report(engine, tenant).ok


def _head(engine: Any, tenant: str) -> tuple[int, str]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT seq, row_hash FROM ledger_heads WHERE tenant_id = :t"), {"t": tenant}
        ).one()
    return (row.seq, row.row_hash)


def test_the_database_moves_the_head_with_each_row(engine: Any, tenant: str) -> None:
    """The head follows every row the ledger gets (migration 0008's trigger), never backwards."""
    with transaction(engine) as session:
        first = ledger.append(session, tenant_id=tenant, event_type="STEP_STARTED")
        second = ledger.append(session, tenant_id=tenant, event_type="STEP_SUCCEEDED")
    assert (second.seq, second.prev_hash) == (2, first.row_hash)
    assert _head(engine, tenant) == (2, second.row_hash)
    row = {"action_intent_id": None, "event_type": "STEP_FAILED", "at": second.at, "actor": "system"}
    with engine.begin() as conn:  # rows written past append, as a database owner could
        insert = sa.text(
            "INSERT INTO ledger (tenant_id, seq, action_intent_id, event_type, at, actor, details,"
            " prev_hash, row_hash) VALUES (:t, :seq, :action_intent_id, :event_type, :at, :actor, '{}',"
            " :prev, :hash)"
        )
        conn.execute(insert, {**row, "t": tenant, "seq": 3, "prev": second.row_hash, "hash": "c" * 64})
        conn.execute(insert, {**row, "t": tenant, "seq": 0, "prev": "0" * 64, "hash": "d" * 64})
    assert _head(engine, tenant) == (3, "c" * 64)


def test_concurrent_appends_never_fork_the_chain(engine: Any, tenant: str) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            _append(engine, tenant, 5)
        except BaseException as exc:  # pragma: no cover - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    report = _report(engine, tenant)
    assert (report.ok, report.rows) == (True, 20)


def test_an_append_waits_for_the_chain_head_and_reads_the_clock_once_it_holds_it(
    engine: Any, tenant: str
) -> None:
    """A second append to a chain waits for the first one's commit, chains on it, and is timed after it."""
    _append(engine, tenant, 1)
    first_appended = threading.Event()
    second: list[Any] = []
    errors: list[BaseException] = []

    def append_second() -> None:
        try:
            first_appended.wait(10)
            with transaction(engine) as session:
                second.append(ledger.append(session, tenant_id=tenant, event_type="STEP_SUCCEEDED"))
        except BaseException as exc:  # pragma: no cover - surfaced by the assert below
            errors.append(exc)

    thread = threading.Thread(target=append_second)
    thread.start()
    with transaction(engine) as session:
        first = ledger.append(session, tenant_id=tenant, event_type="STEP_STARTED")
        first_appended.set()
        time.sleep(0.5)  # the second append is waiting for the chain head meanwhile
        assert not second, "an append went past a chain head another transaction holds"
    thread.join(30)
    assert not errors
    assert (first.seq, second[0].seq) == (2, 3)
    assert second[0].prev_hash == first.row_hash
    waited = datetime.fromisoformat(second[0].at) - datetime.fromisoformat(first.at)
    assert waited >= timedelta(seconds=0.45), "the clock was read before the head lock was held"
    assert _report(engine, tenant).ok


def test_concurrent_first_facts_and_appends_on_many_chains_never_fork(engine: Any, unique: str) -> None:
    """Eight writers, two on each of four new chains (their first facts race too): every chain verifies."""
    tenants = [f"t-{unique}-{n}" for n in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(tenant: str) -> None:
        try:
            start.wait(10)
            _append(engine, tenant, 5)
        except BaseException as exc:  # pragma: no cover - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(tenants[n % 4],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with transaction(engine) as session:
        reports = ledger.verify_chains(session, tenants)
    assert [(r.ok, r.rows) for r in reports] == [(True, 10)] * 4


def test_a_chain_is_read_in_pages_and_a_row_before_seq_1_is_seen(
    engine: Any, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger, "VERIFY_PAGE", 2)
    _append(engine, tenant, 5)
    assert (_report(engine, tenant).ok, _report(engine, tenant).rows) == (True, 5)
    with engine.begin() as conn:  # a forged row below seq 1: inserting is allowed, the chain shows it
        conn.execute(
            sa.text(
                "INSERT INTO ledger (tenant_id, seq, event_type, at, actor, details, prev_hash, row_hash) "
                "VALUES (:t, -7, 'STEP_SUCCEEDED', 'x', 'mallory', '{}', :h, :h)"
            ),
            {"t": tenant, "h": ledger.GENESIS},
        )
    report = _report(engine, tenant)
    assert (report.ok, report.rows, report.broken_seq) == (False, 0, 1)
    assert "next row found is seq -7" in (report.reason or "")


def test_text_no_database_can_store_is_made_storable_and_still_verifies(engine: Any, tenant: str) -> None:
    """A provider's message may hold NUL or a lone surrogate: PostgreSQL's jsonb refuses the first,
    neither database encodes the second. The fact is still ledgered, with those characters replaced."""
    with transaction(engine) as session:
        row = ledger.append(
            session,
            tenant_id=tenant,
            event_type="STEP_FAILED",
            details={"message": "bad\x00byte", "nested": ["lone \ud800 surrogate"], "key\x00": 1},
        )
    assert row.details == {"message": "bad\ufffdbyte", "nested": ["lone ? surrogate"], "key\ufffd": 1}
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT details FROM ledger WHERE id = :id"), {"id": row.id}
        ).scalar_one()
    assert (json.loads(stored) if isinstance(stored, str) else stored) == row.details
    assert _report(engine, tenant).ok


@pytest.mark.parametrize("value", ["1e21", "1e400", "-0.0"])
def test_a_row_that_cannot_be_canonicalised_is_reported_not_raised(
    engine: Any, tenant: str, value: str
) -> None:
    _append(engine, tenant, 3)
    _tamper(engine, tenant, 2, "details", f'{{"i": {value}}}')
    report = _report(engine, tenant)
    assert (report.ok, report.broken_seq) == (False, 2)
