"""Benchmark: the status API (contract §5) with a million executions and their ledger rows on PostgreSQL.

    .venv/bin/python bench/bench_status.py \\
        --url postgresql+psycopg://postgres@127.0.0.1:5432/fulfill_bench \\
        --executions 1000000 --clients 32 --requests 3000

1. Creates the dedicated database named in ``--url`` (never ``test``, ``postgres`` or ``root``), migrates
   it with ``fulfill.db.upgrade_database`` and fills it with server-side SQL (``INSERT … SELECT FROM
   generate_series``): executions spread over ``--tenants`` tenants and ``--accounts`` accounts (skewed:
   a few hot accounts hold many executions), one or two step records each and up to four ledger rows
   each (received, started, step, outcome), then ``VACUUM (ANALYZE)``. The ledger rows carry random
   hashes: they do NOT form a verifying hash chain (nothing here reads the chain). A marker table
   ``bench_fill`` records what was filled, so a re-run with the same sizes reuses the database.
2. Serves the real application (``uvicorn surfaces.api:create_app --factory``, ``--workers`` processes,
   no access log) on 127.0.0.1 with ``FULFILL_DATABASE_URL`` pointing at that database.
3. Counts the SQL statements and transactions of one request of each kind (in-process, through the same
   app, with SQLAlchemy events) and prints ``EXPLAIN (ANALYZE, BUFFERS)`` of every statement as the
   service issued it — a ``Seq Scan`` on a big table is flagged.
4. Drives the server with ``--clients`` concurrent keep-alive clients (``httpx.AsyncClient``), one run per
   request kind after a warm-up: status of random ids of the token's tenant; list first pages and
   cursor-following pages (cursors harvested by walking listings first), without and with a
   ``status=FAILED`` filter. Prints p50/p95/p99/max and throughput per run as a Markdown table.
5. Measures the schema as migrated (``--indexes migrated``, the default). :data:`RECOMMENDED_INDEXES` —
   what this bench found missing, now created by migration 0006 — can be dropped and re-created in the
   bench database for a before/after (``--indexes compare``).

Speed goals live here, never in timed tests. Load generator, server and PostgreSQL share the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, LiteralString

import httpx
import psycopg
import sqlalchemy as sa
from common import free_port, percentile
from psycopg import sql
from sqlalchemy.engine import URL, Engine, make_url

ROOT = Path(__file__).resolve().parents[1]
FILL_VERSION = 1  # bump when the generated data changes: a database filled by another version is refilled
QueryList = list[tuple[str, str | int | float | bool | None]]
RESERVED_DATABASES = frozenset({"test", "postgres", "root", "template0", "template1"})
TOKEN_NAME = "bench-status"
PAGE = 50  # the API's default page size
ACTION_TYPES = (
    "crm.create_task",
    "crm.update_field",
    "crm.create_opportunity",
    "calendar.draft_meeting",
    "internal.create_task",
    "internal.log_note",
    "internal.attach_brief",
)

#: What the bench measures with and without (``--indexes``), as (create, drop). The migrations create
#: ``ix_executions_account_created (tenant_id, account_id, created_at)``: the list query's ORDER BY
#: (``created_at DESC, action_intent_id DESC``) is then completed by a sort of the account's rows, and its
#: ``status`` filter is applied to every row of the account. The statistics object tells the planner that
#: an account belongs to one tenant (without it, it multiplies the two selectivities and expects ~1 row
#: per account, so it prefers bitmap scans plus a sort of the whole account to an ordered index scan).
RECOMMENDED_INDEXES: dict[str, tuple[str, str]] = {
    "ix_executions_account_created_id": (
        "CREATE INDEX ix_executions_account_created_id "
        "ON executions (tenant_id, account_id, created_at, action_intent_id)",
        "DROP INDEX ix_executions_account_created_id",
    ),
    "ix_executions_account_status_created_id": (
        "CREATE INDEX ix_executions_account_status_created_id "
        "ON executions (tenant_id, account_id, status, created_at, action_intent_id)",
        "DROP INDEX ix_executions_account_status_created_id",
    ),
    "st_executions_tenant_account": (
        "CREATE STATISTICS st_executions_tenant_account (dependencies, ndistinct) "
        "ON tenant_id, account_id FROM executions",
        "DROP STATISTICS st_executions_tenant_account",
    ),
}


# --- small helpers (pure) ------------------------------------------------------------------------
def intent_id(i: int) -> str:
    """The id of the ``i``-th generated execution (same formula as the fill SQL)."""
    return "ai_" + hashlib.md5(f"bench-{i}".encode()).hexdigest()[:26]


def tenant_of(i: int, tenants: int) -> str:
    """The tenant of the ``i``-th generated execution (same formula as the fill SQL)."""
    return f"bench-t{i % tenants:03d}"


def libpq_url(url: URL) -> str:
    """A SQLAlchemy URL as a libpq connection string for psycopg."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


