"""Ledger tamper-evidence against someone who can write to the database (issue 11.1).

Each test performs one attack the way a database writer would — as the schema owner, with the
append-only triggers out of the way where it needs them — and checks that verification names the
first broken or missing row. Without the keyed chain and the checkpoints outside the database,
every one of them verified ok.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, ProgrammingError
from typer.testing import CliRunner

from fulfill import anchors, ledger
from fulfill.db import alembic_config, dispose_engines, grant_runtime_role, make_engine, transaction, upgrade
from fulfill.settings import load_settings
from fulfill.storage import LocalObjectStore
from fulfill.tables import LedgerEntry
from surfaces.cli import app

runner = CliRunner()


def _append(engine: Any, tenant: str, n: int) -> None:
    for i in range(n):
        with transaction(engine) as session:
            ledger.append(
                session,
                tenant_id=tenant,
                event_type="STEP_SUCCEEDED",
                action_intent_id="ai_1",
                details={"i": i},
            )


def _store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "anchors")


def _anchor(engine: Any, store: LocalObjectStore, tenant: str) -> None:
    with transaction(engine) as session:
        result = anchors.anchor(session, store, [tenant])
    assert tenant in result.anchored and not result.broken


def _verify(engine: Any, store: LocalObjectStore, tenant: str, everyone: bool = False) -> ledger.ChainReport:
    with transaction(engine) as session:
        reports = anchors.verify(session, store, None if everyone else [tenant])
    return next(r for r in reports if r.tenant_id == tenant)


def _as_owner(engine: Any, *statements: str, **params: Any) -> None:
    """Run statements as the schema owner with the ledger's append-only triggers disabled."""
    with engine.begin() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.exec_driver_sql("ALTER TABLE ledger DISABLE TRIGGER USER")
        else:
            for name in ("ledger_no_update", "ledger_no_delete", "ledger_no_replace"):
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
        for statement in statements:
            conn.execute(sa.text(statement), params)
        if postgres:
            conn.exec_driver_sql("ALTER TABLE ledger ENABLE TRIGGER USER")


def _plain_hash(prev: str, row: LedgerEntry) -> str:
    """What an attacker without the key computes: the unkeyed chain of before issue 11."""
    return hashlib.sha256(prev.encode("ascii") + ledger.canonical_row(row)).hexdigest()


def _rows(engine: Any, tenant: str) -> list[LedgerEntry]:
    with transaction(engine) as session:
        return list(
            session.exec(
                sa.select(LedgerEntry).where(LedgerEntry.tenant_id == tenant).order_by(LedgerEntry.seq)  # type: ignore[arg-type]
            ).scalars()
        )


# --- the keyed chain: forging needs the key --------------------------------------------------------
def test_a_forged_append_with_a_recomputed_hash_is_named(engine: Any, tenant: str) -> None:
    _append(engine, tenant, 3)
    last = _rows(engine, tenant)[-1]
    forged = LedgerEntry(
        tenant_id=tenant,
        seq=4,
        action_intent_id="ai_1",
        event_type="ACTION_EXECUTED",
        at=last.at,
        actor="mallory",
        details={"forged": True},
        prev_hash=last.row_hash,
        row_hash="",
    )
    forged.row_hash = _plain_hash(last.row_hash, forged)
    with transaction(engine) as session:  # INSERT is what the run-time role may do
        session.add(forged)
        session.execute(
            sa.text("UPDATE ledger_heads SET seq = 4, row_hash = :h WHERE tenant_id = :t"),
            {"h": forged.row_hash, "t": tenant},
        )
    with transaction(engine) as session:
        (report,) = ledger.verify_chains(session, [tenant])
    assert (report.ok, report.broken_seq) == (False, 4)
    assert "keyed hash" in (report.reason or "")


