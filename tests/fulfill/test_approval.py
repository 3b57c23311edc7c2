from __future__ import annotations

import json
from pathlib import Path

import pytest

from fulfill.approval import ApprovalInvalid, TrustedKeys, sign_intent, signing_bytes
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
