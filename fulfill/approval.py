"""Approval binding (contract §3): Ed25519 over the RFC 8785 (JCS) canonical intent.

The signed bytes are the JCS canonical JSON of the WHOLE intent with only
``approval.signature`` removed. We verify the JSON we received (parsed, never a
re-serialised model), so no field can change after approval without breaking it.
The executor holds PUBLIC keys only, several at once by ``key_id`` (rotation).

Only one spelling of a signature is accepted: canonical unpadded base64url (:func:`b64url_decode`
decodes, re-encodes and compares — no padding, no character outside the alphabet, unused trailing
bits zero), so a signature cannot be varied without being changed. The trusted-keys document is
refused when it repeats a ``key_id`` or an object key; trusting a published test key (the contract's
``vectors/keys.json``, whose private seeds are public) logs one warning per process.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

#: Public keys whose private seeds are published (the contract's test vectors, ``tests/vectors/keys.json``).
PUBLISHED_TEST_KEYS = frozenset(
    {
        "ZQPeK5rzGZfitTxHa-YfnP_LOPcDFDroCqyvu06-a54",  # phase3-test-1
        "KdPd6dKwN1WN7H8eypd6vCCuXqSj20qNotS_Wj4C8n8",  # phase3-test-2
    }
)
#: A member of a key entry that holds a private seed: whoever can read the document can sign.
SEED_MEMBER = "private_key_seed_b64url_TEST_ONLY"
_warned: set[str] = set()
_warned_lock = threading.Lock()


class KeysInvalid(ValueError):
    """The trusted-keys document (``FULFILL_APPROVAL_KEYS``) cannot be used; the message says why."""


class ApprovalInvalid(Exception):
    """The approval does not bind this intent. ``reason`` is safe to show and ledger."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (ApprovalInvalid, (self.reason,))


def b64url_decode(text: str) -> bytes:
    """Decode canonical unpadded base64url; raises ValueError on anything else.

    Canonical: no padding, only ``A-Z a-z 0-9 - _``, and the unused bits of the last character zero —
    checked by re-encoding the decoded bytes and comparing (the decoder alone ignores stray characters
    and trailing bits, so several texts would decode to the same signature).
    """
    if not isinstance(text, str) or not text or not text.isascii() or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not unpadded base64url") from None
    if b64url_encode(raw) != text:
        raise ValueError("not canonical unpadded base64url")
    return raw


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


#: Nesting :func:`canonical_json` follows (an intent is at most 32 deep: ``fulfill.intent.MAX_DEPTH``).
MAX_CANONICAL_DEPTH = 64