# --- the database ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fill:
    executions: int
    tenants: int
    accounts: int

    @property
    def accounts_per_tenant(self) -> int:
        return max(1, self.accounts // self.tenants)


def _marker(url: URL) -> tuple[int, int, int, int] | None:
    """What the database was filled with (``None``: not a complete bench fill)."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('bench_fill')").fetchone() == (None,):
            return None
        row = conn.execute("SELECT executions, tenants, accounts, fill_version FROM bench_fill").fetchone()
        return None if row is None else (int(row[0]), int(row[1]), int(row[2]), int(row[3]))


def _has_foreign_tables(url: URL) -> bool:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        ours = conn.execute("SELECT to_regclass('bench_fill') IS NOT NULL").fetchone()
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
        return not (ours and ours[0]) and bool(tables and tables[0])


def ensure_runtime_role(url: URL, role: str) -> None:
    """The bench's own run-time login role: neither superuser nor owner, so row-level security applies."""
    admin = url.set(database="postgres")
    with psycopg.connect(libpq_url(admin), autocommit=True) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if row is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        elif row[0]:
            raise SystemExit(f"--runtime-role: {role!r} is a superuser; row-level security would not apply")


def prepare_database(
    url: URL, fill: Fill, *, force: bool, runtime_role: str | None, log: Callable[[str], None]
) -> float | None:
    """Create, migrate and fill the bench database unless it already holds this fill; migrate it to
    this code's head in any case and grant ``runtime_role`` the run-time privileges.

    Returns the fill time in seconds, or ``None`` when the existing database was reused.
    """
    from fulfill.db import upgrade_database

    name = url.database or ""
    if name in RESERVED_DATABASES or not name:
        raise SystemExit(f"--url: refusing database {name!r}; name a dedicated one such as fulfill_bench")
    admin = url.set(database="postgres")
    with psycopg.connect(libpq_url(admin), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists:
        if not force and _marker(url) == (fill.executions, fill.tenants, fill.accounts, FILL_VERSION):
            revision = upgrade_database(url.render_as_string(hide_password=False), runtime_role=runtime_role)
            log(
                f"reusing database {name} (at {revision}): already filled with {fill.executions:,} executions"
            )
            return None
        if _has_foreign_tables(url):
            raise SystemExit(
                f"--url: database {name!r} has tables but is not a bench database; not touching it"
            )
        with psycopg.connect(libpq_url(admin), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    with psycopg.connect(libpq_url(admin), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    started = time.perf_counter()
    revision = upgrade_database(url.render_as_string(hide_password=False), runtime_role=runtime_role)
    log(f"database {name} created and migrated to {revision}")
    prepare, inserts, finish = fill_statements(fill)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:

        def run(label: str, statements: Sequence[str]) -> None:
            t0 = time.perf_counter()
            for statement in statements:
                conn.execute(_sql(statement))
            log(f"  {label}: {time.perf_counter() - t0:.1f} s")

        for label, statement in prepare:
            run(label, [statement])
        recreate = detach_indexes(conn, FILLED_TABLES)
        for label, statement in inserts:
            run(label, [statement])
        run(f"indexes and constraints ({len(recreate)})", recreate)
        for label, statement in finish:
            run(label, [statement])
        conn.execute(
            "INSERT INTO bench_fill (executions, tenants, accounts, fill_version, seconds) "
            "VALUES (%s, %s, %s, %s, %s)",
            (fill.executions, fill.tenants, fill.accounts, FILL_VERSION, time.perf_counter() - started),
        )
    return time.perf_counter() - started


Steps = list[tuple[str, str]]
FILLED_TABLES = ("executions", "steps", "ledger")


def fill_statements(fill: Fill) -> tuple[Steps, Steps, Steps]:
    """The server-side SQL that fills the database (integers are formatted in; no user text)."""
    n, t, a = int(fill.executions), int(fill.tenants), int(fill.accounts_per_tenant)
    types = ", ".join(f"'{x}'" for x in ACTION_TYPES)
    ts = '\'YYYY-MM-DD"T"HH24:MI:SS"Z"\''
    ts_us = '\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\''
    plan = f"""
        CREATE TEMP TABLE bench_plan AS
        SELECT i,
               'ai_' || left(md5('bench-' || i), 26) AS id,
               'bench-t' || lpad((i % {t})::text, 3, '0') AS tenant_id,
               i / {t} AS ordinal,
               'acct-' || lpad((i % {t})::text, 3, '0') || '-'
                   || lpad(least({a} - 1, floor({a} * ra * ra))::int::text, 4, '0') AS account_id,
               (ARRAY[{types}])[1 + i % {len(ACTION_TYPES)}] AS action_type,
               CASE WHEN i > {n} * 0.99 AND rs >= 0.97 THEN
                        CASE WHEN rs >= 0.985 THEN 'EXECUTING' ELSE 'PENDING' END
                    WHEN rs < 0.07 THEN 'FAILED'
                    WHEN rs < 0.10 THEN 'EXPIRED'
                    WHEN rs < 0.12 THEN 'CANCELLED'
                    ELSE 'SUCCEEDED' END AS status,
               CASE WHEN rj > 0.998 THEN 1000 ELSE 4 + floor(60 * rj * rj)::int END AS chunks,
               now() - interval '365 days' + (i::float8 / {n}) * interval '365 days' AS created_at
        FROM (SELECT i, random() AS ra, random() AS rs, random() AS rj
              FROM generate_series(1, {n}) AS i) AS g
    """
    plan2 = """
        ALTER TABLE bench_plan
            ADD COLUMN system text, ADD COLUMN nsteps int;
        UPDATE bench_plan SET
            system = CASE WHEN action_type LIKE 'crm.%' THEN
                              CASE WHEN i % 2 = 0 THEN 'salesforce' ELSE 'hubspot' END
                          WHEN action_type LIKE 'calendar.%' THEN 'google_calendar'
                          ELSE 'internal' END,
            nsteps = CASE WHEN action_type = 'crm.create_opportunity' THEN 2 ELSE 1 END
    """
    executions = f"""
        INSERT INTO executions (action_intent_id, tenant_id, account_id, decision_id, action_type, status,
            explanation, failure_code, failure_message, needs_human, compensation, approved_by, approved_at,
            expires_at_epoch, flow_run_id, intent_json, intent_sha256, attempt, generation, lease_owner,
            lease_until, created_at, updated_at, finished_at, compensation_pending)
        SELECT p.id, p.tenant_id, p.account_id, 'dec_' || p.i, p.action_type, p.status,
               CASE p.status WHEN 'SUCCEEDED' THEN 'Created the task in ' || p.system || '.' ELSE '' END,
               CASE p.status WHEN 'FAILED' THEN
                        CASE WHEN p.i % 2 = 0 THEN 'CONNECTOR_REJECTED' ELSE 'RETRIES_EXHAUSTED' END
                    WHEN 'CANCELLED' THEN 'CANCELLED_BY_USER' END,
               CASE p.status WHEN 'FAILED' THEN 'The connected system refused the change.' END,
               false,
               CASE WHEN p.status = 'FAILED' AND p.nsteps = 2 THEN 'COMPENSATED' ELSE 'NONE' END,
               'seller' || (p.i % 997) || '@' || p.tenant_id || '.example',
               to_char(p.created_at AT TIME ZONE 'UTC', {ts}),
               extract(epoch FROM p.created_at)::bigint + 7 * 86400,
               CASE WHEN p.status <> 'PENDING' THEN md5('run-' || p.i)::uuid::text END,
               jsonb_build_object(
                   'schema_version', 'action_intent.v1',
                   'action_intent_id', p.id,
                   'tenant_id', p.tenant_id,
                   'account_id', p.account_id,
                   'decision_id', 'dec_' || p.i,
                   'action_type', p.action_type,
                   'parameters', jsonb_build_object(
                       'subject', 'Follow up on renewal pricing, request ' || p.i,
                       'due_date', to_char(p.created_at + interval '7 days', 'YYYY-MM-DD'),
                       'priority', 'High',
                       'description', repeat(md5(p.id) || ' ', p.chunks)),
                   'approval', jsonb_build_object(
                       'approval_id', 'apr_' || left(md5('apr' || p.i), 8),
                       'approved_by', 'seller' || (p.i % 997) || '@' || p.tenant_id || '.example',
                       'approved_at', to_char(p.created_at AT TIME ZONE 'UTC', {ts}),
                       'edited', p.i % 10 = 0,
                       'key_id', 'bench-key-1',
                       'signature', md5('s1' || p.i) || md5('s2' || p.i) || left(md5('s3' || p.i), 22)),
                   'created_at', to_char(p.created_at AT TIME ZONE 'UTC', {ts}),
                   'expires_at_epoch', extract(epoch FROM p.created_at)::bigint + 7 * 86400),
               md5('sha-a' || p.i) || md5('sha-b' || p.i),
               CASE WHEN p.status IN ('PENDING', 'EXPIRED') THEN 0 ELSE 1 END,
               0, NULL, NULL,
               p.created_at,
               p.created_at + interval '4 seconds',
               CASE WHEN p.status IN ('PENDING', 'EXECUTING') THEN NULL
                    ELSE p.created_at + interval '4 seconds' END,
               false
        FROM bench_plan AS p
    """
    steps = """
        INSERT INTO steps (tenant_id, action_intent_id, generation, seq, step, system, idempotency_key,
            status, attempts, call_json, result_json, error_json, unsettled_until, started_at, finished_at)
        SELECT p.tenant_id, p.id, 0, s.seq,
               CASE s.seq WHEN 1 THEN 'primary' ELSE 'follow_up_task' END,
               p.system,
               'fulfill:' || p.id || ':0:' || s.seq,
               CASE WHEN p.status = 'EXECUTING' AND s.seq = p.nsteps THEN 'CALL_STARTED'
                    WHEN p.status = 'FAILED' AND s.seq = p.nsteps THEN 'FAILED'
                    WHEN p.status = 'FAILED' THEN 'COMPENSATED'
                    WHEN p.status = 'CANCELLED' THEN 'COMPENSATED'
                    ELSE 'SUCCEEDED' END,
               CASE WHEN p.i % 10 = 0 THEN 3 ELSE 1 END,
               jsonb_build_object('step', CASE s.seq WHEN 1 THEN 'primary' ELSE 'follow_up_task' END,
                                  'object', 'Task', 'account_id', p.account_id,
                                  'fields', jsonb_build_object('Subject', 'Follow up ' || p.i,
                                                               'Priority', 'High')),
               CASE WHEN p.status IN ('SUCCEEDED', 'CANCELLED') OR s.seq < p.nsteps THEN
                   jsonb_build_object('created', true, 'ref', jsonb_build_object(
                       'system', p.system, 'object', 'Task', 'id', '00T' || left(md5(p.id || s.seq), 15),
                       'url', 'https://bench.example/r/Task/00T' || left(md5(p.id || s.seq), 15)))
               END,
               CASE WHEN p.status = 'FAILED' AND s.seq = p.nsteps THEN
                   jsonb_build_object('code', 'CONNECTOR_REJECTED', 'class', 'PermanentError') END,
               NULL,
               p.created_at + interval '1 second',
               CASE WHEN p.status = 'EXECUTING' AND s.seq = p.nsteps THEN NULL
                    ELSE p.created_at + interval '2 seconds' END
        FROM bench_plan AS p CROSS JOIN LATERAL generate_series(1, p.nsteps) AS s(seq)
        WHERE p.status NOT IN ('PENDING', 'EXPIRED')
    """
    ledger = f"""
        INSERT INTO ledger (tenant_id, seq, action_intent_id, event_type, at, actor, details, prev_hash,
                            row_hash)
        SELECT p.tenant_id, p.ordinal * 4 + e.k, p.id,
               CASE e.k WHEN 1 THEN 'INTENT_RECEIVED'
                        WHEN 2 THEN 'EXECUTION_STARTED'
                        WHEN 3 THEN CASE WHEN p.status = 'FAILED' THEN 'STEP_FAILED' ELSE 'STEP_SUCCEEDED' END
                        ELSE CASE p.status WHEN 'SUCCEEDED' THEN 'ACTION_EXECUTED'
                                           WHEN 'FAILED' THEN 'ACTION_FAILED'
                                           WHEN 'EXPIRED' THEN 'ACTION_EXPIRED'
                                           ELSE 'ACTION_CANCELLED' END END,
               to_char((p.created_at + e.k * interval '1 second') AT TIME ZONE 'UTC', {ts_us}),
               CASE e.k WHEN 1 THEN 'webhook' ELSE 'fulfill' END,
               CASE e.k WHEN 1 THEN jsonb_build_object(
                            'approval_id', 'apr_' || left(md5('apr' || p.i), 8),
                            'approved_by', 'seller' || (p.i % 997) || '@' || p.tenant_id || '.example',
                            'approved_at', to_char(p.created_at AT TIME ZONE 'UTC', {ts}),
                            'key_id', 'bench-key-1', 'edited', p.i % 10 = 0,
                            'created_at', to_char(p.created_at AT TIME ZONE 'UTC', {ts}),
                            'intent_sha256', md5('sha-a' || p.i) || md5('sha-b' || p.i))
                        WHEN 2 THEN jsonb_build_object('attempt', 1, 'flow_run_id', md5('run-' || p.i)::uuid)
                        WHEN 3 THEN jsonb_build_object(
                            'step', 'primary', 'attempts', CASE WHEN p.i % 10 = 0 THEN 3 ELSE 1 END,
                            'summary', 'Created a task on ' || p.account_id, 'created', true,
                            'external_ref', jsonb_build_object('system', p.system, 'object', 'Task',
                                'id', '00T' || left(md5(p.id || 1), 15),
                                'url', 'https://bench.example/r/Task/00T' || left(md5(p.id || 1), 15)))
                        ELSE jsonb_build_object('status', p.status, 'explanation', 'Done.',
                            'external_refs', jsonb_build_array()) END,
               md5('prev-a' || p.i || e.k) || md5('prev-b' || p.i || e.k),
               md5('row-a' || p.i || e.k) || md5('row-b' || p.i || e.k)
        FROM bench_plan AS p CROSS JOIN (VALUES (1), (2), (3), (4)) AS e(k)
        WHERE e.k = 1
           OR (e.k IN (2, 3) AND p.status NOT IN ('PENDING', 'EXPIRED'))
           OR (e.k = 4 AND p.status NOT IN ('PENDING', 'EXECUTING'))
    """
    heads = """
        INSERT INTO ledger_heads (tenant_id, seq, row_hash)
        SELECT tenant_id, max(ordinal) * 4 + 4, md5('head' || tenant_id) || md5('head2' || tenant_id)
        FROM bench_plan GROUP BY tenant_id
    """
    marker = """
        CREATE TABLE bench_fill (executions int NOT NULL, tenants int NOT NULL, accounts int NOT NULL,
            fill_version int NOT NULL, seconds float8 NOT NULL, filled_at timestamptz NOT NULL DEFAULT now())
    """
    session = (
        "SET synchronous_commit = off; SET max_parallel_workers_per_gather = 0; "
        "SET maintenance_work_mem = '512MB'; SET work_mem = '256MB'; SELECT setseed(0.20261127)"
    )
    return (
        [("session settings", session), ("plan (temporary table)", plan), ("plan columns", plan2)],
        [(f"executions ({n:,})", executions), ("steps", steps), ("ledger", ledger), ("ledger heads", heads)],
        [
            ("VACUUM (ANALYZE)", "VACUUM (ANALYZE) executions, steps, ledger, ledger_heads"),
            ("marker", marker),
        ],
    )


def detach_indexes(conn: psycopg.Connection[Any], tables: Sequence[str]) -> list[str]:
    """Drop the indexes and unique/primary-key constraints of ``tables`` (bulk loads are faster without
    them); returns the statements that recreate them exactly as the migrations made them."""
    recreate: list[str] = []
    for table in tables:
        constraints = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype IN ('p', 'u')",
            (table,),
        ).fetchall()
        owned = {str(name) for name, _ in constraints}
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s",
            (table,),
        ).fetchall()
        for name, definition in indexes:
            if name not in owned:
                conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
                recreate.append(str(definition))
        for name, definition in constraints:
            conn.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    sql.Identifier(table), sql.Identifier(name)
                )
            )
            recreate.append(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')
    return recreate


def _sql(text: str) -> LiteralString:
    """SQL composed here from constants, integers and the catalog's own definitions (no user input)."""
    return text


def set_indexes(url: URL, wanted: bool, log: Callable[[str], None]) -> None:
    """Create or drop :data:`RECOMMENDED_INDEXES` in the bench database, then ANALYZE executions."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        for name, (create, drop) in RECOMMENDED_INDEXES.items():
            row = conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL OR EXISTS "
                "(SELECT 1 FROM pg_statistic_ext WHERE stxname = %s)",
                (name, name),
            ).fetchone()
            present = bool(row and row[0])
            if wanted and not present:
                t0 = time.perf_counter()
                conn.execute(_sql(create))
                log(f"created {name} in {time.perf_counter() - t0:.1f} s")
            elif not wanted and present:
                conn.execute(_sql(drop))
                log(f"dropped {name}")
        conn.execute("ANALYZE executions")


def database_facts(url: URL) -> dict[str, str]:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:

        def one(query: LiteralString) -> str:
            row = conn.execute(query).fetchone()
            return "" if row is None else str(row[0])

        return {
            "server": one("SELECT version()"),
            "shared_buffers": one("SHOW shared_buffers"),
            "work_mem": one("SHOW work_mem"),
            "database size": one("SELECT pg_size_pretty(pg_database_size(current_database()))"),
            "executions": one("SELECT pg_size_pretty(pg_total_relation_size('executions'))"),
            "steps": one("SELECT pg_size_pretty(pg_total_relation_size('steps'))"),
            "ledger": one("SELECT pg_size_pretty(pg_total_relation_size('ledger'))"),
            "executions rows": one("SELECT reltuples::bigint FROM pg_class WHERE relname = 'executions'"),
            "steps rows": one("SELECT reltuples::bigint FROM pg_class WHERE relname = 'steps'"),
            "ledger rows": one("SELECT reltuples::bigint FROM pg_class WHERE relname = 'ledger'"),
        }


def account_sizes(url: URL) -> list[tuple[str, str, int]]:
    """Every (tenant, account) with its number of executions (served by the composite index)."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT tenant_id, account_id, count(*) FROM executions GROUP BY tenant_id, account_id"
        ).fetchall()
    return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]


