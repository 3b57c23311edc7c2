"""Keep secrets out of logs, ledger rows, results and error messages."""

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