def signing_bytes(intent: Mapping[str, Any]) -> bytes:
    """The exact bytes the approver signed: JCS of the intent minus ``approval.signature``."""
    unsigned = dict(intent)
    approval = unsigned.get("approval")
    if isinstance(approval, dict):
        unsigned["approval"] = {key: value for key, value in approval.items() if key != "signature"}
    return canonical_json(unsigned)


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) canonical JSON, byte for byte what ``rfc8785.dumps`` gives, in linear time.

    Numbers, booleans and null are ``rfc8785``'s own; strings are escaped by the standard library's C
    encoder (``json.dumps(..., ensure_ascii=False)``), which escapes exactly the characters JCS escapes,
    the same way (quote, backslash, the short forms of b f n r t, other controls as lower-case
    ``u00xx``). ``rfc8785`` calls a Python function per escaped character, so a forged megabyte of
    control characters cost most of a second there. Object members are sorted by UTF-16 code units.

    Raises:
        rfc8785.CanonicalizationError: a value JCS cannot represent (lone surrogate, huge integer,
            non-finite float, a key that is not a string, nesting beyond :data:`MAX_CANONICAL_DEPTH`).
    """
    out: list[bytes] = []
    _canonical(value, out, 0)
    return b"".join(out)


def _canonical_str(text: str) -> bytes:
    try:
        return json.dumps(text, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise rfc8785.CanonicalizationError("input contains non-UTF-8 codepoints") from None


def _canonical(value: Any, out: list[bytes], depth: int) -> None:
    if depth > MAX_CANONICAL_DEPTH:
        raise rfc8785.CanonicalizationError(f"nested deeper than {MAX_CANONICAL_DEPTH} levels")
    if isinstance(value, str):
        out.append(_canonical_str(value))
    elif isinstance(value, Mapping):
        if any(not isinstance(key, str) for key in value):
            raise rfc8785.CanonicalizationError("object keys must be strings")
        out.append(b"{")
        for index, key in enumerate(sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))):
            if index:
                out.append(b",")
            out.append(_canonical_str(key))
            out.append(b":")
            _canonical(value[key], out, depth + 1)
        out.append(b"}")
    elif isinstance(value, list | tuple):
        out.append(b"[")
        for index, item in enumerate(value):
            if index:
                out.append(b",")
            _canonical(item, out, depth + 1)
        out.append(b"]")
    else:  # numbers, booleans, null: rfc8785's own serialisation
        out.append(rfc8785.dumps(value))


@dataclass(frozen=True)
class TrustedKeys:
    """The approval service's public keys by ``key_id``."""

    keys: Mapping[str, Ed25519PublicKey]

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> TrustedKeys:
        """Build from a ``keys.json``-shaped document; private seeds are ignored (but warned about).

        Raises:
            KeysInvalid: a ``key_id`` appears twice (which key would verify is then a guess), an
                algorithm other than Ed25519, or a malformed entry.
        """
        keys: dict[str, Ed25519PublicKey] = {}
        for index, entry in enumerate(document.get("keys", [])):
            key_id = entry.get("key_id") if isinstance(entry, Mapping) else None
            if not isinstance(key_id, str) or not key_id:
                raise KeysInvalid(f"FULFILL_APPROVAL_KEYS: keys[{index}] has no key_id")
            if key_id in keys:
                raise KeysInvalid(
                    f"FULFILL_APPROVAL_KEYS: key_id {key_id[:128]!r} appears more than once; each key needs its own id"
                )
            if entry.get("alg", "Ed25519") != "Ed25519":
                raise KeysInvalid(f"FULFILL_APPROVAL_KEYS: key {key_id[:128]!r}: only Ed25519 is supported")
            public = entry.get("public_key_b64url")
            try:
                keys[key_id] = Ed25519PublicKey.from_public_bytes(b64url_decode(public))
            except ValueError:
                raise KeysInvalid(
                    f"FULFILL_APPROVAL_KEYS: key {key_id[:128]!r}: public_key_b64url is not a 32-byte key "
                    "in unpadded base64url"
                ) from None
            if public in PUBLISHED_TEST_KEYS or SEED_MEMBER in entry:
                _warn_published(key_id)
        return cls(keys)

    @classmethod
    def from_setting(cls, value: str | None) -> TrustedKeys:
        """Parse ``FULFILL_APPROVAL_KEYS``: a path to, or the inline text of, the JSON document.

        Raises:
            KeysInvalid: repeated object keys or ``key_id``s, or an unusable entry (see :meth:`from_document`).
        """
        if not value:
            return cls({})
        text = value.strip()
        if not text.startswith("{"):
            text = Path(text).expanduser().read_text(encoding="utf-8")
        document = json.loads(text, object_pairs_hook=_unique_members)
        if not isinstance(document, dict):
            raise KeysInvalid("FULFILL_APPROVAL_KEYS: must be a JSON object with a 'keys' list")
        return cls.from_document(document)

    def verify(self, intent: Mapping[str, Any]) -> None:
        """Check the approval signature of a raw intent.

        Raises:
            ApprovalInvalid: unknown key, missing or malformed signature, or a signature that
                does not match the canonical intent.
        """
        approval = intent.get("approval")
        if not isinstance(approval, dict):
            raise ApprovalInvalid("approval is missing")
        key_id = approval.get("key_id")
        signature = approval.get("signature")
        if not signature:
            raise ApprovalInvalid("approval.signature is missing")
        if not isinstance(key_id, str) or key_id not in self.keys:
            raise ApprovalInvalid(f"approval.key_id {key_id!r} is not a trusted approval key")
        try:
            raw_signature = b64url_decode(signature)
        except (ValueError, TypeError):
            raise ApprovalInvalid("approval.signature is not unpadded base64url") from None
        try:
            message = signing_bytes(intent)
        except (rfc8785.CanonicalizationError, ValueError, TypeError) as exc:
            raise ApprovalInvalid(f"the intent cannot be canonicalised (RFC 8785): {exc}") from None
        try:
            self.keys[key_id].verify(raw_signature, message)
        except InvalidSignature:
            raise ApprovalInvalid(
                "approval.signature does not match the intent: it was changed after approval "
                "or signed by another key"
            ) from None


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise KeysInvalid(
                f"FULFILL_APPROVAL_KEYS: member {key[:64]!r} appears more than once in an object"
            )
        seen.add(key)
    return dict(pairs)


def _warn_published(key_id: str) -> None:
    """Log once per process per key: a key whose private seed is public is trusted (outside tests)."""
    if os.environ.get("PYTEST_CURRENT_TEST"):  # set by pytest for the test and the processes it starts
        return
    with _warned_lock:
        if key_id in _warned:
            return
        _warned.add(key_id)
    log.warning(
        "FULFILL_APPROVAL_KEYS trusts %r, a published TEST key (its private seed is public: anyone can "
        "sign approvals with it); use it in tests only",
        key_id[:128],
    )


def sign_intent(intent: Mapping[str, Any], *, key_id: str, seed_b64url: str) -> dict[str, Any]:
    """Sign an intent (for integrators' test set-ups; production never holds a private key).

    Args:
        intent: The intent; any existing signature is replaced.
        key_id: Written into ``approval.key_id`` before signing.
        seed_b64url: The 32-byte Ed25519 private seed, unpadded base64url.

    Returns:
        A copy of the intent with ``approval.key_id`` and ``approval.signature`` set.
    """
    signed = copy.deepcopy(dict(intent))
    signed.setdefault("approval", {})["key_id"] = key_id
    signed["approval"].pop("signature", None)
    private = Ed25519PrivateKey.from_private_bytes(b64url_decode(seed_b64url))
    signed["approval"]["signature"] = b64url_encode(private.sign(signing_bytes(signed)))
    return signed
