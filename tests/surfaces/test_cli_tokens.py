"""``fulfill token create | list | revoke``: the secret is printed once; user errors are one line, exit 1."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from surfaces.cli import app
from surfaces.service import ExecutionService

runner = CliRunner()


def test_create_prints_the_secret_once_and_it_authenticates(engine: Any, tenant: str) -> None:
    result = runner.invoke(
        app,
        ["token", "create", "--tenant", tenant, "--role", "operator", "--expires-in", "30d", "--name", "ci"],
    )

    assert result.exit_code == 0, result.output
    secret = result.output.strip().splitlines()[-1]
    assert secret.startswith("ful_")
    assert f"operator of tenant {tenant}" in result.output
    principal = ExecutionService(engine).authenticate(secret)
    assert principal is not None and principal.tenant_id == tenant and principal.name == "ci"

    listed = runner.invoke(app, ["token", "list", "--json"])
    assert listed.exit_code == 0
    rows = json.loads(listed.output)
    (row,) = [r for r in rows if r["token_id"] == principal.token_id]
    assert row["role"] == "operator" and row["tenant_id"] == tenant and row["revoked_at"] is None
    assert secret not in listed.output and "sha256" not in listed.output
    table = runner.invoke(app, ["token", "list"])
    assert table.exit_code == 0 and secret not in table.output


def test_revoke_stops_the_token(engine: Any, tenant: str) -> None:
    created = json.loads(
        runner.invoke(app, ["token", "create", "--tenant", tenant, "--role", "viewer", "--json"]).output
    )
    service = ExecutionService(engine)
    assert service.authenticate(created["secret"]) is not None

    result = runner.invoke(app, ["token", "revoke", created["token_id"]])

    assert result.exit_code == 0 and f"revoked {created['token_id']}" in result.output
    assert service.authenticate(created["secret"]) is None
    rows = json.loads(runner.invoke(app, ["token", "list", "--json", "--tenant", tenant]).output)
    assert rows[0]["revoked_at"] is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "--tenant", "acme", "--role", "owner"], "invalid argument: role: must be one of"),
        (["create", "--tenant", "acme", "--role", "admin"], "admin token is bound to no tenant"),
        (["create", "--role", "viewer"], "a viewer token needs --tenant"),
        (["create", "--tenant", "acme", "--role", "viewer", "--expires-in", "forever"], "--expires-in"),
        (["create", "--tenant", "acme", "--role", "viewer", "--expires-in", "400d"], "at most 366 days"),
        (["revoke", "tok_0000000000000000"], "not found: no token 'tok_0000000000000000'"),
    ],
)
def test_user_errors_are_one_line_and_exit_1(engine: Any, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["token", *args])
    assert result.exit_code == 1
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
