"""The append-only ledger: one row per fact, chained per tenant with a key the database never holds.

``row_hash = HMAC-SHA256(K_chain, prev_hash || JCS(row))`` where ``row`` is the canonical content
(tenant, seq, intent, type, time, actor, details) and ``K_chain`` is derived from the ledger key
(``FULFILL_LEDGER_KEY``, else the key file — see :func:`ledger_key`). Someone who can write to the
database but does not hold the key cannot forge, append or re-chain a row that verifies. Appends
lock the tenant's chain head, so concurrent writers never fork a chain; the database moves the head
with each row (trigger ``ledger_advances_head``, migration 0008).

What a keyed chain alone cannot see — its last rows deleted, or a whole tenant's chain — the signed
checkpoints of :mod:`fulfill.anchors` (exported outside the database) show: :func:`verify_chains`
takes them as ``anchors`` and reports the first broken or missing row (``fulfill ledger verify``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import rfc8785
import sqlalchemy as sa
from sqlmodel import Session, col, select

from fulfill.db import insert_ignore
from fulfill.redaction import redact, storable
from fulfill.settings import Settings, load_settings
from fulfill.tables import LedgerAppended, LedgerBase, LedgerEntry, LedgerHead

log = logging.getLogger(__name__)

GENESIS = "0" * 64
KEY_FILE_NAME = "ledger.key"
EVENT_TYPES = frozenset(
    {
        "INTENT_RECEIVED",
        "INTENT_REJECTED",
        "EXECUTION_STARTED",
        "STEP_STARTED",
        "STEP_SUCCEEDED",
        "STEP_RETRY_SCHEDULED",
        "STEP_FAILED",
        "COMPENSATED",
        "COMPENSATION_FAILED",
        "ACTION_EXECUTED",
        "ACTION_FAILED",
        "ACTION_EXPIRED",
        "ACTION_CANCELLED",
        "KILL_SWITCH_CHANGED",
        "EXECUTION_HALTED",
        "RERUN_REQUESTED",
        "TENANT_CONFIGURED",
    }
)


HASHED_FIELDS = ("tenant_id", "seq", "action_intent_id", "event_type", "at", "actor", "details")
#: A row's columns as an append writes them (``id`` is the database's).
_ROW_COLUMNS = (*HASHED_FIELDS, "prev_hash", "row_hash")


# --- the key -----------------------------------------------------------------------------------
class LedgerKeyError(ValueError):
    """The ledger key cannot be loaded; the message starts with the setting to fix."""


@dataclass(frozen=True)
class LedgerKey:
    """The keys derived from one ledger secret: one chains rows, one signs checkpoints.

    ``key_id`` names the secret (a keyed digest, safe to show and store); the secret itself never
    leaves the process.
    """

    chain: bytes = field(repr=False)
    anchor: bytes = field(repr=False)
    key_id: str
    source: str

    @classmethod
    def from_secret(cls, secret: bytes, source: str) -> LedgerKey:
        """Derive the chain and checkpoint keys (HMAC-SHA256 of fixed labels) from ``secret``."""

        def derive(label: bytes) -> bytes:
            return hmac.new(secret, label, hashlib.sha256).digest()

        return cls(
            chain=derive(b"fulfill ledger chain v1"),
            anchor=derive(b"fulfill ledger checkpoint v1"),
            key_id=derive(b"fulfill ledger key id v1").hex()[:16],
            source=source,
        )


_key_lock = threading.Lock()
_file_keys: dict[tuple[str, int, int, int], LedgerKey] = {}


def ledger_key(settings: Settings | None = None) -> LedgerKey:
    """The ledger key of this process: ``FULFILL_LEDGER_KEY``, else the key file.

    The key file is ``FULFILL_LEDGER_KEY_FILE`` (it must exist), else ``ledger.key`` in the data
    directory — created on first use with 32 random bytes and mode 0600 (the embedded default: one
    machine, one key). Every process that writes or verifies the same database needs the same key.

    Raises:
        LedgerKeyError: the named file is missing, unreadable or too short.
    """
    settings = settings or load_settings()
    if settings.ledger_key is not None:
        return _derived(settings.ledger_key.get_secret_value().encode("utf-8"), "FULFILL_LEDGER_KEY")
    if settings.ledger_key_file is not None:
        return _from_file(settings.ledger_key_file, create=False)
    return _from_file(settings.data_dir / KEY_FILE_NAME, create=True)


_derived_keys: dict[tuple[bytes, str], LedgerKey] = {}


def _derived(secret: bytes, source: str) -> LedgerKey:
    with _key_lock:
        key = _derived_keys.get((secret, source))
        if key is None:
            key = _derived_keys[(secret, source)] = LedgerKey.from_secret(secret, source)
        return key


def _from_file(path: Path, *, create: bool) -> LedgerKey:
    name = "FULFILL_LEDGER_KEY_FILE" if not create else "FULFILL_LEDGER_KEY (key file)"
    try:
        info = path.stat()
    except FileNotFoundError:
        if not create:
            raise LedgerKeyError(f"{name}: {path} does not exist") from None
        _create_key_file(path)
        info = path.stat()
    except OSError as exc:
        raise LedgerKeyError(f"{name}: cannot read {path}: {exc.strerror or exc}") from None
    cache_key = (str(path), info.st_ino, info.st_mtime_ns, info.st_size)
    with _key_lock:
        cached = _file_keys.get(cache_key)
    if cached is not None:
        return cached
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s: %s is readable by other users; chmod 600 it", name, path)
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise LedgerKeyError(f"{name}: cannot read {path}: {exc.strerror or exc}") from None
    if len(secret) < 32:
        raise LedgerKeyError(f"{name}: {path} must hold at least 32 characters")
    key = LedgerKey.from_secret(secret, f"key file {path}")
    with _key_lock:
        _file_keys[cache_key] = key
    return key


def _create_key_file(path: Path) -> None:
    """Write a new random key atomically with mode 0600; another process that won the race wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # fails if the file appeared meanwhile: keep that one
        except FileExistsError:
            pass
        else:
            log.info(
                "created the ledger key %s (mode 0600); back it up: without it the ledger cannot be verified",
                path,
            )
    finally:
        tmp.unlink(missing_ok=True)


