"""Shared fixtures: both databases, a session-wide Prefect test server, signed intents."""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from fulfill.approval import sign_intent
from fulfill.db import dispose_engines, get_engine, make_engine, upgrade
from fulfill.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
VECTORS = REPO / "tests" / "vectors"  # the contract's vectors, copied in: tests read nothing outside the repo
KEYS = json.loads((VECTORS / "keys.json").read_text())
POSTGRES_ADMIN_URL = os.environ.get("FULFILL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("FULFILL_ALLOW_LOOPBACK_PROVIDERS", "1")  # blocks aimed at the loopback emulators

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _loopback_only(address: Any) -> None:
    """Tests never reach a non-loopback address: refuse the connection outright."""
    if isinstance(address, str | bytes):  # AF_UNIX
        return
    host = address[0]
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        if host == "localhost":
            return
    raise ConnectionRefusedError(f"tests may only connect to loopback addresses, not {host!r}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _loopback_only(address)
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _loopback_only(address)
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


class _SettingsAwareMonkeyPatch(pytest.MonkeyPatch):  # pytest marks it @final for typing only
    """``monkeypatch`` that makes the next ``load_settings()`` see the environment it changed.

    fulfill reads its settings once per process; tests change ``FULFILL_*`` variables freely.
    """

    def setenv(self, name: str, value: str, prepend: str | None = None) -> None:
        super().setenv(name, value, prepend)
        load_settings.cache_clear()

    def delenv(self, name: str, raising: bool = True) -> None:
        super().delenv(name, raising)
        load_settings.cache_clear()

    def undo(self) -> None:
        super().undo()
        load_settings.cache_clear()


@pytest.fixture
def monkeypatch() -> Iterator[pytest.MonkeyPatch]:
    """pytest's ``monkeypatch``, plus: every environment change resets the cached settings."""
    with _SettingsAwareMonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """Each test reads the settings of its own environment (code may also set ``os.environ`` directly)."""
    load_settings.cache_clear()
    yield
    load_settings.cache_clear()


def migrate(url: str) -> None:
    """Bring a fresh test database to the schema head, as ``fulfill db upgrade`` does in a deployment."""
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The PostgreSQL server the tests use.

    ``FULFILL_TEST_POSTGRES_URL`` (default: the machine's server at 127.0.0.1:5432, database
    ``test``). When that default answers nothing, a private server from the ``pgserver`` wheel is
    started in a temporary directory, so the suite runs on a machine that only has Python.
    """
    try:
        psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3).close()
    except psycopg.OperationalError:
        if "FULFILL_TEST_POSTGRES_URL" in os.environ:
            raise
        import pgserver

        server = pgserver.get_server(tmp_path_factory.mktemp("pgserver"), cleanup_mode="stop")
        yield server.get_uri()
        server.cleanup()
        return
    yield POSTGRES_ADMIN_URL


@pytest.fixture(scope="session")
def postgres_database(postgres_admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped at the end)."""
    name = f"fulfill_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_admin_url).set(drivername="postgresql+psycopg", database=name)
    rendered = url.render_as_string(hide_password=False)
    migrate(rendered)
    yield rendered
    dispose_engines()
    with psycopg.connect(postgres_admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database without any schema: a new SQLite file, or a new PostgreSQL database (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        dispose_engines()
        return
    yield from _empty_postgres(request.getfixturevalue("postgres_admin_url"))


@pytest.fixture
def empty_postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A new PostgreSQL database without any schema (dropped after), for what only PostgreSQL has."""
    yield from _empty_postgres(postgres_admin_url)


def _empty_postgres(admin: str) -> Iterator[str]:
    name = f"fulfill_empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin).set(drivername="postgresql+psycopg", database=name)
    yield url.render_as_string(hide_password=False)
    dispose_engines()
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Each test using this runs twice: on SQLite (a fresh file) and on PostgreSQL (shared, unique ids)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fulfill.db'}"
        migrate(url)
    else:
        url = request.getfixturevalue("postgres_database")
    monkeypatch.setenv("FULFILL_DATABASE_URL", url)
    monkeypatch.setenv("FULFILL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FULFILL_APPROVAL_KEYS", str(VECTORS / "keys.json"))
    # A lost answer's late-commit window, short so tests that lose answers stay fast.
    monkeypatch.setenv("FULFILL_LATE_COMMIT_SECONDS", "1")
    monkeypatch.delenv("FULFILL_EMERGENCY_STOP", raising=False)
    get_engine(url)
    yield url
    from tasks.resolve import clear_cache

    clear_cache()


@pytest.fixture
def engine(database_url: str) -> Any:
    return get_engine(database_url)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Prefect test server for the session; task results persist under a temporary path."""
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    with (
        temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}),
        prefect_test_harness(server_startup_timeout=180),
    ):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def tenant(unique: str) -> str:
    return f"t-{unique}"


Signer = Callable[..., dict[str, Any]]


@pytest.fixture
def make_intent(tenant: str, unique: str) -> Signer:
    """Build and sign an intent: ``make_intent("internal.create_task", {"title": "x"}, expires_in=3600)``."""
    counter = iter(range(1, 10_000))

    def build(
        action_type: str,
        parameters: dict[str, Any],
        *,
        expires_at_epoch: int | None = None,
        key_index: int = 0,
        **overrides: Any,
    ) -> dict[str, Any]:
        if expires_at_epoch is None:  # admission refuses more than FULFILL_MAX_APPROVAL_TTL (30 days) ahead
            expires_at_epoch = int(time.time()) + 7 * 86400
        intent = {
            "schema_version": "action_intent.v1",
            "action_intent_id": f"ai_{unique}_{next(counter)}",
            "tenant_id": tenant,
            "account_id": "001Hs00002abcDEF",
            "decision_id": f"dec_{unique}",
            "action_type": action_type,
            "parameters": copy.deepcopy(parameters),
            "approval": {
                "approval_id": f"apr_{unique}",
                "approved_by": "jordan@acme.example",
                "approved_at": "2026-11-27T15:02:11Z",
                "edited": False,
                "key_id": KEYS["keys"][key_index]["key_id"],
            },
            "created_at": "2026-11-27T15:00:00Z",
            "expires_at_epoch": expires_at_epoch,
        }
        intent.update(overrides)
        key = KEYS["keys"][key_index]
        return sign_intent(intent, key_id=key["key_id"], seed_b64url=key["private_key_seed_b64url_TEST_ONLY"])

    return build


def load_vector(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]