def test_a_rewritten_row_with_the_rest_re_chained_is_named(engine: Any, tenant: str) -> None:
    _append(engine, tenant, 5)
    rows = _rows(engine, tenant)
    prev = rows[1].row_hash
    statements, params = [], {}
    for row in rows[2:]:
        if row.seq == 3:
            row.actor = "mallory"
        row.prev_hash = prev
        row.row_hash = _plain_hash(prev, row)
        prev = row.row_hash
        statements.append(
            f"UPDATE ledger SET actor = :a{row.seq}, prev_hash = :p{row.seq}, row_hash = :h{row.seq} WHERE id = {row.id}"
        )
        params |= {f"a{row.seq}": row.actor, f"p{row.seq}": row.prev_hash, f"h{row.seq}": row.row_hash}
    statements.append("UPDATE ledger_heads SET row_hash = :head WHERE tenant_id = :t")
    _as_owner(engine, *statements, **params, head=prev, t=tenant)
    with transaction(engine) as session:
        (report,) = ledger.verify_chains(session, [tenant])
    assert (report.ok, report.broken_seq, report.broken_id) == (False, 3, rows[2].id)


def test_another_key_does_not_verify_and_the_key_is_not_in_the_database(
    engine: Any, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FULFILL_LEDGER_KEY", "k" * 40)
    _append(engine, tenant, 2)
    with transaction(engine) as session:
        assert ledger.verify_chains(session, [tenant])[0].ok
    dumped = json.dumps([r.model_dump(mode="json") for r in _rows(engine, tenant)])
    assert "k" * 40 not in dumped
    monkeypatch.setenv("FULFILL_LEDGER_KEY", "m" * 40)
    with transaction(engine) as session:
        (report,) = ledger.verify_chains(session, [tenant])
    assert (report.ok, report.broken_seq) == (False, 1)
    assert "another ledger key" in (report.reason or "")


def test_the_default_key_is_a_0600_file_in_the_data_directory(engine: Any, tenant: str) -> None:
    _append(engine, tenant, 1)
    path = load_settings().data_dir / ledger.KEY_FILE_NAME
    assert path.is_file()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(path.read_text().strip()) == 64
    assert ledger.ledger_key().source == f"key file {path}"


def test_a_named_key_file_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FULFILL_LEDGER_KEY_FILE", str(tmp_path / "absent.key"))
    with pytest.raises(ledger.LedgerKeyError, match="^FULFILL_LEDGER_KEY_FILE: .* does not exist"):
        ledger.ledger_key()


def test_a_short_key_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from fulfill.settings import SettingsError

    monkeypatch.setenv("FULFILL_LEDGER_KEY", "short")
    with pytest.raises(SettingsError, match="^FULFILL_LEDGER_KEY: must be at least 32 characters"):
        load_settings()


# --- checkpoints outside the database: deletions since the last anchor ----------------------------
@pytest.mark.parametrize("head", ["updated", "deleted"])
def test_deleting_the_last_rows_and_the_head_is_named_at_the_first_missing_row(
    engine: Any, tenant: str, tmp_path: Path, head: str
) -> None:
    store = _store(tmp_path)
    _append(engine, tenant, 5)
    _anchor(engine, store, tenant)
    third = _rows(engine, tenant)[2]
    fix_head = (
        "UPDATE ledger_heads SET seq = 3, row_hash = :h WHERE tenant_id = :t"
        if head == "updated"
        else "DELETE FROM ledger_heads WHERE tenant_id = :t"
    )
    _as_owner(
        engine, "DELETE FROM ledger WHERE tenant_id = :t AND seq > 3", fix_head, t=tenant, h=third.row_hash
    )
    with transaction(engine) as session:
        assert ledger.verify_chains(session, [tenant])[0].ok, "without the checkpoint it cannot be seen"

    report = _verify(engine, store, tenant)

    assert (report.ok, report.rows, report.broken_seq, report.anchored_seq) == (False, 3, 4, 5)
    assert "rows 4..5 are missing" in (report.reason or "")


def test_deleting_a_whole_tenants_chain_is_named(engine: Any, tenant: str, tmp_path: Path) -> None:
    store = _store(tmp_path)
    _append(engine, tenant, 2)
    _anchor(engine, store, tenant)
    _as_owner(
        engine,
        "DELETE FROM ledger WHERE tenant_id = :t",
        "DELETE FROM ledger_heads WHERE tenant_id = :t",
        t=tenant,
    )

    report = _verify(engine, store, tenant, everyone=True)  # found through the checkpoint alone

    assert (report.ok, report.rows, report.broken_seq) == (False, 0, 1)
    assert "the whole chain is missing" in (report.reason or "")


def test_re_chaining_with_the_key_up_to_the_anchor_is_named(engine: Any, tenant: str, tmp_path: Path) -> None:
    """Even someone holding the key cannot rewrite what a checkpoint anchored."""
    store = _store(tmp_path)
    _append(engine, tenant, 3)
    _anchor(engine, store, tenant)
    rows = _rows(engine, tenant)
    key = ledger.ledger_key()
    rows[0].actor = "mallory"
    prev = ledger.GENESIS
    params: dict[str, Any] = {}
    for row in rows:
        row.prev_hash, row.row_hash = prev, ledger.chain_hash(prev, ledger.canonical_row(row), key)
        prev = row.row_hash
        params |= {f"a{row.seq}": row.actor, f"p{row.seq}": row.prev_hash, f"h{row.seq}": row.row_hash}
    _as_owner(
        engine,
        *[
            f"UPDATE ledger SET actor = :a{r.seq}, prev_hash = :p{r.seq}, row_hash = :h{r.seq} WHERE id = {r.id}"
            for r in rows
        ],
        "UPDATE ledger_heads SET row_hash = :head WHERE tenant_id = :t",
        **params,
        head=prev,
        t=tenant,
    )
    with transaction(engine) as session:
        assert ledger.verify_chains(session, [tenant])[0].ok, "the key re-chains it consistently"

    report = _verify(engine, store, tenant)

    assert (report.ok, report.broken_seq) == (False, 3)
    assert "differs from the checkpoint" in (report.reason or "")


def test_a_forged_checkpoint_is_reported(engine: Any, tenant: str, tmp_path: Path) -> None:
    store = _store(tmp_path)
    _append(engine, tenant, 2)
    _anchor(engine, store, tenant)
    data = json.loads(store.get(anchors.LATEST) or b"")
    data["chains"][tenant]["seq"] = 1  # hide later deletions
    store.put(anchors.LATEST, json.dumps(data).encode(), "application/json")

    with transaction(engine) as session:
        reports = anchors.verify(session, store, [tenant])

    assert reports[0].tenant_id == anchors.CHECKPOINT_TENANT and not reports[0].ok
    assert "forged or altered" in (reports[0].reason or "")
    with pytest.raises(anchors.CheckpointInvalid), transaction(engine) as session:
        anchors.anchor(session, store, [tenant])


def test_a_broken_chain_keeps_its_old_anchor(engine: Any, tenant: str, tmp_path: Path) -> None:
    store = _store(tmp_path)
    _append(engine, tenant, 3)
    _anchor(engine, store, tenant)
    _as_owner(
        engine,
        "DELETE FROM ledger WHERE tenant_id = :t AND seq = 3",
        "UPDATE ledger_heads SET seq = 2 WHERE tenant_id = :t",
        t=tenant,
    )
    with transaction(engine) as session:
        result = anchors.anchor(session, store, [tenant])
    assert tenant not in result.anchored and [r.tenant_id for r in result.broken] == [tenant]
    assert _verify(engine, store, tenant).broken_seq == 3  # still measured against seq 3


def test_the_cli_anchors_and_verify_names_the_missing_row(database_url: str, tenant: str) -> None:
    engine = make_engine(database_url)
    try:
        _append(engine, tenant, 4)
        anchored = runner.invoke(app, ["ledger", "anchor", "--tenant", tenant, "--json"])
        assert anchored.exit_code == 0, anchored.output
        assert json.loads(anchored.stdout)["anchored"] == {tenant: 4}
        assert (load_settings().data_dir / anchors.LATEST).is_file()
        _as_owner(
            engine,
            "DELETE FROM ledger WHERE tenant_id = :t AND seq = 4",
            "UPDATE ledger_heads SET seq = 3 WHERE tenant_id = :t",
            t=tenant,
        )

        verified = runner.invoke(app, ["ledger", "verify", "--tenant", tenant, "--json"])

        assert verified.exit_code == 1
        [report] = json.loads(verified.stdout)
        assert (report["ok"], report["broken_seq"], report["anchored_seq"]) == (False, 4, 4)
        table = runner.invoke(app, ["ledger", "verify", "--tenant", tenant])
        assert table.exit_code == 1 and "seq 4" in table.stdout
    finally:
        engine.dispose()


# --- no statement form rewrites the ledger ------------------------------------------------------------
REWRITES = {
    "update": "UPDATE ledger SET actor = 'mallory' WHERE tenant_id = :t",
    "delete": "DELETE FROM ledger WHERE tenant_id = :t",
    "insert-or-replace": "INSERT OR REPLACE INTO ledger SELECT * FROM ledger WHERE tenant_id = :t",
    "replace-into": "REPLACE INTO ledger SELECT * FROM ledger WHERE tenant_id = :t",
    "upsert": (
        "INSERT INTO ledger (id, tenant_id, seq, action_intent_id, event_type, at, actor, details, prev_hash, row_hash) "
        "SELECT id, tenant_id, seq, action_intent_id, event_type, at, 'mallory', details, prev_hash, row_hash "
        "FROM ledger WHERE tenant_id = :t ON CONFLICT (id) DO UPDATE SET actor = excluded.actor"
    ),
    "upsert-seq": (
        "INSERT INTO ledger (tenant_id, seq, action_intent_id, event_type, at, actor, details, prev_hash, row_hash) "
        "SELECT tenant_id, seq, action_intent_id, event_type, at, 'mallory', details, prev_hash, row_hash "
        "FROM ledger WHERE tenant_id = :t ON CONFLICT (tenant_id, seq) DO UPDATE SET actor = excluded.actor"
    ),
    "truncate": "TRUNCATE ledger",
}
FORMS = {
    "sqlite": ["update", "delete", "insert-or-replace", "replace-into", "upsert", "upsert-seq"],
    "postgresql": ["update", "delete", "upsert", "upsert-seq", "truncate"],  # no REPLACE in PostgreSQL
}


def test_no_statement_form_rewrites_a_ledger_row(engine: Any, tenant: str) -> None:
    _append(engine, tenant, 2)
    before = [(r.id, r.actor, r.row_hash) for r in _rows(engine, tenant)]
    for form in FORMS[engine.dialect.name]:
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text(REWRITES[form]), {"t": tenant})
        assert [(r.id, r.actor, r.row_hash) for r in _rows(engine, tenant)] == before, form
    with transaction(engine) as session:
        assert ledger.verify_chains(session, [tenant])[0].ok