def create_tokens(engine: Engine, tenants: int) -> dict[str, str]:
    """A fresh viewer token per tenant (earlier bench tokens are deleted first)."""
    from fulfill.states import TokenRole
    from surfaces.service import ExecutionService

    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM api_tokens WHERE name = :n"), {"n": TOKEN_NAME})
    service = ExecutionService(engine)
    secrets: dict[str, str] = {}
    for t in range(tenants):
        tenant = f"bench-t{t:03d}"
        created = service.create_token(
            role=TokenRole.VIEWER, tenant_id=tenant, expires_in=timedelta(hours=6), name=TOKEN_NAME
        )
        secrets[tenant] = created.secret
    return secrets


# --- queries per request and EXPLAIN -------------------------------------------------------------
@dataclass
class Capture:
    statements: list[tuple[str, Any]] = field(default_factory=list)
    checkouts: int = 0

    def reset(self) -> None:
        self.statements.clear()
        self.checkouts = 0


@dataclass(frozen=True)
class Probe:
    label: str
    path: str
    params: QueryList
    tenant: str


@dataclass
class ProbeResult:
    label: str
    statements: int
    transactions: int
    round_trips: int
    plans: list[tuple[str, str]]  # (sql, plan)

    @property
    def executions_plan(self) -> str:
        """The executions query's plan in one line: its nodes, buffers and time."""
        for text, plan in self.plans:
            if "FROM executions" in text:
                return plan_summary(plan)
        return ""

    @property
    def seq_scans(self) -> list[str]:
        return [line.strip() for _, plan in self.plans for line in plan.splitlines() if "Seq Scan" in line]


