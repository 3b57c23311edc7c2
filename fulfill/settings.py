"""Operator configuration (contract §8): ``FULFILL_*`` environment variables, optionally mirrored in a file.

One pydantic-settings model, one prefix (``FULFILL_``). Sources, highest first: the environment, then
the settings file ``$FULFILL_DATA_DIR/settings.env`` (or the file named by ``FULFILL_SETTINGS_FILE``;
both located from the environment only), then the defaults. An empty value counts as unset.

:func:`load_settings` reads the configuration ONCE per process and caches it; an invalid value is one
:class:`SettingsError` naming the variable. The single exception is the global emergency stop, which
an operator must be able to engage on running workers: :func:`emergency_stop_engaged` reads
``FULFILL_EMERGENCY_STOP`` afresh at every check — the environment, else the settings file, which is
re-read only when its modification time or size changed (one ``stat`` per check otherwise).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import re
import threading
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

log = logging.getLogger(__name__)

PREFIX = "FULFILL_"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
DEFAULT_DATA_DIR = "~/.fulfill"
DEFAULT_MAX_APPROVAL_TTL = 30 * 24 * 3600
DEFAULT_LATE_COMMIT_SECONDS = 30.0
MAX_LATE_COMMIT_SECONDS = 86400
# A DNS name in FULFILL_PROVIDER_HOSTS: lower-case labels, at least two (no IP, no wildcard, no port).
PROVIDER_HOST = re.compile(r"(?=.{1,253}$)[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})+")
MIN_LEDGER_KEY_CHARS = 32
DEFAULT_SECURITY_LOG_PER_MINUTE = 30


class SettingsError(ValueError):
    """An operator setting has an invalid value; the message starts with the variable's name."""


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def parse_flag(name: str, value: str) -> bool:
    """``1/true/yes/on`` → True, ``0/false/no/off`` (or blank) → False, anything else an error."""
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if not word or word in FALSE_WORDS:
        return False
    raise SettingsError(f"{name}: must be one of 1/true/yes/on or 0/false/no/off, not {value[:40]!r}")