def test_appends_still_work_beside_the_insert_guard(engine: Any, tenant: str) -> None:
    _append(engine, tenant, 3)
    assert [r.seq for r in _rows(engine, tenant)] == [1, 2, 3]


# --- PostgreSQL: the run-time role cannot rewrite or unguard the ledger ---------------------------
@pytest.fixture
def runtime_engine(empty_postgres_url: str, postgres_admin_url: str) -> Iterator[Any]:
    role = f"fulfill_rt_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT')
    owner = make_engine(empty_postgres_url)
    upgrade(owner)
    grant_runtime_role(owner, role)
    _append(owner, "t-rt", 2)
    owner.dispose()
    engine = make_engine(
        make_url(empty_postgres_url).set(username=role, password=None).render_as_string(hide_password=False)
    )
    yield engine
    engine.dispose()
    dispose_engines()
    database = make_url(empty_postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(database, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP OWNED BY "{role}"')
    with psycopg.connect(postgres_admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger SET actor = 'mallory'",
        "DELETE FROM ledger",
        "TRUNCATE ledger",
        "ALTER TABLE ledger DISABLE TRIGGER ledger_append_only",
        "ALTER TABLE ledger DISABLE TRIGGER USER",
        "DROP TRIGGER ledger_append_only ON ledger",
        REWRITES["upsert"],
    ],
    ids=["update", "delete", "truncate", "disable-trigger", "disable-all-triggers", "drop-trigger", "upsert"],
)
def test_the_runtime_role_cannot_rewrite_or_unguard_the_ledger(runtime_engine: Any, statement: str) -> None:
    with (
        pytest.raises(ProgrammingError, match="InsufficientPrivilege|must be owner|permission denied"),
        runtime_engine.begin() as conn,
    ):
        conn.execute(sa.text(statement), {"t": "t-rt"})
    with runtime_engine.begin() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ledger WHERE actor = 'mallory'")).scalar_one() == 0
        privileges = conn.execute(
            sa.text(
                "SELECT privilege_type FROM information_schema.role_table_grants "
                "WHERE table_name = 'ledger' AND grantee = current_user"
            )
        ).scalars()
        assert sorted(privileges) == ["INSERT", "SELECT"]


# --- the migration re-keys existing rows -----------------------------------------------------------
def test_the_migration_re_keys_intact_chains_and_leaves_a_broken_one_broken(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FULFILL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FULFILL_LEDGER_KEY", "migration-key-" + "x" * 30)
    engine = make_engine(empty_database_url)
    try:
        upgrade(engine, "0004")
        with engine.begin() as conn:  # rows written by the previous release: the plain chain
            for tenant, n in (("t-good", 3), ("t-bad", 3)):
                prev = ledger.GENESIS
                for seq in range(1, n + 1):
                    row = LedgerEntry(
                        tenant_id=tenant,
                        seq=seq,
                        action_intent_id="ai_1",
                        event_type="STEP_SUCCEEDED",
                        at="2026-12-01T00:00:00.000000Z",
                        actor="system",
                        details={"i": seq},
                        prev_hash=prev,
                        row_hash="",
                    )
                    row.row_hash = _plain_hash(prev, row)
                    if tenant == "t-bad" and seq == 2:
                        row.actor = "edited before the upgrade"
                    conn.execute(
                        sa.insert(LedgerEntry.__table__).values(  # type: ignore[attr-defined]
                            **row.model_dump(exclude={"id"})
                        )
                    )
                    prev = row.row_hash
                conn.execute(
                    sa.text("INSERT INTO ledger_heads VALUES (:t, :s, :h)"), {"t": tenant, "s": n, "h": prev}
                )
        upgrade(engine)
        with transaction(engine) as session:
            good, bad = ledger.verify_chains(session, ["t-good", "t-bad"])
        assert (good.ok, good.rows) == (True, 3)
        assert (bad.ok, bad.broken_seq) == (False, 2)
        assert not (tmp_path / "data" / ledger.KEY_FILE_NAME).exists(), "the named key was used"

        command.downgrade(alembic_config(engine), "0004")
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT seq, prev_hash, row_hash FROM ledger WHERE tenant_id = 't-good' ORDER BY seq")
            ).all()
        prev = ledger.GENESIS
        for _seq, prev_hash, row_hash in rows:
            assert prev_hash == prev
            prev = row_hash
        upgrade(engine)
        with transaction(engine) as session:
            assert ledger.verify_chains(session, ["t-good"])[0].ok
    finally:
        engine.dispose()