# --- rows ---------------------------------------------------------------------------------------
#: RFC 8785 numbers are IEEE 754 doubles: ``rfc8785`` refuses integers beyond ±(2**53 - 1).
_JCS_MAX_INT = 2**53 - 1
#: Nesting the fast canonical form walks; deeper content takes ``rfc8785`` (the original path).
_FAST_MAX_DEPTH = 64
_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
#: The lead byte of a 4-byte UTF-8 sequence: a character at or above U+10000.
_NON_BMP_UTF8 = re.compile(rb"[\xf0-\xf4]")


def canonical_row(row: LedgerBase) -> bytes:
    """The exact bytes a ledger row's hash covers: RFC 8785 JCS of :data:`HASHED_FIELDS`.

    That is ``rfc8785.dumps(row.model_dump(mode="json", include=HASHED_FIELDS))``, which
    :func:`_canonical_fast` renders an order of magnitude faster whenever it can prove the bytes equal;
    otherwise (floats, huge integers, non-JSON types, …) it is computed that way.
    """
    fast = _canonical_fast(
        row.tenant_id, row.seq, row.action_intent_id, row.event_type, row.at, row.actor, row.details
    )
    if fast is not None:
        return fast
    return rfc8785.dumps(row.model_dump(mode="json", include=set(HASHED_FIELDS)))


