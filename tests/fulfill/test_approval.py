from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from fulfill import approval as approval_module
from fulfill.approval import (
    ApprovalInvalid,
    KeysInvalid,
    TrustedKeys,
    b64url_decode,
    b64url_encode,
    canonical_json,
    sign_intent,
    signing_bytes,
)
from tests.conftest import KEYS, VECTORS, load_vector

TRUSTED = TrustedKeys.from_setting(str(VECTORS / "keys.json"))


@pytest.mark.parametrize("path", sorted(VECTORS.glob("valid-*.json")), ids=lambda p: p.name)
def test_valid_vectors_verify(path: Path) -> None:
    TRUSTED.verify(json.loads(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("path", sorted(VECTORS.glob("invalid-*.json")), ids=lambda p: p.name)
def test_invalid_vectors_are_rejected(path: Path) -> None:
    with pytest.raises(ApprovalInvalid):
        TRUSTED.verify(json.loads(path.read_text(encoding="utf-8")))


def test_canonical_bytes_match_the_independent_implementation() -> None:
    expected = (VECTORS / "canonical-valid-crm-create-task.txt").read_bytes()
    assert signing_bytes(load_vector("valid-crm-create-task.json")) == expected


def test_unknown_key_reason_names_the_key() -> None:
    with pytest.raises(ApprovalInvalid, match="phase3-unknown"):
        TRUSTED.verify(load_vector("invalid-unknown-key-id.json"))


def test_no_trusted_keys_means_nothing_verifies() -> None:
    with pytest.raises(ApprovalInvalid):
        TrustedKeys.from_setting(None).verify(load_vector("valid-crm-create-task.json"))


def test_inline_key_document_and_private_seeds_ignored() -> None:
    inline = TrustedKeys.from_setting((VECTORS / "keys.json").read_text())
    assert set(inline.keys) == {"phase3-test-1", "phase3-test-2"}
    inline.verify(load_vector("valid-crm-update-field-rotated-key.json"))


def test_sign_then_verify_round_trip_and_any_edit_breaks_it() -> None:
    key = KEYS["keys"][1]
    document = load_vector("valid-crm-create-task.json")
    signed = sign_intent(document, key_id=key["key_id"], seed_b64url=key["private_key_seed_b64url_TEST_ONLY"])
    TRUSTED.verify(signed)
    signed["approval"]["edited"] = True
    with pytest.raises(ApprovalInvalid):
        TRUSTED.verify(signed)


# -- one spelling per signature ---------------------------------------------------------------------
def _with_signature(signature: str) -> dict[str, object]:
    document = load_vector("valid-crm-create-task.json")
    document["approval"]["signature"] = signature
    return document


def test_a_signature_with_nonzero_unused_bits_is_refused() -> None:
    """86 characters carry 516 bits for 512: the last character's 4 unused bits must be zero.
    Flipping them decodes to the same 64 bytes — the forgery the canonical check stops."""
    document = load_vector("valid-crm-create-task.json")
    signature = document["approval"]["signature"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    assert last % 16 == 0  # the valid one is canonical
    variant = signature[:-1] + alphabet[last + 1]
    assert b64url_decode_lenient(variant) == b64url_decode(signature)  # same bytes, other text
    with pytest.raises(ApprovalInvalid, match="base64url"):
        TRUSTED.verify(_with_signature(variant))


def b64url_decode_lenient(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s + "==",  # padding
        lambda s: s[:10] + "!" + s[10:],  # a character the decoder would skip
        lambda s: s[:10] + "\n" + s[10:],
        lambda s: (
            s.replace("-", "+").replace("_", "/") if ("-" in s or "_" in s) else s + "+"
        ),  # base64, not url
        lambda s: s[:-1],  # a length no base64 has (85 characters)
    ],
)
def test_only_canonical_unpadded_base64url_is_accepted(mangle: Any) -> None:
    signature = load_vector("valid-crm-create-task.json")["approval"]["signature"]
    with pytest.raises(ApprovalInvalid, match="base64url"):
        TRUSTED.verify(_with_signature(mangle(signature)))


def test_b64url_round_trips() -> None:
    for size in range(1, 70):
        data = bytes(range(size))
        assert b64url_decode(b64url_encode(data)) == data


# -- the trusted keys document ---------------------------------------------------------------------------
def test_a_repeated_key_id_is_refused_at_load() -> None:
    first, second = KEYS["keys"]
    document = {"keys": [first, dict(second, key_id=first["key_id"])]}
    with pytest.raises(KeysInvalid, match="phase3-test-1.*more than once"):
        TrustedKeys.from_setting(json.dumps(document))


def test_a_repeated_member_in_the_keys_document_is_refused() -> None:
    text = '{"keys": [], "keys": [{"key_id": "x", "public_key_b64url": "AA"}]}'
    with pytest.raises(KeysInvalid, match="'keys' appears more than once"):
        TrustedKeys.from_setting(text)


def test_trusting_a_published_test_key_warns_once_outside_tests(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    approval_module._warned.clear()
    with caplog.at_level(logging.WARNING, logger="fulfill.approval"):
        TrustedKeys.from_setting(str(VECTORS / "keys.json"))
    assert not caplog.records, "tests (and what they start) trust the vectors' keys on purpose"
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    with caplog.at_level(logging.WARNING, logger="fulfill.approval"):
        TrustedKeys.from_setting(str(VECTORS / "keys.json"))
        TrustedKeys.from_setting(str(VECTORS / "keys.json"))
    warnings = [r.getMessage() for r in caplog.records if "published TEST key" in r.getMessage()]
    assert sorted(w.split("'")[1] for w in warnings) == ["phase3-test-1", "phase3-test-2"]


def test_an_own_key_does_not_warn(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    approval_module._warned.clear()
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    with caplog.at_level(logging.WARNING, logger="fulfill.approval"):
        TrustedKeys.from_setting(
            json.dumps({"keys": [{"key_id": "own", "public_key_b64url": b64url_encode(public)}]})
        )
    assert not [r for r in caplog.records if "published TEST key" in r.getMessage()]


# -- the canonical form, in linear time --------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=6), children, max_size=4
        )
    ),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_canonical_json_is_byte_for_byte_rfc8785(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


def test_canonical_json_escapes_every_control_character_as_rfc8785() -> None:
    text = "".join(chr(i) for i in range(0x20)) + '"\\\x7f\u2028\U0001f600\ue000'
    document = {text: text, "\U0001f600": 1, "\uffff": 2, "a": [text, -0.0, 1e21, 5e-324]}
    assert canonical_json(document) == rfc8785.dumps(document)  # type: ignore[arg-type]


def test_canonical_json_refuses_what_rfc8785_refuses() -> None:
    for bad in ("\ud800", {"\udfff": 1}, 2**53 + 1, float("nan"), {1: "x"}):
        with pytest.raises(rfc8785.CanonicalizationError):
            canonical_json(bad)
        with pytest.raises(ValueError):  # rfc8785 lets a surrogate key's UnicodeEncodeError through
            rfc8785.dumps(bad)  # type: ignore[arg-type]
