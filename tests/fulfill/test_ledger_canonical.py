"""The ledger's fast canonical form is byte for byte the RFC 8785 form every existing hash covers.

``fulfill.ledger.canonical_row`` used to be ``rfc8785.dumps(row.model_dump(mode="json", include=...))``
(:func:`_before`); it now renders most rows with ``orjson`` and falls back to that definition for
anything it cannot prove equal. These properties compare the two over arbitrary JSON — nasty strings,
lone surrogates, keys beyond the BMP beside keys in U+E000..U+FFFF, huge integers, floats, NaN — for
appended rows (Python values) and for stored rows (their details as the JSON text a database holds).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fulfill import ledger
from fulfill.db import transaction
from fulfill.tables import LedgerEntry

NASTY = [
    "",
    '"',
    "\\",
    "/",
    "\x00",
    "\x08\x09\x0a\x0c\x0d",
    "\x1f",
    "\x7f",
    "\x80",
    "\u2028\u2029",
    "\ud7ff",
    "\ue000",
    "\uffff",
    "\ufeff",
    "\U00010000",
    "\U0001f600",
    "\U0010ffff",
    "\ud800",  # lone surrogates: RFC 8785 refuses them
    "\udfff",
    "Ünïcödé 🚀",
    "a\u0000b",
]
BOUNDARY_INTS = [0, -1, 2**53 - 1, -(2**53 - 1), 2**53, -(2**53), 2**63, 2**64, -(2**64) - 1, 10**30]
SPECIAL_FLOATS = [0.0, -0.0, 1.0, 0.5, 1e21, 1e-7, 1e-6, 1e20, 5e-324, 1.7976931348623157e308]

characters = st.characters(exclude_categories=())  # every code point, lone surrogates included
strings = st.one_of(st.sampled_from(NASTY), st.text(characters, max_size=8))
keys = st.one_of(st.sampled_from(NASTY), st.text(characters, max_size=4))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(BOUNDARY_INTS),
    st.floats(),
    st.sampled_from(SPECIAL_FLOATS),
    strings,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=20,
)
# What the fast path takes (no float, no huge integer, no lone surrogate), so that it is exercised as much.
plain_characters = st.characters(exclude_categories=("Cs",))
WELL_FORMED = [s for s in NASTY if not any("\ud800" <= c <= "\udfff" for c in s)]
plain_strings = st.one_of(st.sampled_from(WELL_FORMED), st.text(plain_characters, max_size=8))
bmp_keys = st.one_of(
    st.sampled_from([s for s in WELL_FORMED if max(s, default="") <= "\uffff"]),
    st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=4),
)
plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1) | plain_strings,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(bmp_keys, inner, max_size=5),
    max_leaves=20,
)
any_details = st.dictionaries(keys, json_values, max_size=6) | st.dictionaries(
    bmp_keys, plain_values, max_size=6
)
# What only Python callers hand over: tuples, enums, str and int subclasses (the fast path refuses them).


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Tag(str):
    pass


python_values = st.recursive(
    scalars | st.sampled_from([Colour.RED, Level.HIGH, Tag("tag"), True]),
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=10,
)
PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _entry(details: Any, **fields: Any) -> LedgerEntry:
    values: dict[str, Any] = {
        "tenant_id": "t-1",
        "seq": 7,
        "action_intent_id": "ai_1",
        "event_type": "STEP_SUCCEEDED",
        "at": "2026-12-01T00:00:00.000001Z",
        "actor": "system",
        **fields,
    }
    return LedgerEntry(**values, details=details, prev_hash="", row_hash="")


def _before(entry: LedgerEntry) -> bytes:
    """The definition every hash written so far covers."""
    return rfc8785.dumps(entry.model_dump(mode="json", include=set(ledger.HASHED_FIELDS)))


def _outcome(compute: Callable[[], bytes]) -> tuple[str, Any]:
    """The bytes, or the class of the exception (both paths must fail alike, too)."""
    try:
        return "bytes", compute()
    except Exception as exc:
        return "raises", type(exc)


def _fields(entry: LedgerEntry) -> tuple[Any, ...]:
    return (entry.tenant_id, entry.seq, entry.action_intent_id, entry.event_type, entry.at, entry.actor)


@PROPERTY
@given(details=any_details, tenant=strings, actor=strings, intent=st.none() | strings, seq=st.integers())
@example(details={"\ue000": 1, "\U0001f600": 2}, tenant="t", actor="a", intent=None, seq=1)
@example(details={"x": {"\uffff": [], "\U00010000": {}}}, tenant="t", actor="a", intent=None, seq=1)
@example(details={"n": 2**53}, tenant="t", actor="a", intent=None, seq=1)
@example(details={"f": float("nan")}, tenant="t", actor="a", intent=None, seq=1)
@example(details={"\ud800": 1}, tenant="t", actor="a", intent=None, seq=1)
def test_canonical_row_is_the_rfc8785_form(
    details: dict[str, Any], tenant: str, actor: str, intent: str | None, seq: int
) -> None:
    entry = _entry(details, tenant_id=tenant, actor=actor, action_intent_id=intent, seq=seq)
    assert _outcome(lambda: ledger.canonical_row(entry)) == _outcome(lambda: _before(entry))


@PROPERTY
@given(details=any_details)
def test_whatever_the_fast_path_renders_is_rfc8785(details: dict[str, Any]) -> None:
    entry = _entry(details)
    fast = ledger._canonical_fast(*_fields(entry), details)
    if fast is not None:
        content = {name: getattr(entry, name) for name in ledger.HASHED_FIELDS}
        assert fast == rfc8785.dumps(content)


@PROPERTY
@given(details=st.dictionaries(keys, python_values, max_size=4))
def test_python_only_values_take_the_original_path(details: dict[str, Any]) -> None:
    entry = _entry(details)
    assert _outcome(lambda: ledger.canonical_row(entry)) == _outcome(lambda: _before(entry))


def _stored_before(entry: LedgerEntry, text: str | None) -> bytes:
    """What verification computed from an ORM row: the details as the ORM loads them (``json.loads``)."""
    entry.details = None if text is None else json.loads(text)  # type: ignore[assignment]
    return _before(entry)


def _as_stored(details: Any) -> list[str]:
    """The texts a database may hold for these details: SQLAlchemy's ``json.dumps``, raw UTF-8, jsonb's spacing."""
    return [
        json.dumps(details),
        json.dumps(details, ensure_ascii=False, separators=(",", ":")),
        json.dumps(details, ensure_ascii=False, separators=(", ", ": "), sort_keys=True),
    ]


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # details that are not an object
@PROPERTY
@given(details=any_details | json_values | plain_values)
def test_stored_rows_canonicalise_as_the_orm_rows_did(details: Any) -> None:
    for text in _as_stored(details):
        _assert_stored_alike(text)


def _assert_stored_alike(text: str | None) -> None:
    entry = _entry({})
    after = _outcome(lambda: ledger._stored_canonical(*_fields(entry), text))
    assert after == _outcome(lambda: _stored_before(_entry({}), text)), text


@pytest.mark.parametrize(
    "text",
    [
        None,
        "null",
        "[]",
        '"x"',
        "1",
        "{}",
        '{"a": 1e400}',
        '{"a": -1e400}',
        '{"a": 1e-400}',
        '{"a": NaN}',
        '{"a": -Infinity}',
        '{"a": 123456789012345678901234567890}',
        '{"a": -123456789012345678901234567890}',
        '{"a": 9007199254740991, "b": -9007199254740991}',
        '{"a": 9007199254740992}',
        '{"a": 18446744073709551615}',
        '{"a": -0}',
        '{"a": -0.0}',
        '{"a": 1E2, "b": 1.50}',
        '{"a": "\\ud800"}',
        '{"\\udfff": 1}',
        '{"a": "\\ud83d\\ude00"}',
        '{"a": 1, "a": 2}',
        '{"\\ue000": 1, "\\ud83d\\ude00": 2}',
        '{"a": "\\u0000\\u001f\\u007f\\u2028"}',
        '{"a": [1, {"b": [true, false, null]}]}',
        '\ufeff{"a": 1}',
        '{"a": 1} x',
        "[" * 300 + "]" * 300,
    ],
)
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
def test_odd_stored_details_canonicalise_as_the_orm_rows_did(text: str | None) -> None:
    _assert_stored_alike(text)


def test_jcs_key_order_is_by_utf16_code_units() -> None:
    # U+1F600 is D83D DE00 in UTF-16: before U+E000 for JCS, after it by code point.
    entry = _entry({"\ue000": 1, "\U0001f600": 2})
    assert ledger.canonical_row(entry).index("\U0001f600".encode()) < ledger.canonical_row(entry).index(
        "\ue000".encode()
    )


def test_the_engines_rows_take_the_fast_path() -> None:
    details = {
        "step": "create_task",
        "attempts": 1,
        "external_ref": {"system": "salesforce", "id": "00T000000000000001", "url": None},
        "created": True,
        "summary": "Created the task 'Follow up' — Ünïcödé 🚀",
        "refs": [{"a": 1}, [], -(2**53 - 1)],
    }
    entry = _entry(details)
    assert ledger._canonical_fast(*_fields(entry), details) == _before(entry)


def test_a_known_row_keeps_its_hash() -> None:
    """A fixed row, key and previous hash: the canonical bytes and the keyed hash never change."""
    entry = _entry({"b": [1, "\u00e9", None], "a": {"c": True}, "\U0001f600": "x", "\ue000": "y"})
    canonical = ledger.canonical_row(entry)
    assert (
        canonical
        == (
            '{"action_intent_id":"ai_1","actor":"system","at":"2026-12-01T00:00:00.000001Z",'
            '"details":{"a":{"c":true},"b":[1,"\u00e9",null],"\U0001f600":"x","\ue000":"y"},'
            '"event_type":"STEP_SUCCEEDED","seq":7,"tenant_id":"t-1"}'
        ).encode()
    )
    key = ledger.LedgerKey.from_secret(b"k" * 32, "test")
    expected = hmac.new(key.chain, ledger.GENESIS.encode() + canonical, hashlib.sha256).hexdigest()
    assert ledger.chain_hash(ledger.GENESIS, canonical, key) == expected


ODD_DETAILS: list[dict[str, Any]] = [
    {"ratio": 0.5, "one": 1.0, "tiny": 1e-7, "neg": -2.25},  # floats: rfc8785's notation
    # keys beyond the BMP and in U+E000..U+FFFF; controls (not U+0000: jsonb refuses it)
    {"\ue000": "private use", "\U0001f600": "beyond the BMP", "a": "\u2028\x7f\x1f"},
    {"nested": [[[{"k": [1, 2, {"z": None}]}]]], "big": 2**53 - 1, "small": -(2**53 - 1)},
    {"deep": json.loads("[" * 80 + "]" * 80)},  # beyond the fast path's depth
]


def test_odd_rows_chain_and_verify(engine: Any, tenant: str) -> None:
    """Rows the fast path refuses (floats, keys beyond the BMP, deep nesting) append and verify as before."""
    with transaction(engine) as session:
        for details in ODD_DETAILS:
            row = ledger.append(session, tenant_id=tenant, event_type="STEP_SUCCEEDED", details=details)
            assert row.row_hash == ledger.chain_hash(row.prev_hash, _before(row))
    with transaction(engine) as session:
        report = ledger.verify_chains(session, [tenant])[0]
    assert (report.ok, report.rows) == (True, len(ODD_DETAILS))
