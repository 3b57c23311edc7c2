"""Operator configuration (contract §8): environment variables, optionally mirrored in a settings file.

The environment always wins over the file. Names are part of the contract.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TRUE_WORDS = {"1", "true", "yes", "on"}
DEFAULT_MAX_APPROVAL_TTL = 30 * 24 * 3600


@dataclass(frozen=True)
class Settings:
    """Resolved configuration for one process.

    Attributes:
        data_dir: Where local state lives (SQLite, local object storage).
        database_url: SQLAlchemy URL of the ledger database.
        approval_keys: Path to, or inline JSON of, the trusted approval public keys (or None).
        webhook_secrets: ``whsec_…`` secrets accepted by intake (rotation).
        emergency_stop: Global stop of every external call.
        late_commit_seconds: How long a provider may still commit a request whose answer was lost
            (``FULFILL_LATE_COMMIT_SECONDS``, default 30); undoing such a step waits this long, then
            confirms by lookup.
        max_approval_ttl: Longest accepted approval lifetime, seconds after receipt
            (``FULFILL_MAX_APPROVAL_TTL``, default 2592000 = 30 days); a later ``expires_at_epoch``
            is refused at admission.
    """

    data_dir: Path
    database_url: str
    approval_keys: str | None
    webhook_secrets: tuple[str, ...]
    emergency_stop: bool
    late_commit_seconds: float = 30.0
    max_approval_ttl: int = DEFAULT_MAX_APPROVAL_TTL


def _settings_file_values(data_dir: Path) -> dict[str, str]:
    path = Path(os.environ.get("FULFILL_SETTINGS_FILE", data_dir / "settings.env"))
    values: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def load_settings() -> Settings:
    """Read the settings now (cheap; called wherever a fresh view is needed)."""
    data_dir = Path(os.environ.get("FULFILL_DATA_DIR", "~/.fulfill")).expanduser()
    file_values = _settings_file_values(data_dir)

    def get(name: str) -> str | None:
        return os.environ.get(name, file_values.get(name))

    database_url = get("FULFILL_DATABASE_URL") or f"sqlite:///{data_dir / 'fulfill.db'}"
    secrets = tuple((get("FULFILL_WEBHOOK_SECRETS") or "").split())
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        approval_keys=get("FULFILL_APPROVAL_KEYS") or None,
        webhook_secrets=secrets,
        emergency_stop=(get("FULFILL_EMERGENCY_STOP") or "").strip().lower() in TRUE_WORDS,
        late_commit_seconds=_seconds(get, "FULFILL_LATE_COMMIT_SECONDS", 30.0),
        max_approval_ttl=_positive_int(get, "FULFILL_MAX_APPROVAL_TTL", DEFAULT_MAX_APPROVAL_TTL),
    )


def _positive_int(get: Callable[[str], str | None], name: str, default: int) -> int:
    text = get(name)
    if text is None or not text.strip():
        return default
    stripped = text.strip()
    if not (stripped.isascii() and stripped.isdigit() and len(stripped) <= 18 and int(stripped) > 0):
        raise ValueError(f"{name}: must be a positive whole number of seconds, not {text[:40]!r}")
    return int(stripped)


def _seconds(get: Callable[[str], str | None], name: str, default: float) -> float:
    text = get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}: must be a number of seconds, not {text!r}") from None
    if not 0 <= value < 86400:
        raise ValueError(f"{name}: must be between 0 and 86400 seconds")
    return value


def emergency_stop_engaged() -> bool:
    """The global emergency stop, read afresh at every check (environment wins over the file)."""
    return load_settings().emergency_stop
