"""Approval binding (contract §3): Ed25519 over the RFC 8785 (JCS) canonical intent.

The signed bytes are the JCS canonical JSON of the WHOLE intent with only
``approval.signature`` removed. We verify the JSON we received (parsed, never a
re-serialised model), so no field can change after approval without breaking it.
The executor holds PUBLIC keys only, several at once by ``key_id`` (rotation).
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class ApprovalInvalid(Exception):
    """The approval does not bind this intent. ``reason`` is safe to show and ledger."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (ApprovalInvalid, (self.reason,))


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; raises ValueError on bad input."""
    if not isinstance(text, str) or not text or any(c in text for c in "+/="):
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signing_bytes(intent: Mapping[str, Any]) -> bytes:
    """The exact bytes the approver signed: JCS of the intent minus ``approval.signature``."""
    unsigned = copy.deepcopy(dict(intent))
    approval = unsigned.get("approval")
    if isinstance(approval, dict):
        approval.pop("signature", None)
    return rfc8785.dumps(unsigned)


@dataclass(frozen=True)
class TrustedKeys:
    """The approval service's public keys by ``key_id``."""

    keys: Mapping[str, Ed25519PublicKey]

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> TrustedKeys:
        """Build from a ``keys.json``-shaped document; private seeds are ignored."""
        keys: dict[str, Ed25519PublicKey] = {}
        for entry in document.get("keys", []):
            if entry.get("alg", "Ed25519") != "Ed25519":
                raise ValueError(f"key {entry.get('key_id')!r}: only Ed25519 is supported")
            raw = b64url_decode(entry["public_key_b64url"])
            keys[entry["key_id"]] = Ed25519PublicKey.from_public_bytes(raw)
        return cls(keys)

    @classmethod
    def from_setting(cls, value: str | None) -> TrustedKeys:
        """Parse ``FULFILL_APPROVAL_KEYS``: a path to, or the inline text of, the JSON document."""
        if not value:
            return cls({})
        text = value.strip()
        if not text.startswith("{"):
            text = Path(text).expanduser().read_text(encoding="utf-8")
        return cls.from_document(json.loads(text))

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
