"""Bearer tokens of the status API: created, verified, listed and revoked here.

A token is ``ful_<hex id>_<43 random url-safe characters>`` (256 bits of randomness). Only its
SHA-256 is stored; the secret is shown once, when it is created. Verification finds the row by the
public id embedded in the secret and compares the digests in constant time, then checks revocation
and expiry against the database clock. Each token is bound to one tenant with a role (``viewer``,
``operator``) — or is an ``admin`` token, bound to no tenant.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from fulfill.db import db_now
from fulfill.states import TokenRole
from fulfill.tables import ApiToken, ApiTokenPublic

PREFIX = "ful_"
MAX_LIFETIME = timedelta(days=366)
_SECRET = re.compile(r"^ful_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$")
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # the intent schema's tenant_id
_DURATION = re.compile(r"^([1-9][0-9]{0,5})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class TokenError(ValueError):
    """A token request that cannot be honoured (one sentence, safe to print)."""


class TokenNotFound(TokenError):
    """No token with this id."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the verified token's tenant (``None`` for admin) and role."""

    token_id: str
    tenant_id: str | None
    role: TokenRole
    name: str

    @property
    def is_admin(self) -> bool:
        return self.role == TokenRole.ADMIN

    @property
    def can_operate(self) -> bool:
        """Operator rights: cancel, read the ledger, switch the own tenant (admins: everything)."""
        return self.role in (TokenRole.OPERATOR, TokenRole.ADMIN)

    @property
    def actor(self) -> str:
        """How ledger rows (and a cancelled intent's message) name this caller."""
        return f"{self.name} ({self.token_id})" if self.name else self.token_id


@dataclass(frozen=True)
class CreatedToken:
    """A new token: ``secret`` exists only here — it is never stored nor shown again."""

    token: ApiTokenPublic
    secret: str


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``45m``, ``2w``, ``3600s`` → a timedelta (at most :data:`MAX_LIFETIME`).

    Raises:
        TokenError: anything else.
    """
    match = _DURATION.match(text.strip())
    if not match:
        raise TokenError(
            f"--expires-in: expected a number and a unit (s, m, h, d, w), e.g. 30d; not {text!r}"
        )
    value = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if value > MAX_LIFETIME:
        raise TokenError(f"--expires-in: at most {MAX_LIFETIME.days} days")
    return value


def digest(secret: str) -> str:
    """The stored form of a secret."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create(
    session: Session,
    *,
    role: TokenRole | str,
    tenant_id: str | None,
    expires_in: timedelta,
    name: str = "",
    created_by: str = "",
) -> CreatedToken:
    """Create a token; returns its public row and the secret (the only time it exists in clear).

    Raises:
        TokenError: an unknown role, an admin token bound to a tenant, a tenant token without one,
            a malformed tenant id, or a lifetime that is not positive or longer than a year.
    """
    try:
        role = TokenRole(role)
    except ValueError:
        raise TokenError(
            f"role: must be one of {', '.join(r.value for r in TokenRole)}; not {role!r}"
        ) from None
    if role == TokenRole.ADMIN and tenant_id is not None:
        raise TokenError("an admin token is bound to no tenant: leave --tenant out")
    if role != TokenRole.ADMIN:
        if tenant_id is None:
            raise TokenError(f"a {role} token needs --tenant")
        if not _TENANT.match(tenant_id):
            raise TokenError(f"--tenant: not a tenant id: {tenant_id!r}")
    if expires_in <= timedelta(0) or expires_in > MAX_LIFETIME:
        raise TokenError(f"--expires-in: must be positive and at most {MAX_LIFETIME.days} days")
    if len(name) > 255 or len(created_by) > 320:
        raise TokenError("--name: at most 255 characters")
    public = secrets.token_hex(8)
    secret = f"{PREFIX}{public}_{secrets.token_urlsafe(32)}"
    now = db_now(session)
    row = ApiToken(
        token_id=f"tok_{public}",
        tenant_id=tenant_id,
        role=role,
        name=name,
        created_by=created_by,
        secret_sha256=digest(secret),
        created_at=now,
        expires_at=now + expires_in,
    )
    session.add(row)
    session.flush()
    return CreatedToken(ApiTokenPublic.model_validate(row, from_attributes=True), secret)


def verify(session: Session, secret: str, *, now: datetime | None = None) -> Principal | None:
    """The principal of a valid secret; ``None`` for anything unknown, malformed, revoked or expired."""
    match = _SECRET.match(secret)
    row = session.get(ApiToken, f"tok_{match.group(1)}") if match else None
    # Compare even when there is no row, so a miss takes as long as a wrong secret.
    expected = row.secret_sha256 if row is not None else "0" * 64
    if not hmac.compare_digest(expected, digest(secret)) or row is None:
        return None
    if row.revoked_at is not None or row.expires_at is None:
        return None
    if row.expires_at <= (now or db_now(session)):
        return None
    return Principal(row.token_id, row.tenant_id, TokenRole(row.role), row.name)


def list_tokens(session: Session, tenant_id: str | None = None) -> list[ApiTokenPublic]:
    """Every token (or one tenant's), newest first; never a secret nor its digest."""
    query = select(ApiToken)
    if tenant_id is not None:
        query = query.where(ApiToken.tenant_id == tenant_id)
    query = query.order_by(col(ApiToken.created_at).desc(), col(ApiToken.token_id))
    return [ApiTokenPublic.model_validate(row, from_attributes=True) for row in session.exec(query)]


def revoke(session: Session, token_id: str) -> ApiTokenPublic:
    """Revoke a token (at once, for good). Revoking a revoked token keeps the first revocation time.

    Raises:
        TokenNotFound: no token with this id.
    """
    row = session.get(ApiToken, token_id, with_for_update=True)
    if row is None:
        raise TokenNotFound(f"no token {token_id!r}")
    if row.revoked_at is None:
        row.revoked_at = db_now(session)
        session.add(row)
        session.flush()
    return ApiTokenPublic.model_validate(row, from_attributes=True)