def plan_summary(plan: str) -> str:
    """``Limit > Sort > Index Scan Backward using ix (rows=…); buffers …; … ms`` from an EXPLAIN text."""
    nodes: list[str] = []
    buffers = time_ms = ""
    for raw in plan.splitlines():
        line = raw.strip().removeprefix("->").strip()
        if "(cost=" in line:
            name = line.split("  (cost=")[0]
            rows = line.split("rows=")[-1].split()[0] if "actual" in line else "?"
            nodes.append(f"{name} (rows={rows})")
        elif line.startswith("Buffers:") and not buffers:
            buffers = line.removeprefix("Buffers:").strip()
        elif line.startswith("Execution Time:"):
            time_ms = line.removeprefix("Execution Time:").strip()
    return " > ".join(nodes) + f"; buffers {buffers}; {time_ms}"


def explain_requests(url: URL, probes: list[Probe], tokens: dict[str, str]) -> list[ProbeResult]:
    """Serve each probe in-process, count its statements/transactions and EXPLAIN what it ran."""
    with warnings.catch_warnings():  # starlette's note about httpx, not about this bench
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from fulfill.db import make_engine
    from surfaces.api import create_app
    from surfaces.service import ExecutionService

    engine = make_engine(url.render_as_string(hide_password=False))
    capture = Capture()
    trace_path = Path(tempfile.mkstemp(prefix="fulfill-bench-pq-", suffix=".trace")[1])
    trace = trace_path.open("w")

    @sa.event.listens_for(engine, "connect")
    def _trace(dbapi_connection: Any, _record: Any) -> None:
        # libpq's protocol trace: every Query and Sync the client sends waits for the server once.
        dbapi_connection.pgconn.trace(trace.fileno())
        dbapi_connection.pgconn.set_trace_flags(0)

    def round_trips_since(offset: int) -> tuple[int, int]:
        trace.flush()
        with trace_path.open() as read:
            read.seek(offset)
            lines = read.read().splitlines()
            end = read.tell()
        sent = [line.split("\t") for line in lines]
        return sum(1 for f in sent if len(f) > 3 and f[1] == "F" and f[3] in ("Query", "Sync")), end

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _statement(_c: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        capture.statements.append((statement, parameters))

    @sa.event.listens_for(engine, "checkout")
    def _checkout(*_args: Any) -> None:
        capture.checkouts += 1

    results: list[ProbeResult] = []
    app = create_app(service=ExecutionService(engine))
    with TestClient(app) as client:
        for probe in probes:
            headers = {"Authorization": f"Bearer {tokens[probe.tenant]}"}
            client.get(probe.path, params=probe.params, headers=headers)  # warm the caches
            _, offset = round_trips_since(0)
            capture.reset()
            answer = client.get(probe.path, params=probe.params, headers=headers)
            if answer.status_code != 200:
                raise SystemExit(f"{probe.label}: {answer.status_code} {answer.text[:300]}")
            ran = list(capture.statements)
            trips, _ = round_trips_since(offset)
            result = ProbeResult(probe.label, len(ran), capture.checkouts, trips, [])
            with engine.connect() as conn:
                # The service's statements run in the token's tenant scope (row-level security).
                conn.exec_driver_sql("SELECT set_config('fulfill.tenant', %(t)s, true)", {"t": probe.tenant})
                for statement, parameters in ran:
                    if not statement.lstrip().upper().startswith("SELECT"):
                        continue
                    rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
                    result.plans.append((_inline(statement, parameters), "\n".join(r[0] for r in rows)))
                conn.rollback()
            results.append(result)
    engine.dispose()
    trace.close()
    trace_path.unlink()
    return results


def _inline(statement: str, parameters: Any) -> str:
    """The statement with its parameters shown in place (for reading only)."""
    text = " ".join(statement.split())
    if isinstance(parameters, dict):
        for key in sorted(parameters, key=len, reverse=True):
            value = parameters[key]
            shown = repr(value.isoformat() if isinstance(value, datetime) else value)
            if isinstance(value, list | tuple):
                shown = "(" + ", ".join(repr(v) for v in value) + ")"
            text = text.replace(f"%({key})s", shown)
    return text


# --- the server ----------------------------------------------------------------------------------
@contextlib.contextmanager
def serve(url: URL, workers: int, log_dir: Path) -> Iterator[str]:
    """The real app under uvicorn (``workers`` processes) on a free loopback port."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        FULFILL_DATABASE_URL=url.render_as_string(hide_password=False),
        FULFILL_DATA_DIR=str(log_dir),
        PREFECT_LOGGING_LEVEL="WARNING",
        DO_NOT_TRACK="1",
        PYTHONUNBUFFERED="1",
    )
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "surfaces.api:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "info",
        # A busy machine can starve a worker's health-check answer; uvicorn then kills it (5 s default).
        "--timeout-worker-healthcheck",
        "120",
        # Clients keep their connections; a busy machine can leave one idle past uvicorn's 5 s default,
        # and a request racing the server's close would fail.
        "--timeout-keep-alive",
        "120",
    ]
    with (log_dir / "uvicorn.log").open("ab") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise SystemExit(f"uvicorn exited with {process.returncode}; see {log_dir / 'uvicorn.log'}")
            health = "no answer"
            with contextlib.suppress(httpx.HTTPError):
                probe = httpx.get(f"{base}/healthz", timeout=2)
                if probe.status_code == 200:
                    break
                health = f"{probe.status_code} {probe.text}"
            if time.monotonic() > deadline:
                raise SystemExit(f"/healthz: {health}; see {log_dir / 'uvicorn.log'}")
            time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the load ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    path: str
    params: QueryList
    token: str


@dataclass
class RunResult:
    label: str
    latencies: list[float]
    seconds: float
    errors: dict[int, int]

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def row(self) -> str:
        ms = [x * 1000 for x in self.latencies]
        failed = sum(self.errors.values())
        if not ms:
            return f"| {self.label} | 0 | – | – | – | – | – | {failed} |"
        return (
            f"| {self.label} | {len(ms):,} | {percentile(ms, 0.50):.1f} | {percentile(ms, 0.95):.1f} | "
            f"{percentile(ms, 0.99):.1f} | {max(ms):.1f} | {self.throughput:.0f} | {failed} |"
        )


TABLE_HEAD = [
    "| request | n | p50 ms | p95 ms | p99 ms | max ms | req/s | errors |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
]


async def drive(
    client: httpx.AsyncClient, label: str, make: Callable[[random.Random], Call], clients: int, total: int
) -> RunResult:
    """``total`` requests from ``clients`` concurrent tasks sharing one keep-alive client."""
    remaining = total
    latencies: list[float] = []
    errors: dict[int, int] = {}
    shown: set[int] = set()

    async def worker(seed: int) -> None:
        nonlocal remaining
        rng = random.Random(seed)
        while remaining > 0:
            remaining -= 1
            call = make(rng)
            t0 = time.perf_counter()
            try:
                answer = await client.get(
                    call.path, params=call.params, headers={"Authorization": call.token}
                )
            except httpx.TransportError as exc:  # counted as an error (code 0), the run goes on
                errors[0] = errors.get(0, 0) + 1
                if 0 not in shown:
                    shown.add(0)
                    print(f"  {label}: {type(exc).__name__}", file=sys.stderr)
                continue
            elapsed = time.perf_counter() - t0
            if answer.status_code == 200:
                latencies.append(elapsed)
            else:
                errors[answer.status_code] = errors.get(answer.status_code, 0) + 1
                if answer.status_code not in shown:
                    shown.add(answer.status_code)
                    print(f"  {label}: {answer.status_code} {answer.text[:200]}", file=sys.stderr)

    started = time.perf_counter()
    await asyncio.gather(*(worker(hash((label, c)) & 0xFFFFFFFF) for c in range(clients)))
    return RunResult(label, latencies, time.perf_counter() - started, errors)


async def harvest_cursors(
    client: httpx.AsyncClient,
    accounts: list[tuple[str, str, int]],
    tokens: dict[str, str],
    status: str | None,
    clients: int,
    max_pages: int,
) -> list[tuple[str, str, str]]:
    """Walk listings page by page; every ``next_cursor`` seen (tenant, account, cursor)."""
    found: list[tuple[str, str, str]] = []
    gate = asyncio.Semaphore(clients)

    async def walk(tenant: str, account: str) -> None:
        cursor: str | None = None
        for _ in range(max_pages):
            params: QueryList = [("limit", str(PAGE))]
            if status:
                params.append(("status", status))
            if cursor:
                params.append(("cursor", cursor))
            try:
                async with gate:
                    answer = await client.get(
                        f"/accounts/{account}/executions",
                        params=params,
                        headers={"Authorization": f"Bearer {tokens[tenant]}"},
                    )
            except httpx.TransportError:
                return  # this listing's remaining cursors are not collected
            answer.raise_for_status()
            cursor = answer.json()["next_cursor"]
            if not cursor:
                return
            found.append((tenant, account, cursor))

    await asyncio.gather(*(walk(t, a) for t, a, _ in accounts))
    return found


@dataclass
class Workload:
    fill: Fill
    tokens: dict[str, str]
    accounts: list[tuple[str, str, int]]
    filter_status: str = "FAILED"

    def bearer(self, tenant: str) -> str:
        return f"Bearer {self.tokens[tenant]}"

    def status_call(self, rng: random.Random) -> Call:
        i = rng.randint(1, self.fill.executions)
        return Call(f"/actions/{intent_id(i)}/status", [], self.bearer(tenant_of(i, self.fill.tenants)))

    def first_page(self, status: str | None) -> Callable[[random.Random], Call]:
        def make(rng: random.Random) -> Call:
            tenant, account, _ = rng.choice(self.accounts)
            params: QueryList = [("limit", str(PAGE))]
            if status:
                params.append(("status", status))
            return Call(f"/accounts/{account}/executions", params, self.bearer(tenant))

        return make

    def next_page(
        self, cursors: list[tuple[str, str, str]], status: str | None
    ) -> Callable[[random.Random], Call]:
        def make(rng: random.Random) -> Call:
            tenant, account, cursor = rng.choice(cursors)
            params: QueryList = [("limit", str(PAGE)), ("cursor", cursor)]
            if status:
                params.append(("status", status))
            return Call(f"/accounts/{account}/executions", params, self.bearer(tenant))

        return make


async def measure(
    base: str, work: Workload, args: argparse.Namespace
) -> tuple[list[RunResult], dict[str, int]]:
    """Harvest cursors (the warm-up of the list runs), then one warm-up and one measured run per kind."""
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        rng = random.Random(7)
        sample = rng.sample(work.accounts, min(len(work.accounts), args.harvest_accounts))
        hottest = sorted(work.accounts, key=lambda a: -a[2])[:5]
        walked = sample + [a for a in hottest if a not in sample]
        plain = await harvest_cursors(client, walked, work.tokens, None, args.clients, args.max_pages)
        failed = await harvest_cursors(
            client, walked, work.tokens, work.filter_status, args.clients, args.max_pages
        )
        f = work.filter_status
        kinds: list[tuple[str, Callable[[random.Random], Call]]] = [
            ("GET /actions/{id}/status", work.status_call),
            ("list, first page", work.first_page(None)),
            (f"list status={f}, first page", work.first_page(f)),
        ]
        if plain:
            kinds.insert(2, ("list, cursor page", work.next_page(plain, None)))
        if failed:
            kinds.append((f"list status={f}, cursor page", work.next_page(failed, f)))
        if not plain or not failed:
            print("  (some listings have no second page at this size: their cursor run is left out)")
        results = []
        for label, make in kinds:
            await drive(client, label, make, args.clients, args.warmup)
            result = await drive(client, label, make, args.clients, args.requests)
            print(f"  {result.row()}", flush=True)
            results.append(result)
    return results, {"cursor pages (no filter)": len(plain), f"cursor pages ({f})": len(failed)}


# --- main ------------------------------------------------------------------------------------------
def probes_for(work: Workload, hot: tuple[str, str, int], url: URL) -> list[Probe]:
    """One request of each kind; the list ones on the hottest account, deep cursors included."""
    tenant, account, _ = hot
    status_id = next(
        i for i in range(work.fill.executions, 0, -1) if tenant_of(i, work.fill.tenants) == tenant
    )
    cursor = _deep_cursor(url, work, hot, None)
    failed_cursor = _deep_cursor(url, work, hot, work.filter_status)
    base = f"/accounts/{account}/executions"
    probes = [
        Probe("status", f"/actions/{intent_id(status_id)}/status", [], tenant),
        Probe("timeline (for comparison)", f"/actions/{intent_id(status_id)}/timeline", [], tenant),
        Probe("list, first page (hottest account)", base, [("limit", str(PAGE))], tenant),
        Probe(
            f"list status={work.filter_status}, first page (hottest account)",
            base,
            [("limit", str(PAGE)), ("status", work.filter_status)],
            tenant,
        ),
    ]
    if cursor:
        probes.append(
            Probe(
                "list, deep cursor page (hottest account)",
                base,
                [("limit", str(PAGE)), ("cursor", cursor)],
                tenant,
            )
        )
    if failed_cursor:
        probes.append(
            Probe(
                f"list status={work.filter_status}, cursor page (hottest account)",
                base,
                [("limit", str(PAGE)), ("status", work.filter_status), ("cursor", failed_cursor)],
                tenant,
            )
        )
    return probes


def _deep_cursor(url: URL, work: Workload, hot: tuple[str, str, int], status: str | None) -> str | None:
    """The cursor of the listing's middle page (the service's own encoding of a real row)."""
    from fulfill.views import encode_cursor

    tenant, account, count = hot
    where = "tenant_id = %s AND account_id = %s" + (" AND status = %s" if status else "")
    params: tuple[Any, ...] = (tenant, account, status) if status else (tenant, account)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        matching = conn.execute(_sql(f"SELECT count(*) FROM executions WHERE {where}"), params).fetchone()
        total = int(matching[0]) if matching else 0
        if total <= PAGE:
            return None
        offset = (total // PAGE // 2) * PAGE - 1
        row = conn.execute(
            _sql(
                f"SELECT created_at, action_intent_id FROM executions WHERE {where} "
                "ORDER BY created_at DESC, action_intent_id DESC OFFSET %s LIMIT 1"
            ),
            (*params, max(offset, PAGE - 1)),
        ).fetchone()
    if row is None:
        return None
    return encode_cursor(row[0], str(row[1]), f"{tenant}|{account}")


def explain_row_keyset(app_url: URL, hot: tuple[str, str, int], cursor: str) -> tuple[str, str]:
    """EXPLAIN the cursor page written with a row-value comparison, ``(created_at, action_intent_id) <
    (:created, :id)``: equivalent to the service's ``created_at < :c OR (created_at = :c AND id < :id)``,
    but usable as an index condition, so a deep page starts at the cursor instead of walking the newer
    rows. (A proposed change to ``ExecutionService.list_executions``; not what the service runs today.)"""
    from sqlmodel import col, select

    from fulfill.db import make_engine, transaction
    from fulfill.tables import Execution
    from fulfill.views import decode_cursor

    tenant, account, _ = hot
    created, last_id = decode_cursor(cursor, f"{tenant}|{account}")
    query = (
        select(Execution)
        .where(Execution.tenant_id == tenant, Execution.account_id == account)
        .where(sa.tuple_(col(Execution.created_at), col(Execution.action_intent_id)) < (created, last_id))
        .order_by(col(Execution.created_at).desc(), col(Execution.action_intent_id).desc())
        .limit(PAGE + 1)
    )
    engine = make_engine(app_url.render_as_string(hide_password=False))
    seen: list[tuple[str, Any]] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _statement(_c: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    try:
        with transaction(engine, tenant=tenant) as session:
            session.exec(query).all()
            statement, parameters = seen[-1]
            rows = session.connection().exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            plan = "\n".join(r[0] for r in rows)
    finally:
        engine.dispose()
    return _inline(statement, parameters), plan


def phase(
    url: URL, app_url: URL, work: Workload, args: argparse.Namespace, label: str, log_dir: Path
) -> tuple[list[ProbeResult], list[RunResult], dict[str, int]]:
    """EXPLAIN and count one request of each kind, then serve ``app_url`` and measure."""
    hot = max(work.accounts, key=lambda a: a[2])
    print(f"\n=== {label} ===", flush=True)
    probed = explain_requests(app_url, probes_for(work, hot, url), work.tokens)
    for result in probed:
        print(
            f"\n--- {result.label}: {result.statements} statements in {result.transactions} transactions, "
            f"{result.round_trips} round trips to PostgreSQL"
        )
        for text, plan in result.plans:
            print(f"SQL: {text}\n{plan}\n")
        for line in result.seq_scans:
            print(f"!!! sequential scan: {line}")
    cursor = _deep_cursor(url, work, hot, None)
    if cursor:
        text, plan = explain_row_keyset(app_url, hot, cursor)
        print(f"\n--- proposed: the deep cursor page with a row-value keyset\nSQL: {text}\n{plan}\n")
        probed.append(
            ProbeResult("list, deep cursor page, row-value keyset (proposed)", -1, -1, -1, [(text, plan)])
        )
    with serve(app_url, args.workers, log_dir) as base:
        print(f"\nserver {base} ({args.workers} uvicorn workers); {args.clients} clients", flush=True)
        print("\n".join("  " + line for line in TABLE_HEAD))
        runs, harvested = asyncio.run(measure(base, work, args))
    return probed, runs, harvested


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/fulfill_bench")
    parser.add_argument("--executions", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--accounts", type=int, default=5_000, help="in all, spread evenly over the tenants")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2_000, help="measured requests per request kind")
    parser.add_argument("--warmup", type=int, default=300, help="unmeasured requests before each run")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument(
        "--harvest-accounts", type=int, default=300, help="listings walked to collect cursors"
    )
    parser.add_argument("--max-pages", type=int, default=40, help="pages walked per listing")
    parser.add_argument(
        "--indexes",
        choices=["compare", "migrated", "recommended"],
        default="migrated",
        help="measure as migrated, with RECOMMENDED_INDEXES, or both (before/after)",
    )
    parser.add_argument("--refill", action="store_true", help="drop and refill the bench database")
    parser.add_argument("--fill-only", action="store_true", help="prepare the database, then stop")
    parser.add_argument(
        "--runtime-role",
        default="fulfill_bench_app",
        help="login role the app connects as (created if missing; granted like FULFILL_RUNTIME_ROLE) so "
        "that row-level security applies as in production; '' = the --url user",
    )
    args = parser.parse_args()

    url = make_url(args.url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    if not url.drivername.startswith("postgresql"):
        raise SystemExit("--url: the bench needs PostgreSQL")
    fill = Fill(args.executions, args.tenants, args.accounts)
    log_dir = Path(tempfile.mkdtemp(prefix="fulfill-bench-status-"))
    os.environ["FULFILL_DATABASE_URL"] = url.render_as_string(hide_password=False)
    os.environ.setdefault("FULFILL_DATA_DIR", str(log_dir))
    sys.path.insert(0, str(ROOT))

    def log(message: str) -> None:
        print(message, flush=True)

    role = args.runtime_role or None
    if role:
        ensure_runtime_role(url, role)
    app_url = url.set(username=role, password=None) if role else url
    fill_seconds = prepare_database(url, fill, force=args.refill, runtime_role=role, log=log)
    if fill_seconds is not None:
        log(f"filled in {fill_seconds:.0f} s")
    facts = database_facts(url)
    log("; ".join(f"{k}: {v}" for k, v in facts.items()))
    if args.fill_only:
        return

    from fulfill.db import make_engine

    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        tokens = create_tokens(engine, fill.tenants)
    finally:
        engine.dispose()
    work = Workload(fill, tokens, account_sizes(url))

    phases: Sequence[tuple[str, bool]] = {
        # Migration 0006 creates RECOMMENDED_INDEXES: "as migrated" has them; "compare" first drops them.
        "compare": [("without the listing indexes", False), ("as migrated", True)],
        "migrated": [("as migrated", True)],
        "recommended": [("as migrated", True)],
    }[args.indexes]
    outcome: list[tuple[str, list[ProbeResult], list[RunResult], dict[str, int]]] = []
    for label, wanted in phases:
        set_indexes(url, wanted, log)
        probed, runs, harvested = phase(url, app_url, work, args, label, log_dir)
        outcome.append((label, probed, runs, harvested))

    sizes = sorted(a[2] for a in work.accounts)
    print("\n\n# Markdown\n")
    print(
        f"Run {datetime.now(tz=UTC):%Y-%m-%d %H:%M} UTC: {fill.executions:,} executions, "
        f"{facts['steps rows']} step records, {facts['ledger rows']} ledger rows; {fill.tenants} tenants, "
        f"{len(work.accounts):,} accounts (executions per account: median {sizes[len(sizes) // 2]}, "
        f"max {sizes[-1]}); database {facts['database size']}. {args.clients} clients, "
        f"{args.requests:,} measured requests per row after {args.warmup} warm-up requests, "
        f"page size {PAGE}; {args.workers} uvicorn workers, the app connecting as "
        f"{'the non-owner role ' + role + ' (row-level security applies)' if role else app_url.username}; "
        f"{platform.python_implementation()} "
        f"{platform.python_version()}.\n"
    )
    for label, probed, runs, harvested in outcome:
        print(f"**{label}**" + (" (" + ", ".join(f"{k}: {v}" for k, v in harvested.items()) + ")") + "\n")
        print("\n".join(TABLE_HEAD))
        for run in runs:
            print(run.row())
        print()
        print(
            "| request (one, in-process) | SQL statements | transactions | round trips | "
            "sequential scans | plan of the executions query |"
        )
        print("|---|---:|---:|---:|---|---|")
        for result in probed:
            scans = "; ".join(result.seq_scans) or "none"
            counts = " | ".join(
                str(n) if n >= 0 else "–"
                for n in (result.statements, result.transactions, result.round_trips)
            )
            print(f"| {result.label} | {counts} | {scans} | {result.executions_plan} |")
        print()
    print(f"(uvicorn log: {log_dir / 'uvicorn.log'})")


if __name__ == "__main__":
    main()
