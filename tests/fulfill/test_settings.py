"""Operator configuration: environment over the settings file, read once, clear errors, a live emergency stop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import fulfill.settings as settings_module
from fulfill.settings import (
    DEFAULT_MAX_APPROVAL_TTL,
    SettingsError,
    emergency_stop_engaged,
    load_settings,
    reload_settings,
)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No FULFILL_* variable but FULFILL_DATA_DIR (a fresh directory)."""
    for name in list(os.environ):
        if name.upper().startswith("FULFILL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FULFILL_DATA_DIR", str(tmp_path))
    return tmp_path


def _write(path: Path, text: str, *, mtime: int | None = None) -> None:
    path.write_text(text, encoding="utf-8")
    if mtime is not None:  # distinct modification times even on coarse-grained file systems
        os.utime(path, ns=(mtime * 10**9, mtime * 10**9))


def test_the_defaults(data_dir: Path) -> None:
    settings = load_settings()
    assert settings.data_dir == data_dir
    assert settings.database_url == f"sqlite:///{data_dir / 'fulfill.db'}"
    assert settings.migration_database_url is None and settings.runtime_role is None
    assert settings.approval_keys is None and settings.webhook_secrets == ()
    assert settings.emergency_stop is False
    assert settings.max_approval_ttl == DEFAULT_MAX_APPROVAL_TTL == 2592000
    assert settings.late_commit_seconds == 30.0


