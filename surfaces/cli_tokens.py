"""``fulfill token …``: bearer tokens of the status API (create, list, revoke).

The secret is printed once, by ``create``; only its SHA-256 is stored. Every user error ends the
command with one line on stderr and exit code 1.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

token_app = typer.Typer(help="Bearer tokens of the HTTP status API.", no_args_is_help=True)
_out = Console()


def _fail(message: str) -> typer.Exit:
    typer.echo(" ".join(message.split()), err=True)
    return typer.Exit(1)


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option("--role", help="viewer | operator | admin")],
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="The tenant a viewer/operator token is bound to")
    ] = None,
    expires_in: Annotated[
        str, typer.Option("--expires-in", help="Lifetime: 30d, 12h, 45m, 2w (at most 366d)")
    ] = "90d",
    name: Annotated[
        str, typer.Option("--name", help="What the token is for (shown in lists and the ledger)")
    ] = "",
    created_by: Annotated[str, typer.Option("--created-by", help="Who asked for it")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the token and its secret as JSON")] = False,
) -> None:
    """Create a token and print its secret — the only time it is shown."""
    from fulfill.tokens import TokenError, parse_duration
    from surfaces.service import ExecutionService

    try:
        created = ExecutionService().create_token(
            role=role,
            tenant_id=tenant,
            expires_in=parse_duration(expires_in),
            name=name,
            created_by=created_by,
        )
    except TokenError as exc:
        raise _fail(f"invalid argument: {exc}") from None
    token = created.token
    if as_json:
        typer.echo(json.dumps({**token.model_dump(mode="json"), "secret": created.secret}))
        return
    scope = f"tenant {token.tenant_id}" if token.tenant_id else "all tenants"
    typer.echo(
        f"created {token.token_id}: {token.role} of {scope}, expires {token.expires_at:%Y-%m-%d %H:%M} UTC"
    )
    typer.echo("secret (shown only now; store it safely):")
    typer.echo(created.secret)


@token_app.command("list")
def token_list(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's tokens")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every token, newest first (never a secret)."""
    from surfaces.service import ExecutionService

    rows = ExecutionService().list_tokens(tenant)
    if as_json:
        typer.echo(json.dumps([row.model_dump(mode="json") for row in rows]))
        return
    table = Table(title="API tokens")
    for column in ("id", "tenant", "role", "name", "created", "expires", "revoked"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.token_id,
            row.tenant_id or "(all)",
            str(row.role),
            row.name,
            f"{row.created_at:%Y-%m-%d %H:%M}" if row.created_at else "",
            f"{row.expires_at:%Y-%m-%d %H:%M}" if row.expires_at else "",
            f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "",
        )
    _out.print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (tok_…), from `fulfill token list`")],
) -> None:
    """Revoke a token: it stops working at once, for good."""
    from fulfill.tokens import TokenNotFound
    from surfaces.service import ExecutionService

    try:
        row = ExecutionService().revoke_token(token_id)
    except TokenNotFound as exc:
        raise _fail(f"not found: {exc}") from None
    typer.echo(f"revoked {row.token_id} at {row.revoked_at:%Y-%m-%d %H:%M:%S} UTC")