def _canonical_fast(
    tenant_id: object,
    seq: object,
    action_intent_id: object,
    event_type: object,
    at: object,
    actor: object,
    details: object,
) -> bytes | None:
    """The row's RFC 8785 bytes by ``orjson`` (sorted keys, compact), or ``None`` when not provably equal.

    ``orjson.dumps(value, option=OPT_SORT_KEYS)`` is byte for byte ``rfc8785.dumps(value)`` when
    (tests/fulfill/test_ledger_canonical.py checks it): every value is exactly ``dict`` (string
    keys), ``list``, ``str``, ``bool``, ``None`` or ``int`` within ±(2**53 - 1) — no float, whose
    notations differ, nor a subclass, an enum or a tuple — ; no string holds a lone surrogate
    (``orjson`` refuses it; ``rfc8785`` refuses it too, so that row takes the original path and
    fails there as before); and no object key holds a character at or above U+10000, the only case
    where ordering by code point (``orjson``) and by UTF-16 code unit (JCS) differ. Strings are
    escaped alike: quote, backslash and the short forms of b f n r t; other control characters as
    lower-case ``u00xx`` escapes; everything else (DEL, U+2028, non-ASCII) as raw UTF-8. Those exact
    types are also what ``model_dump(mode="json")`` returns unchanged, so the bytes equal the original
    definition's.
    """
    if not (
        type(seq) is int
        and -_JCS_MAX_INT <= seq <= _JCS_MAX_INT
        and type(tenant_id) is str
        and type(event_type) is str
        and type(at) is str
        and type(actor) is str
        and (action_intent_id is None or type(action_intent_id) is str)
        and type(details) is dict
        and _plain_json(details, 0)
    ):
        return None
    content = {
        "tenant_id": tenant_id,
        "seq": seq,
        "action_intent_id": action_intent_id,
        "event_type": event_type,
        "at": at,
        "actor": actor,
        "details": details,
    }
    try:
        out = orjson.dumps(content, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:  # a lone surrogate
        return None
    if not out.isascii() and _NON_BMP_UTF8.search(out) is not None and not _bmp_keys(details, 0):
        return None
    return out


def _plain_json(value: dict[Any, Any] | list[Any], depth: int) -> bool:
    """Whether every member is exactly str, bool, None, int within ±(2**53 - 1), or such a dict or list."""
    if depth > _FAST_MAX_DEPTH:
        return False
    items: Iterable[Any]
    if type(value) is dict:
        for key in value:
            if type(key) is not str:
                return False
        items = value.values()
    else:
        items = value
    for item in items:
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -_JCS_MAX_INT <= item <= _JCS_MAX_INT:
                continue
            return False
        if (kind is dict or kind is list) and _plain_json(item, depth + 1):
            continue
        return False
    return True


def _bmp_keys(value: Any, depth: int) -> bool:
    """Whether no object key (at any depth) holds a character at or above U+10000."""
    if type(value) is dict:
        for key, item in value.items():
            if (not key.isascii() and max(key) > "\uffff") or not _bmp_keys(item, depth + 1):
                return False
    elif type(value) is list:
        return all(_bmp_keys(item, depth + 1) for item in value)
    return True


def _stored_canonical(
    tenant_id: Any, seq: Any, action_intent_id: Any, event_type: Any, at: Any, actor: Any, details_json: Any
) -> bytes:
    """:func:`canonical_row` of a stored row, its details as the JSON text the database holds.

    ``orjson.loads`` gives the same plain values as the ORM's ``json.loads`` whenever
    :func:`_canonical_fast` accepts them (it refuses floats, which is also what ``orjson`` makes of
    integers beyond 64 bits; it refuses lone surrogates, NaN and Infinity). Anything else is loaded
    as the ORM loads it (``json.loads``) and canonicalised through the model, as before.
    """
    try:
        details = orjson.loads(details_json)
    except (ValueError, TypeError):  # not JSON orjson accepts (NaN, a lone surrogate, …), or NULL
        fast = None
    else:
        fast = _canonical_fast(tenant_id, seq, action_intent_id, event_type, at, actor, details)
    if fast is not None:
        return fast
    loaded: Any = None if details_json is None else json.loads(details_json)  # the ORM's own loading
    entry = LedgerEntry(
        tenant_id=tenant_id,
        seq=seq,
        action_intent_id=action_intent_id,
        event_type=event_type,
        at=at,
        actor=actor,
        details=loaded,
        prev_hash="",
        row_hash="",
    )
    return rfc8785.dumps(entry.model_dump(mode="json", include=set(HASHED_FIELDS)))


def chain_hash(prev_hash: str, canonical: bytes, key: LedgerKey | None = None) -> str:
    """``HMAC-SHA256(K_chain, prev_hash || canonical)`` as hex (``key`` default: :func:`ledger_key`)."""
    key = key or ledger_key()
    return hmac.new(key.chain, prev_hash.encode("ascii") + canonical, hashlib.sha256).hexdigest()


# The statements of an append and of verify.
_ENTRIES: sa.Table = LedgerEntry.__table__  # type: ignore[attr-defined]
_HEADS: sa.Table = LedgerHead.__table__  # type: ignore[attr-defined]
#: An append's two statements as the driver's SQL, sent with ``exec_driver_sql`` (SQLAlchemy's error
#: handling and connection invalidation, without compiling Core statements for each fact: that was
#: about 60 µs of an append's 530 on SQLite, measured). Named parameters on both drivers.
_APPEND_SQL: dict[str, tuple[str, str]] = {
    # PostgreSQL: the head row locked (``FOR UPDATE``), then ``clock_timestamp()`` — evaluated above the
    # locking CTE, so after the lock is granted (what ``db_now`` after the locking ``SELECT`` gave).
    "postgresql": (
        "WITH head AS (SELECT seq, row_hash FROM ledger_heads WHERE tenant_id = %(tenant_id)s FOR UPDATE) "
        "SELECT seq, row_hash, clock_timestamp() FROM head",
        f"INSERT INTO ledger ({', '.join(_ROW_COLUMNS)}) VALUES "
        f"({', '.join(f'%({c})s::jsonb' if c == 'details' else f'%({c})s' for c in _ROW_COLUMNS)}) RETURNING id",
    ),
    # SQLite: the transaction already holds the write lock (``BEGIN IMMEDIATE``); the clock as ``db_now``.
    "sqlite": (
        "SELECT seq, row_hash, strftime('%Y-%m-%d %H:%M:%f', 'now') FROM ledger_heads WHERE tenant_id = :tenant_id",
        f"INSERT INTO ledger ({', '.join(_ROW_COLUMNS)}) VALUES "
        f"({', '.join(f':{c}' for c in _ROW_COLUMNS)}) RETURNING id",
    ),
}
#: The head as it is, unlocked (verification).
_HEAD = sa.select(_HEADS.c.seq, _HEADS.c.row_hash).where(_HEADS.c.tenant_id == sa.bindparam("tenant_id"))


def append(
    session: Session,
    *,
    tenant_id: str,
    event_type: str,
    action_intent_id: str | None = None,
    actor: str = "system",
    details: Mapping[str, Any] | None = None,
    key: LedgerKey | None = None,
) -> LedgerAppended:
    """Append one fact to the tenant's chain inside the caller's transaction.

    Args:
        session: An open transaction; the row commits or rolls back with the caller's work.
        tenant_id: Whose chain.
        event_type: One of :data:`EVENT_TYPES`.
        action_intent_id: The intent this fact is about, if any.
        actor: ``system``, the approver, or the operator.
        details: JSON details; secret-looking keys are redacted before hashing.
        key: The ledger key (default: :func:`ledger_key`).

    Returns:
        The new row as written, with its id (the driver's SQL: no ORM object in the session).
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown ledger event type {event_type!r}")
    key = key or ledger_key()
    clean = storable(redact(dict(details or {})))  # a provider's text may hold what no database stores
    session.flush()  # the caller's pending writes go first (as the ORM's autoflush did)
    conn = session.connection()
    postgres = conn.dialect.name == "postgresql"
    head_sql, insert_sql = _APPEND_SQL[conn.dialect.name]
    # The head row, locked, and the database clock read once the lock is held: one round trip.
    # A tenant's first fact creates the head (insert-or-ignore: two first facts at once make one head).
    head = conn.exec_driver_sql(head_sql, {"tenant_id": tenant_id}).one_or_none()
    if head is None:
        insert_ignore(session, LedgerHead, {"tenant_id": tenant_id, "seq": 0, "row_hash": GENESIS})
        head = conn.exec_driver_sql(head_sql, {"tenant_id": tenant_id}).one()
    prev_seq, prev_hash, clock = head
    now = clock.astimezone(UTC) if postgres else datetime.fromisoformat(clock).replace(tzinfo=UTC)
    seq, at = prev_seq + 1, now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    hashed = (tenant_id, seq, action_intent_id, event_type, at, actor, clean)
    values = dict(zip(HASHED_FIELDS, hashed, strict=True))
    row_hash = chain_hash(prev_hash, canonical_row(LedgerBase.model_construct(**values)), key)
    # The row; the database's trigger ``ledger_advances_head`` (migration 0008) moves the head with it.
    stored = {**values, "details": json.dumps(clean), "prev_hash": prev_hash, "row_hash": row_hash}
    row_id = conn.exec_driver_sql(insert_sql, stored).scalar_one()
    return LedgerAppended.model_construct(id=row_id, prev_hash=prev_hash, row_hash=row_hash, **values)


def entries_for_intent(session: Session, tenant_id: str, action_intent_id: str) -> list[LedgerEntry]:
    """An intent's ledger rows, oldest first (tenant-scoped)."""
    query = (
        select(LedgerEntry)
        .where(LedgerEntry.tenant_id == tenant_id, LedgerEntry.action_intent_id == action_intent_id)
        .order_by(col(LedgerEntry.seq))
    )
    return list(session.exec(query))


# --- verification -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Anchor:
    """A tenant's chain head as a signed checkpoint recorded it (see :mod:`fulfill.anchors`)."""

    seq: int
    row_hash: str
    rows: int
    anchored_at: str


@dataclass(frozen=True)
class ChainReport:
    """Verification result of one tenant's chain.

    ``broken_seq`` is the first row that does not verify or is missing; ``broken_id`` its database
    id when the row exists. ``head_hash`` is the last row's hash (what a checkpoint anchors);
    ``anchored_seq`` the sequence number the newest checkpoint holds for this tenant, if any.
    """

    tenant_id: str
    rows: int
    ok: bool
    broken_seq: int | None = None
    broken_id: int | None = None
    reason: str | None = None
    head_hash: str | None = None
    anchored_seq: int | None = None


def chain_tenants(session: Session) -> set[str]:
    """Every tenant with a chain head or a ledger row."""
    return set(session.exec(select(LedgerHead.tenant_id))) | set(
        session.exec(select(LedgerEntry.tenant_id).distinct())
    )


def verify_chains(
    session: Session,
    tenant_ids: Iterable[str] | None = None,
    *,
    key: LedgerKey | None = None,
    anchors: Mapping[str, Anchor] | None = None,
) -> list[ChainReport]:
    """Recompute every chain (or the given tenants') and report the first broken or missing row of each.

    Args:
        key: The ledger key (default: :func:`ledger_key`).
        anchors: The newest checkpoint's chain heads by tenant. With them, rows deleted from a
            chain's end and whole chains deleted since that checkpoint are reported, as is a chain
            rewritten (and re-chained with the key) up to the anchored row. Every anchored tenant is
            verified, even when the database no longer has a row of it.
    """
    key = key or ledger_key()
    anchors = anchors or {}
    session.flush()  # rows are read with Core statements: the session's pending writes first (autoflush)
    if tenant_ids is None:
        tenant_ids = sorted(chain_tenants(session) | set(anchors))
    mac = hmac.new(key.chain, digestmod=hashlib.sha256)  # keyed once; each row hashes a copy
    return [_verify_one(session, tenant_id, mac, anchors.get(tenant_id)) for tenant_id in tenant_ids]


#: Rows read per statement while verifying: a chain is read in pages of this many (memory stays bounded).
VERIFY_PAGE = 5_000


def _stored_rows(session: Session, tenant_id: str) -> Iterator[sa.Row[*tuple[Any, ...]]]:
    """A chain's hashed columns as plain tuples, oldest first; details as the stored JSON text.

    Columns: id, tenant_id, seq, action_intent_id, event_type, at, actor, details, prev_hash, row_hash.
    Read in pages of :data:`VERIFY_PAGE` rows by ``seq`` (``seq`` is unique per tenant): the first
    page without a lower bound, so that every row is read whatever its ``seq``; each next one after
    the last ``seq`` read. Each page is one plain statement (no server-side cursor to declare, fetch
    from and close); on PostgreSQL each sees the chain as committed when it runs, as the final read of
    the head always did.
    """
    conn = session.connection()
    text = _CHAIN_PAGE_TEXT_PG if session.get_bind().dialect.name == "postgresql" else _CHAIN_PAGE_TEXT
    page = conn.execute(text[0], {"tenant_id": tenant_id, "page": VERIFY_PAGE}).all()
    while True:
        yield from page
        if len(page) < VERIFY_PAGE:
            return
        after = {"tenant_id": tenant_id, "page": VERIFY_PAGE, "after": page[-1][2]}
        page = conn.execute(text[1], after).all()


def _chain_pages(details: Any) -> tuple[sa.Select[*tuple[Any, ...]], sa.Select[*tuple[Any, ...]]]:
    """The first page of a chain and the page after ``:after`` (see :func:`_stored_rows`)."""
    c = _ENTRIES.c
    first = (
        sa.select(
            c.id,
            c.tenant_id,
            c.seq,
            c.action_intent_id,
            c.event_type,
            c.at,
            c.actor,
            details,
            c.prev_hash,
            c.row_hash,
        )
        .where(c.tenant_id == sa.bindparam("tenant_id"))
        .order_by(c.seq)
        .limit(sa.bindparam("page"))
    )
    return first, first.where(c.seq > sa.bindparam("after"))


#: jsonb's text on PostgreSQL (exactly what psycopg parses for the ORM); elsewhere the stored text.
_CHAIN_PAGE_TEXT_PG = _chain_pages(sa.cast(_ENTRIES.c.details, sa.Text))
_CHAIN_PAGE_TEXT = _chain_pages(sa.type_coerce(_ENTRIES.c.details, sa.Text))


def _verify_one(session: Session, tenant_id: str, mac: hmac.HMAC, anchor: Anchor | None) -> ChainReport:
    anchored = anchor.seq if anchor is not None else None

    def broken(count: int, seq: int, row_id: int | None, reason: str) -> ChainReport:
        return ChainReport(tenant_id, count, False, seq, row_id, reason, anchored_seq=anchored)

    prev = GENESIS
    count = 0
    hash_at_anchor: str | None = None
    for count, row in enumerate(_stored_rows(session, tenant_id), start=1):
        row_id, row_tenant, seq, intent, event_type, at, actor, details, prev_hash, row_hash = row
        if seq != count:
            return broken(
                count - 1, count, None, f"row seq {count} is missing (the next row found is seq {seq})"
            )
        if prev_hash != prev:
            return broken(count, seq, row_id, "prev_hash does not match the previous row's hash")
        digest = mac.copy()  # = chain_hash(prev, canonical_row(row), key)
        try:
            canonical = _stored_canonical(row_tenant, seq, intent, event_type, at, actor, details)
        except (TypeError, ValueError) as exc:  # rfc8785's CanonicalizationError is a ValueError
            return broken(
                count,
                seq,
                row_id,
                f"row content has no canonical form ({type(exc).__name__}): edited after it was written",
            )
        digest.update(prev.encode("ascii") + canonical)
        if not hmac.compare_digest(digest.hexdigest(), row_hash):
            return broken(
                count,
                seq,
                row_id,
                "row content does not match its keyed hash (edited or forged after it was written, "
                "or written with another ledger key)",
            )
        prev = row_hash
        if seq == anchored:
            hash_at_anchor = row_hash
    if anchor is not None:
        if count < anchor.seq:
            missing = (
                "the whole chain is missing" if count == 0 else f"rows {count + 1}..{anchor.seq} are missing"
            )
            return broken(
                count,
                count + 1,
                None,
                f"{missing}: the checkpoint of {anchor.anchored_at} anchored seq {anchor.seq} "
                "(deleted since)",
            )
        if hash_at_anchor is None or not hmac.compare_digest(hash_at_anchor, anchor.row_hash):
            return broken(
                count,
                anchor.seq,
                None,
                f"row seq {anchor.seq} differs from the checkpoint of {anchor.anchored_at} "
                "(the chain was rewritten up to it since)",
            )
    head = session.connection().execute(_HEAD, {"tenant_id": tenant_id}).one_or_none()
    if head is not None and head.seq > count:
        return broken(
            count,
            count + 1,
            None,
            f"rows {count + 1}..{head.seq} are missing (the chain head says seq {head.seq})",
        )
    if head is not None and (head.seq != count or head.row_hash != prev):
        return broken(count, head.seq, None, "chain head does not match the last row")
    return ChainReport(tenant_id, count, True, head_hash=prev if count else None, anchored_seq=anchored)