def test_the_data_dir_default_is_the_home_directory(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FULFILL_DATA_DIR")
    monkeypatch.setenv("HOME", str(data_dir / "home"))
    assert load_settings().data_dir == data_dir / "home" / ".fulfill"


def test_the_environment_wins_over_the_settings_file(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(
        data_dir / "settings.env",
        "# mirrored settings\n"
        "FULFILL_DATABASE_URL=sqlite:////from/the/file.db\n"
        "FULFILL_MAX_APPROVAL_TTL=120\n"
        'FULFILL_WEBHOOK_SECRETS="whsec_old whsec_new"\n'
        "FULFILL_LATE_COMMIT_SECONDS=\n"
        "FULFILL_SETTINGS_FILE=ignored\n"
        "OTHER_TOOL=ignored\n",
    )
    monkeypatch.setenv("FULFILL_DATABASE_URL", "postgresql+psycopg://runtime@db/fulfill")
    settings = load_settings()
    assert settings.database_url == "postgresql+psycopg://runtime@db/fulfill"
    assert settings.max_approval_ttl == 120
    assert settings.webhook_secrets == ("whsec_old", "whsec_new")
    assert settings.late_commit_seconds == 30.0, "an empty value is unset"


def test_fulfill_settings_file_names_the_file(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = data_dir / "etc" / "fulfill.env"
    elsewhere.parent.mkdir()
    _write(elsewhere, "FULFILL_RUNTIME_ROLE=fulfill_runtime\n")
    _write(data_dir / "settings.env", "FULFILL_RUNTIME_ROLE=not_this_one\n")
    monkeypatch.setenv("FULFILL_SETTINGS_FILE", str(elsewhere))
    assert load_settings().runtime_role == "fulfill_runtime"


def test_settings_are_read_once_per_process(data_dir: Path) -> None:
    _write(data_dir / "settings.env", "FULFILL_MAX_APPROVAL_TTL=120\n")
    first = load_settings()
    _write(data_dir / "settings.env", "FULFILL_MAX_APPROVAL_TTL=240\n")
    assert load_settings() is first and first.max_approval_ttl == 120
    assert reload_settings().max_approval_ttl == 240


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FULFILL_MAX_APPROVAL_TTL", "0", "must be a positive whole number of seconds"),
        ("FULFILL_MAX_APPROVAL_TTL", "1e6", "must be a positive whole number of seconds"),
        ("FULFILL_LATE_COMMIT_SECONDS", "soon", "must be a number of seconds"),
        ("FULFILL_LATE_COMMIT_SECONDS", "-1", "must be between 0 and 86400 seconds"),
        ("FULFILL_LATE_COMMIT_SECONDS", "86401", "must be between 0 and 86400 seconds"),
        ("FULFILL_LATE_COMMIT_SECONDS", "nan", "must be between 0 and 86400 seconds"),
        ("FULFILL_EMERGENCY_STOP", "maybe", "must be one of 1/true/yes/on or 0/false/no/off"),
        ("FULFILL_WEBHOOK_SECRETS", "whsec_ok plain", "every secret must start with whsec_"),
    ],
)
def test_an_invalid_value_is_one_error_naming_the_variable(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"^{name}: {message}") as raised:
        load_settings()
    assert isinstance(raised.value, ValueError) and "\n" not in str(raised.value)


def test_an_invalid_value_in_the_file_names_the_variable_too(data_dir: Path) -> None:
    _write(data_dir / "settings.env", "FULFILL_MAX_APPROVAL_TTL=thirty days\n")
    with pytest.raises(SettingsError, match="^FULFILL_MAX_APPROVAL_TTL: must be a positive whole number"):
        load_settings()


def test_the_limits_are_accepted(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FULFILL_LATE_COMMIT_SECONDS", "86400")
    monkeypatch.setenv("FULFILL_MAX_APPROVAL_TTL", " 1 ")
    settings = load_settings()
    assert (settings.late_commit_seconds, settings.max_approval_ttl) == (86400.0, 1)
    monkeypatch.setenv("FULFILL_LATE_COMMIT_SECONDS", "0")
    assert load_settings().late_commit_seconds == 0.0


# --- the global emergency stop: read afresh, without a restart -----------------------------
@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_the_emergency_stop_words(data_dir: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("FULFILL_EMERGENCY_STOP", value)
    assert emergency_stop_engaged() and load_settings().emergency_stop


def test_the_emergency_stop_takes_effect_without_a_restart(data_dir: Path) -> None:
    """An operator flips it in the settings file of a running worker (the environment cannot be changed)."""
    settings = load_settings()
    assert not emergency_stop_engaged()
    _write(data_dir / "settings.env", "FULFILL_EMERGENCY_STOP=1\n", mtime=1_000)
    assert emergency_stop_engaged()
    _write(data_dir / "settings.env", "FULFILL_EMERGENCY_STOP=0\n", mtime=2_000)
    assert not emergency_stop_engaged()
    (data_dir / "settings.env").unlink()
    assert not emergency_stop_engaged()
    assert load_settings() is settings, "nothing else was re-read"


def test_the_environment_wins_for_the_emergency_stop_too(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(data_dir / "settings.env", "FULFILL_EMERGENCY_STOP=1\n")
    assert emergency_stop_engaged()
    monkeypatch.setenv("FULFILL_EMERGENCY_STOP", "0")
    assert not emergency_stop_engaged()
    monkeypatch.setenv("FULFILL_EMERGENCY_STOP", "")
    assert emergency_stop_engaged(), "blank is unset: the file counts"


def test_the_settings_file_is_parsed_again_only_after_it_changed(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses: list[object] = []
    real = settings_module.dotenv_values

    def counting(*args: object, **kwargs: object) -> object:
        parses.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(settings_module, "dotenv_values", counting)
    _write(data_dir / "settings.env", "FULFILL_EMERGENCY_STOP=off\n", mtime=3_000)
    assert [emergency_stop_engaged() for _ in range(50)] == [False] * 50
    assert len(parses) == 1
    _write(data_dir / "settings.env", "FULFILL_EMERGENCY_STOP=on\n", mtime=4_000)
    assert emergency_stop_engaged() and len(parses) == 2


def test_an_unrecognised_emergency_stop_value_engages_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A kill switch fails closed: an operator who wrote something meant to stop."""
    monkeypatch.setenv("FULFILL_EMERGENCY_STOP", "halt")
    assert emergency_stop_engaged()
    assert "FULFILL_EMERGENCY_STOP" in caplog.text
