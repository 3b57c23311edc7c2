"""API tokens: the secret exists once, only its digest is stored, and revoked/expired tokens stop working."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from fulfill import tokens
from fulfill.db import db_now, transaction
from fulfill.states import TokenRole
from fulfill.tables import ApiToken
from fulfill.tokens import TokenError, TokenNotFound, parse_duration


def _create(
    engine: Any, role: str = "operator", tenant: str | None = "acme", **kwargs: Any
) -> tokens.CreatedToken:
    with transaction(engine) as session:
        return tokens.create(session, role=role, tenant_id=tenant, expires_in=timedelta(days=30), **kwargs)


def _verify(engine: Any, secret: str, **kwargs: Any) -> tokens.Principal | None:
    with transaction(engine) as session:
        return tokens.verify(session, secret, **kwargs)


def test_a_created_token_verifies_to_its_tenant_and_role_and_only_its_digest_is_stored(engine: Any) -> None:
    created = _create(engine, name="ci", created_by="ops@acme.example")

    assert created.secret.startswith("ful_") and len(created.secret) >= 60
    assert created.token.token_id.startswith("tok_") and created.token.token_id[4:] in created.secret
    principal = _verify(engine, created.secret)
    assert principal == tokens.Principal(created.token.token_id, "acme", TokenRole.OPERATOR, "ci")
    assert principal is not None and principal.can_operate and not principal.is_admin
    with engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT * FROM api_tokens")).mappings().all()
    row = next(r for r in stored if r["token_id"] == created.token.token_id)
    assert row["secret_sha256"] == tokens.digest(created.secret)
    assert all(created.secret not in str(value) for value in row.values())
    assert "secret" not in created.token.model_dump() and "secret_sha256" not in created.token.model_dump()


def test_wrong_malformed_revoked_and_expired_secrets_verify_to_nothing(engine: Any) -> None:
    created = _create(engine, role="viewer")
    secret = created.secret
    assert _verify(engine, secret) is not None
    for wrong in (
        "",
        "Bearer x",
        secret[:-1],
        secret[:-1] + ("A" if secret[-1] != "A" else "B"),
        secret + "x",
        secret.replace(created.token.token_id[4:], "0" * 16),
    ):
        assert _verify(engine, wrong) is None, wrong

    with transaction(engine) as session:
        later = db_now(session) + timedelta(days=31)
    assert _verify(engine, secret, now=later) is None, "expired"

    with transaction(engine) as session:
        first = tokens.revoke(session, created.token.token_id)
    assert first.revoked_at is not None
    assert _verify(engine, secret) is None, "revoked"
    with transaction(engine) as session:
        again = tokens.revoke(session, created.token.token_id)
    assert again.revoked_at == first.revoked_at, "revoking twice keeps the first time"


def test_roles_and_tenants_go_together(engine: Any) -> None:
    admin = _create(engine, role="admin", tenant=None)
    principal = _verify(engine, admin.secret)
    assert principal is not None and principal.is_admin and principal.tenant_id is None
    with transaction(engine) as session:
        for role, tenant, message in (
            ("admin", "acme", "admin token is bound to no tenant"),
            ("viewer", None, "needs --tenant"),
            ("operator", "Not A Tenant", "not a tenant id"),
            ("owner", "acme", "role: must be one of"),
        ):
            with pytest.raises(TokenError, match=message):
                tokens.create(session, role=role, tenant_id=tenant, expires_in=timedelta(days=1))
        with pytest.raises(TokenError, match="positive"):
            tokens.create(session, role="viewer", tenant_id="acme", expires_in=timedelta(0))


def test_list_is_newest_first_and_scoped_and_revoking_an_unknown_id_fails(engine: Any, unique: str) -> None:
    first = _create(engine, tenant=f"a-{unique}")
    second = _create(engine, tenant=f"a-{unique}", role="viewer")
    _create(engine, tenant=f"b-{unique}")
    with transaction(engine) as session:
        listed = tokens.list_tokens(session, f"a-{unique}")
        with pytest.raises(TokenNotFound):
            tokens.revoke(session, "tok_doesnotexist")
        assert session.get(ApiToken, "tok_doesnotexist") is None
    assert {t.token_id for t in listed} == {first.token.token_id, second.token.token_id}
    assert listed[0].created_at is not None and listed[-1].created_at is not None
    assert listed[0].created_at >= listed[-1].created_at


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("45m", timedelta(minutes=45)),
        ("2w", timedelta(weeks=2)),
        ("3600s", timedelta(hours=1)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "0d", "-1d", "1y", "367d", "1.5h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(TokenError, match="--expires-in"):
        parse_duration(text)