class Settings(BaseSettings):
    """Resolved configuration for one process (read once; see :func:`load_settings`).

    Attributes:
        data_dir: Where local state lives (SQLite, local object storage) — ``FULFILL_DATA_DIR``.
        database_url: SQLAlchemy URL of the ledger database the engine uses at run time
            (``FULFILL_DATABASE_URL``; default: SQLite ``fulfill.db`` in the data directory).
        migration_database_url: URL ``fulfill db upgrade`` connects with — on PostgreSQL a role
            that owns the schema (``FULFILL_MIGRATION_DATABASE_URL``; default: ``database_url``).
        runtime_role: PostgreSQL role that ``fulfill db upgrade`` grants the run-time privileges
            to (``FULFILL_RUNTIME_ROLE``; optional, see docs/operations.md).
        approval_keys: Path to, or inline JSON of, the trusted approval public keys (or None).
        webhook_secrets: ``whsec_…`` secrets accepted by intake, space-separated (rotation).
        emergency_stop: The global stop as it was when the settings were read. Checks use
            :func:`emergency_stop_engaged`, which reads it afresh.
        late_commit_seconds: How long a provider may still commit a request whose answer was lost
            (``FULFILL_LATE_COMMIT_SECONDS``, 0–86400, default 30); undoing such a step waits this
            long, then confirms by lookup.
        max_approval_ttl: Longest accepted approval lifetime, seconds after receipt
            (``FULFILL_MAX_APPROVAL_TTL``, default 2592000 = 30 days); a later ``expires_at_epoch``
            is refused at admission.
        signal_webhook_urls: Where outcome signals are POSTed (``FULFILL_SIGNAL_WEBHOOK_URLS``,
            space-separated; ``https://`` only, ``http://`` only for a loopback host).
        signal_webhook_secret: ``whsec_…`` secret the signal webhooks are signed with (Standard
            Webhooks; ``FULFILL_SIGNAL_WEBHOOK_SECRET``; required when URLs are set).
        signal_eventbridge_bus: AWS EventBridge bus name or ARN signals are put on
            (``FULFILL_SIGNAL_EVENTBRIDGE_BUS``; none = no EventBridge sink).
        signal_aws_credentials_block: prefect-aws ``AwsCredentials`` block the EventBridge client is
            made from (``FULFILL_SIGNAL_AWS_CREDENTIALS_BLOCK``; none = boto3's default chain).
        allow_loopback_providers: Credentials blocks may aim at a loopback host, plain http included
            (``FULFILL_ALLOW_LOOPBACK_PROVIDERS``, default off): for the local emulators only.
        provider_hosts: Domains a credentials block may aim at besides its provider's own
            (``FULFILL_PROVIDER_HOSTS``, space-separated; each allows itself and its subdomains; https only).
        ledger_key: The secret the ledger's chain is keyed with (HMAC-SHA256) and its anchors are
            signed with (``FULFILL_LEDGER_KEY``, at least 32 characters; never stored in the database).
        ledger_key_file: A file holding that key (``FULFILL_LEDGER_KEY_FILE``; default ``ledger.key``
            in the data directory, created with mode 0600 when absent); used when the key is unset.
        ledger_anchor_block: prefect-aws ``S3Bucket`` block the ledger's signed checkpoints are
            exported to (``FULFILL_LEDGER_ANCHOR_BLOCK``; none = ``ledger-anchors`` in the data directory).
        security_log_per_minute: Rejected unverified submissions stored one by one per claimed tenant
            and minute (``FULFILL_SECURITY_LOG_PER_MINUTE``, default 30); beyond that only counted.
    """

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        env_ignore_empty=True,
        env_file_encoding="utf-8",
        extra="ignore",  # the file may mirror variables that are not configuration (FULFILL_SETTINGS_FILE…)
        frozen=True,
    )

    data_dir: Path = Path(DEFAULT_DATA_DIR)
    database_url: str = Field(default="", validate_default=True)
    migration_database_url: str | None = None
    runtime_role: str | None = None
    approval_keys: str | None = None
    webhook_secrets: Annotated[tuple[str, ...], NoDecode] = ()
    emergency_stop: bool = False
    late_commit_seconds: float = DEFAULT_LATE_COMMIT_SECONDS
    max_approval_ttl: int = DEFAULT_MAX_APPROVAL_TTL
    signal_webhook_urls: Annotated[tuple[str, ...], NoDecode] = ()
    signal_webhook_secret: str | None = Field(default=None, validate_default=True)
    signal_eventbridge_bus: str | None = None
    signal_aws_credentials_block: str | None = None
    allow_loopback_providers: bool = False
    provider_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    ledger_key: SecretStr | None = None
    ledger_key_file: Path | None = None
    ledger_anchor_block: str | None = None
    security_log_per_minute: int = DEFAULT_SECURITY_LOG_PER_MINUTE

    @field_validator("ledger_key", mode="before")
    @classmethod
    def _ledger_key(cls, value: Any) -> Any:
        if _blank(value):
            return None
        text = (value.get_secret_value() if isinstance(value, SecretStr) else str(value)).strip()
        if len(text) < MIN_LEDGER_KEY_CHARS:
            raise ValueError(
                f"must be at least {MIN_LEDGER_KEY_CHARS} characters (e.g. openssl rand -hex 32)"
            )
        return SecretStr(text)

    @field_validator("ledger_key_file", mode="before")
    @classmethod
    def _key_file(cls, value: Any) -> Path | None:
        return None if _blank(value) else Path(str(value).strip()).expanduser()

    @field_validator("ledger_anchor_block", mode="before")
    @classmethod
    def _anchor_block(cls, value: Any) -> Any:
        return None if _blank(value) else value.strip() if isinstance(value, str) else value

    @field_validator("security_log_per_minute", mode="before")
    @classmethod
    def _per_minute(cls, value: Any) -> int:
        text = str(value).strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 9 and int(text) > 0):
            raise ValueError(f"must be a positive whole number, not {str(value)[:40]!r}")
        return int(text)

    @field_validator("data_dir", mode="before")
    @classmethod
    def _expand_data_dir(cls, value: Any) -> Path:
        return Path(DEFAULT_DATA_DIR if _blank(value) else value).expanduser()

    @field_validator("database_url")
    @classmethod
    def _default_database(cls, value: str, info: ValidationInfo) -> str:
        if value.strip():
            return value.strip()
        data_dir = info.data.get("data_dir") or Path(DEFAULT_DATA_DIR).expanduser()
        return f"sqlite:///{data_dir / 'fulfill.db'}"

    @field_validator("migration_database_url", "runtime_role", "approval_keys", mode="before")
    @classmethod
    def _optional_text(cls, value: Any) -> Any:
        return None if _blank(value) else value.strip() if isinstance(value, str) else value

    @field_validator("webhook_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: Any) -> tuple[str, ...]:
        secrets = tuple(value.split()) if isinstance(value, str) else tuple(value)
        if any(not secret.startswith("whsec_") for secret in secrets):
            raise ValueError("every secret must start with whsec_ (space-separated)")
        return secrets

    @field_validator("signal_webhook_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> tuple[str, ...]:
        urls = tuple(value.split()) if isinstance(value, str) else tuple(value)
        for url in urls:
            problem = _sink_url_problem(url)
            if problem:
                raise ValueError(f"{problem} ({url[:80]!r})")
        return urls

    @field_validator(
        "signal_webhook_secret", "signal_eventbridge_bus", "signal_aws_credentials_block", mode="before"
    )
    @classmethod
    def _optional_sink_text(cls, value: Any) -> Any:
        return None if _blank(value) else value.strip() if isinstance(value, str) else value

    @field_validator("signal_webhook_secret")
    @classmethod
    def _whsec(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not value.startswith("whsec_"):
            raise ValueError("must start with whsec_")
        if value is None and info.data.get("signal_webhook_urls"):
            raise ValueError("required (whsec_…) when FULFILL_SIGNAL_WEBHOOK_URLS is set: signals are signed")
        return value

    @field_validator("emergency_stop", "allow_loopback_providers", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        try:
            return parse_flag("", str(value))
        except SettingsError:
            raise ValueError("must be one of 1/true/yes/on or 0/false/no/off") from None

    @field_validator("provider_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> tuple[str, ...]:
        hosts = tuple(value.split()) if isinstance(value, str) else tuple(value)
        for host in hosts:
            if not PROVIDER_HOST.fullmatch(host):
                raise ValueError(
                    f"each entry must be a lower-case DNS name such as crm.example.com, not {host[:80]!r}"
                )
        return hosts

    @field_validator("max_approval_ttl", mode="before")
    @classmethod
    def _positive_int(cls, value: Any) -> int:
        text = str(value).strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 18 and int(text) > 0):
            raise ValueError(f"must be a positive whole number of seconds, not {str(value)[:40]!r}")
        return int(text)

    @field_validator("late_commit_seconds", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be a number of seconds, not {str(value)[:40]!r}") from None
        if not 0 <= seconds <= MAX_LATE_COMMIT_SECONDS:  # also refuses nan
            raise ValueError(f"must be between 0 and {MAX_LATE_COMMIT_SECONDS} seconds")
        return seconds


def _sink_url_problem(url: str) -> str | None:
    """Why a signal webhook URL is refused: https only; plain http only to a loopback host."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and host:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        return None if loopback else "must be https:// (http:// only for a loopback host)"
    return "must be an https:// URL"


def settings_file() -> Path:
    """The settings file: ``FULFILL_SETTINGS_FILE``, else ``settings.env`` in ``FULFILL_DATA_DIR`` (environment only)."""
    named = os.environ.get(f"{PREFIX}SETTINGS_FILE", "").strip()
    if named:
        return Path(named).expanduser()
    data_dir = os.environ.get(f"{PREFIX}DATA_DIR", "").strip() or DEFAULT_DATA_DIR
    return Path(data_dir).expanduser() / "settings.env"


def _variable(location: tuple[int | str, ...]) -> str:
    return f"{PREFIX}{str(location[0]).upper()}" if location else f"{PREFIX}*"


def _message(error: Any) -> str:
    text = str(error["msg"])
    return text.removeprefix("Value error, ")


@functools.cache
def load_settings() -> Settings:
    """The process's settings, read once (environment over the settings file) and then cached.

    Tests that change the environment call ``load_settings.cache_clear()`` (or :func:`reload_settings`).

    Raises:
        SettingsError: a variable has an invalid value; the message names it, e.g.
            ``FULFILL_MAX_APPROVAL_TTL: must be a positive whole number of seconds, not '0'``.
    """
    path = settings_file()
    try:
        return Settings(_env_file=path if path.is_file() else None)
    except ValidationError as exc:
        problems = [f"{_variable(e['loc'])}: {_message(e)}" for e in exc.errors()]
        raise SettingsError("; ".join(problems)) from None


def reload_settings() -> Settings:
    """Forget the cached settings and read them again (tests; an explicit operator reload)."""
    load_settings.cache_clear()
    return load_settings()


_file_lock = threading.Lock()
_file_flag: tuple[Path, int, int, str | None] | None = None  # path, mtime_ns, size, raw value


def _file_emergency_stop(path: Path) -> str | None:
    """``FULFILL_EMERGENCY_STOP`` as the settings file has it now; re-parsed only when the file changed."""
    global _file_flag
    try:
        stat = path.stat()
    except OSError:
        return None
    with _file_lock:
        cached = _file_flag
        if cached is not None and cached[:3] == (path, stat.st_mtime_ns, stat.st_size):
            return cached[3]
        values = dotenv_values(path, encoding="utf-8")
        name = f"{PREFIX}EMERGENCY_STOP"
        raw = next((v for k, v in values.items() if k.upper() == name), None)
        _file_flag = (path, stat.st_mtime_ns, stat.st_size, raw)
        return raw


def emergency_stop_engaged() -> bool:
    """The global emergency stop, read afresh at every check (not from the cached settings).

    ``FULFILL_EMERGENCY_STOP`` in the environment wins; when it is unset or blank, the settings
    file's value counts (re-read only after the file changed). A value that is neither a yes nor a
    no word engages the stop: a kill switch fails closed.
    """
    name = f"{PREFIX}EMERGENCY_STOP"
    value = os.environ.get(name)
    if _blank(value):
        value = _file_emergency_stop(settings_file())
    if value is None:
        return False
    try:
        return parse_flag(name, value)
    except SettingsError as exc:
        log.warning("%s: treating the unrecognised value as engaged", exc)
        return True
