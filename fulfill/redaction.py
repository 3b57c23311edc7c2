"""Keep secrets out of logs, ledger rows, results and error messages, and text every database stores."""

from __future__ import annotations

import re
from typing import Any

SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|authorization|api[_-]?key|private[_-]?key|assertion|credential|cookie|seed)",
    re.IGNORECASE,
)
MASK = "***"


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret-looking key's value masked (recursively)."""
    if isinstance(value, dict):
        return {
            key: (MASK if isinstance(key, str) and SECRET_KEY.search(key) else redact(item))
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


def scrub_text(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of the given secret values in ``text``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def storable_text(text: str) -> str:
    """``text`` as every backend stores it: a lone surrogate becomes ``?`` (no database encodes it) and
    NUL becomes U+FFFD (PostgreSQL refuses it in ``text`` and ``jsonb``)."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def storable(value: Any) -> Any:
    """A copy of a JSON value with every string in it, keys included, made storable (:func:`storable_text`)."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {
            storable_text(key) if isinstance(key, str) else key: storable(item) for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value
