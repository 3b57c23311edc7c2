"""The ``fulfill`` command line (typer + rich). Every read command takes ``--json``."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from fulfill.states import ExecutionStatus
from surfaces.cli_tokens import token_app


def _user_error(exc: Exception) -> tuple[int, str] | None:
    """``(exit code, one line)`` for the errors a user causes and can fix; ``None`` for a bug.

    Imports lazily: only a failing command pays for them.
    """
    from sqlalchemy.exc import OperationalError

    from fulfill.db import SchemaNotCurrent
    from fulfill.executions import AlreadyFinished, ExecutionNotFound, NotRerunnable
    from fulfill.settings import SettingsError
    from surfaces.service import IntentRejected, InvalidRequest, TenantNotFound

    if isinstance(exc, ExecutionNotFound):
        return 1, f"not found: {exc}"
    if isinstance(exc, TenantNotFound):
        return 1, f"not found: {exc}"
    if isinstance(exc, AlreadyFinished | NotRerunnable):
        return 1, f"conflict: {exc}"
    if isinstance(exc, IntentRejected):
        return 1, f"rejected: {exc}"
    if isinstance(exc, InvalidRequest):
        return 2, f"invalid argument: {exc}"
    if isinstance(exc, SettingsError):
        return 1, f"configuration: {exc}"
    if isinstance(exc, SchemaNotCurrent):
        return 1, str(exc)
    if isinstance(exc, OperationalError):
        detail = str(exc.orig if exc.orig is not None else exc).strip()
        return 1, f"database unavailable: {detail}"
    return None


class _Commands(TyperGroup):
    """The root command group: a user error ends the command in one line on stderr, never a traceback."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except Exception as exc:
            failure = _user_error(exc)
            if failure is None:
                raise
            code, message = failure
            typer.echo(" ".join(message.split()) or type(exc).__name__, err=True)
            raise typer.Exit(code) from None


app = typer.Typer(
    cls=_Commands,
    help="fulfill: bounded execution of human-approved action intents.",
    no_args_is_help=True,
)
intent_app = typer.Typer(help="Validate and sign ActionIntentV1 documents.", no_args_is_help=True)
ledger_app = typer.Typer(help="The append-only, hash-chained ledger.", no_args_is_help=True)
controls_app = typer.Typer(
    help="Kill switches (tenant, action type; the global stop is FULFILL_EMERGENCY_STOP).",
    no_args_is_help=True,
)
tenant_app = typer.Typer(help="Tenant connector configuration.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
sandbox_app = typer.Typer(help="Local provider emulators on loopback.", no_args_is_help=True)
blocks_app = typer.Typer(help="Prefect credential blocks.", no_args_is_help=True)
app.add_typer(intent_app, name="intent")
app.add_typer(ledger_app, name="ledger")
app.add_typer(controls_app, name="controls")
app.add_typer(tenant_app, name="tenant")
app.add_typer(db_app, name="db")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(blocks_app, name="blocks")
app.add_typer(token_app, name="token")

console = Console()
err = Console(stderr=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
TenantOption = Annotated[
    str | None, typer.Option("--tenant", help="Scope to one tenant (default: operator view of all).")
]
ActorOption = Annotated[str, typer.Option("--actor", help="Who does this (recorded in the ledger).")]
IntentId = Annotated[str, typer.Argument(help="The action_intent_id.")]

STATUS_STYLE: dict[str, str] = {
    ExecutionStatus.SUCCEEDED: "green",
    ExecutionStatus.FAILED: "red",
    ExecutionStatus.EXPIRED: "yellow",
    ExecutionStatus.CANCELLED: "yellow",
    ExecutionStatus.EXECUTING: "cyan",
    ExecutionStatus.PENDING: "cyan",
    "REJECTED": "red",  # the demo's row for an intent admission refused (it has no execution)
}


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _read_json(path: Path) -> bytes:
    """The document's raw bytes (file, or stdin for ``-``): decoding is the safe loader's job."""
    try:
        return sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        typer.echo(f"cannot read {path}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None


def _trusted_keys() -> Any:
    """The approval service's public keys (``FULFILL_APPROVAL_KEYS``); one line and exit 1 when unusable."""
    from fulfill.approval import TrustedKeys
    from fulfill.settings import load_settings

    setting = load_settings().approval_keys
    try:
        keys = TrustedKeys.from_setting(setting)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        typer.echo(f"configuration: FULFILL_APPROVAL_KEYS: cannot be used: {reason}", err=True)
        raise typer.Exit(1) from None
    if not keys.keys:
        typer.echo(
            "configuration: no trusted approval keys: set FULFILL_APPROVAL_KEYS "
            "(a path to, or the JSON of, the approval service's public keys)",
            err=True,
        )
        raise typer.Exit(1)
    return keys


def _status(value: str) -> str:
    return f"[{STATUS_STYLE.get(value, 'white')}]{value}[/]"


# --- intents -----------------------------------------------------------------------------
@intent_app.command("verify")
def intent_verify(file: Annotated[Path, typer.Argument(help="Intent JSON file, or - for stdin.")]) -> None:
    """Check schema and approval signature against FULFILL_APPROVAL_KEYS; prints `valid` or the reason."""
    from fulfill.approval import ApprovalInvalid
    from fulfill.intent import IntentInvalid, load_intent_document, parse_intent

    data = _read_json(file)
    try:
        document = load_intent_document(data)
        parse_intent(document)
        _trusted_keys().verify(document)
    except IntentInvalid as exc:
        typer.echo(f"invalid: VALIDATION_FAILED: {exc}")
        raise typer.Exit(1) from None
    except ApprovalInvalid as exc:
        typer.echo(f"invalid: APPROVAL_INVALID: {exc.reason}")
        raise typer.Exit(1) from None
    typer.echo("valid")


@intent_app.command("sign")
def intent_sign(
    file: Annotated[Path, typer.Argument(help="Intent JSON file, or - for stdin.")],
    key_seed: Annotated[
        str, typer.Option("--key-seed", help="Ed25519 private seed, base64url (TEST SET-UPS ONLY).")
    ],
    key_id: Annotated[
        str | None, typer.Option("--key-id", help="key_id to write (default: the intent's approval.key_id).")
    ] = None,
) -> None:
    """Sign an intent for integrators' test set-ups (production never holds a private key)."""
    from fulfill.approval import sign_intent

    document = json.loads(_read_json(file))
    chosen = key_id or document.get("approval", {}).get("key_id")
    if not chosen:
        typer.echo("approval.key_id: missing; pass --key-id", err=True)
        raise typer.Exit(2)
    _print_json(sign_intent(document, key_id=chosen, seed_b64url=key_seed))


@app.command("execute")
def execute(
    file: Annotated[Path, typer.Argument(help="Signed intent JSON file, or - for stdin.")],
    as_json: JsonFlag = False,
) -> None:
    """Execute one intent through the execute-intent flow in this process."""
    from fulfill.intent import IntentInvalid, load_intent_document
    from surfaces.service import ExecutionService
    from tasks.admit import Rejected, verify_and_register

    data = _read_json(file)
    _trusted_keys()  # a host without them would refuse every intent: say so instead
    try:
        raw = load_intent_document(data)
    except IntentInvalid:
        # Refused like any other submission: admission ledgers it and names the field.
        refused = verify_and_register(data)
        if isinstance(refused, Rejected):  # always: the loader refused the document
            typer.echo(f"rejected: {refused.code}: {refused.reason}", err=True)
        raise typer.Exit(1) from None
    try:
        status = ExecutionService().execute_action_intent(raw)
    except IntentInvalid as exc:
        typer.echo(f"rejected: {exc}", err=True)
        raise typer.Exit(1) from None
    _show_status(status.model_dump(mode="json"), as_json)
    if status.status != ExecutionStatus.SUCCEEDED:
        raise typer.Exit(1)


@app.command("plan")
def plan(
    file: Annotated[Path, typer.Argument(help="Intent JSON file, or - for stdin.")], as_json: JsonFlag = False
) -> None:
    """Dry run: print the exact provider requests the intent would make, sending nothing."""
    from fulfill.intent import IntentInvalid, load_intent_document
    from surfaces.dry_run import PlanFailed, format_plan, plan_requests

    try:
        raw = load_intent_document(_read_json(file))
    except IntentInvalid as exc:
        typer.echo(f"invalid: VALIDATION_FAILED: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        requests = plan_requests(raw)
    except PlanFailed as failed:
        typer.echo(f"cannot plan: {failed}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        _print_json([r.model_dump(mode="json") for r in requests])
    else:
        typer.echo(format_plan(requests))


# --- status / timeline / list / cancel --------------------------------------------------
def _show_status(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(data)
        return
    table = Table(show_header=False, box=None)
    for key in (
        "action_intent_id",
        "tenant_id",
        "account_id",
        "action_type",
        "status",
        "explanation",
        "attempts",
        "approved_by",
        "approved_at",
        "expires_at",
        "created_at",
        "finished_at",
    ):
        value = data.get(key)
        table.add_row(f"[bold]{key}[/]", _status(str(value)) if key == "status" else str(value))
    failure = data.get("failure")
    if failure:
        table.add_row(
            "[bold]failure[/]",
            f"{failure['code']} — {failure['message']} "
            f"(needs human: {failure['needs_human']}, compensation: {failure['compensation']})",
        )
    for ref in data.get("external_refs", []):
        table.add_row(
            "[bold]external ref[/]", f"{ref['system']} {ref['object']} {ref['id']} {ref.get('url') or ''}"
        )
    console.print(table)


@app.command("status")
def status(
    action_intent_id: Annotated[
        str | None, typer.Argument(help="Intent id; omit to list the newest executions.")
    ] = None,
    tenant: TenantOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Show one execution's status (or the newest executions)."""
    from surfaces.service import ExecutionService

    service = ExecutionService()
    if action_intent_id is None:
        _list(service, tenant=tenant, account=None, statuses=None, limit=20, cursor=None, as_json=as_json)
        return
    _show_status(service.get_execution_status(action_intent_id, tenant).model_dump(mode="json"), as_json)


def _list(
    service: Any,
    *,
    tenant: str | None,
    account: str | None,
    statuses: list[str] | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    page = service.list_executions(
        tenant_id=tenant, account_id=account, statuses=statuses, limit=limit, cursor=cursor
    )
    if as_json:
        _print_json(page.model_dump(mode="json"))
        return
    table = Table(title="Executions (newest first)")
    for column in ("intent", "action", "status", "explanation", "created"):
        table.add_column(column, overflow="fold")
    for item in page.items:
        table.add_row(
            item.action_intent_id, item.action_type, _status(item.status), item.explanation, item.created_at
        )
    console.print(table)
    if page.next_cursor:
        console.print(f"next page: --cursor {page.next_cursor}")


@app.command("executions")
def executions_cmd(
    account: Annotated[str | None, typer.Option("--account", help="Account id.")] = None,
    status_filter: Annotated[
        list[ExecutionStatus] | None, typer.Option("--status", help="Filter by status (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=200, help="Page size.")] = 50,
    cursor: Annotated[str | None, typer.Option("--cursor", help="From a previous page.")] = None,
    tenant: TenantOption = None,
    as_json: JsonFlag = False,
) -> None:
    """List executions, newest first (keyset pagination)."""
    from surfaces.service import ExecutionService

    _list(
        ExecutionService(),
        tenant=tenant,
        account=account,
        statuses=[str(s) for s in status_filter] if status_filter else None,
        limit=limit,
        cursor=cursor,
        as_json=as_json,
    )


@app.command("timeline")
def timeline(action_intent_id: IntentId, tenant: TenantOption = None, as_json: JsonFlag = False) -> None:
    """Decision → approval → execution → outcome for one intent."""
    from surfaces.service import ExecutionService

    data = ExecutionService().get_timeline(action_intent_id, tenant)
    if as_json:
        _print_json(data.model_dump(mode="json"))
        return
    _print_timeline(data)


def _print_timeline(data: Any) -> None:
    table = Table(title=f"Timeline of {data.action_intent_id}")
    for column in ("at", "stage", "what", "detail"):
        table.add_column(column, overflow="fold")
    for event in data.events:
        table.add_row(event.at, event.stage, event.title, event.detail)
    console.print(table)


@app.command("cancel")
def cancel(action_intent_id: IntentId, actor: ActorOption = "operator", tenant: TenantOption = None) -> None:
    """Cancel a PENDING/EXECUTING intent: no further external call starts."""
    from surfaces.service import ExecutionService

    result = ExecutionService().cancel_execution(action_intent_id, tenant, actor=actor)
    console.print(f"{action_intent_id}: {_status(result.status)}")


@app.command("rerun")
def rerun(
    action_intent_id: IntentId,
    actor: ActorOption = "operator",
    tenant: TenantOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Rerun a FAILED execution in this process (finished steps are skipped). Exit 1 unless it SUCCEEDED."""
    from surfaces.service import ExecutionService

    result = ExecutionService().rerun_execution(action_intent_id, tenant, actor=actor)
    _show_status(result.model_dump(mode="json"), as_json)
    if result.status != ExecutionStatus.SUCCEEDED:
        raise typer.Exit(1)


# --- ledger ------------------------------------------------------------------------------
@ledger_app.command("verify")
def ledger_verify(tenant: TenantOption = None, as_json: JsonFlag = False) -> None:
    """Recompute every tenant's keyed chain against the last checkpoint; name the first broken or
    missing row. Exit 1 if any is broken."""
    from dataclasses import asdict

    from surfaces.service import ExecutionService

    reports = ExecutionService().verify_ledger([tenant] if tenant else None)
    if as_json:
        _print_json([asdict(r) for r in reports])
    else:
        table = Table(title="Ledger chains")
        for column in ("tenant", "rows", "anchored", "ok", "first broken row", "reason"):
            table.add_column(column, overflow="fold")
        for r in reports:
            where = f"seq {r.broken_seq}" + (
                f" (id {r.broken_id})" if r.broken_id is not None else " (missing)"
            )
            table.add_row(
                r.tenant_id,
                str(r.rows),
                "" if r.anchored_seq is None else f"seq {r.anchored_seq}",
                "[green]yes[/]" if r.ok else "[red]NO[/]",
                "" if r.ok or r.broken_seq is None else where,
                r.reason or "",
            )
        console.print(table)
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


@ledger_app.command("anchor")
def ledger_anchor(tenant: TenantOption = None, as_json: JsonFlag = False) -> None:
    """Verify the chains and export a signed checkpoint of their heads (FULFILL_LEDGER_ANCHOR_BLOCK,
    else the data directory). A chain that does not verify keeps its old anchor; exit 1 then."""
    from fulfill.anchors import CheckpointInvalid
    from surfaces.service import ExecutionService

    try:
        summary = ExecutionService().anchor_ledger([tenant] if tenant else None)
    except CheckpointInvalid as exc:
        typer.echo(f"not anchored: the stored ledger checkpoint {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        _print_json(summary.model_dump(mode="json"))
    else:
        console.print(f"anchored {len(summary.anchored)} chains at {summary.location}")
        for name, problem in summary.broken.items():
            err.print(f"[red]not anchored[/] {name}: {problem}")
    if summary.broken:
        raise typer.Exit(1)


security_app = typer.Typer(
    help="Refused submissions nobody authenticated (kept out of every tenant's ledger).",
    no_args_is_help=True,
)
app.add_typer(security_app, name="security")


@security_app.command("log")
def security_log(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only those claiming this tenant.")] = None,
    intent: Annotated[
        str | None, typer.Option("--intent", help="Only those claiming this action_intent_id.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many rows.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Rejected submissions whose approval signature did not verify, newest first (claims are unverified)."""
    from surfaces.service import ExecutionService

    rows = ExecutionService().security_log(tenant_id=tenant, action_intent_id=intent, limit=limit)
    if as_json:
        _print_json([r.model_dump(mode="json") for r in rows])
        return
    table = Table(title="Security log (unauthenticated refusals)")
    for column in ("at", "code", "claimed tenant", "claimed intent", "key_id", "field", "reason", "count"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            str(r.at),
            str(r.code),
            r.claimed_tenant_id or "*",
            r.claimed_intent_id or "",
            r.key_id or "",
            r.field or "",
            r.reason[:200],
            str(r.count),
        )
    console.print(table)


@ledger_app.command("show")
def ledger_show(action_intent_id: IntentId, tenant: TenantOption = None, as_json: JsonFlag = False) -> None:
    """The raw ledger rows of one intent."""
    from surfaces.service import ExecutionService

    rows = ExecutionService().get_ledger_entries(action_intent_id, tenant)
    if as_json:
        _print_json([r.model_dump(mode="json") for r in rows])
        return
    table = Table(title=f"Ledger of {action_intent_id}")
    for column in ("seq", "at", "event", "actor", "details", "hash"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            str(r.seq),
            r.at,
            r.event_type,
            r.actor,
            json.dumps(r.details, ensure_ascii=False)[:200],
            r.row_hash[:12],
        )
    console.print(table)


# --- controls ----------------------------------------------------------------------------
@controls_app.command("list")
def controls_list(as_json: JsonFlag = False) -> None:
    """Show every kill switch, with the global emergency stop (read-only, from the environment)."""
    from fulfill.settings import emergency_stop_engaged
    from surfaces.service import ExecutionService

    rows = ExecutionService().list_kill_switches()
    if as_json:
        _print_json(
            {
                "emergency_stop": emergency_stop_engaged(),
                "switches": [r.model_dump(mode="json") for r in rows],
            }
        )
        return
    console.print(f"global emergency stop: {'[red]ENGAGED[/]' if emergency_stop_engaged() else 'off'}")
    table = Table(title="Kill switches")
    for column in ("scope", "key", "enabled", "reason", "changed by", "changed at"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.scope,
            r.key,
            "yes" if r.enabled else "[red]NO (stopped)[/]",
            r.reason,
            r.changed_by,
            str(r.changed_at),
        )
    console.print(table)


@controls_app.command("set")
def controls_set(
    scope: Annotated[str, typer.Argument(help="tenant | action_type")],
    key: Annotated[str, typer.Argument(help="The tenant id or action type.")],
    enabled: Annotated[bool, typer.Option("--enabled/--disabled", help="Allow or stop new external calls.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the ledger).")] = "",
    actor: ActorOption = "operator",
) -> None:
    """Flip a kill switch; no new external call starts while disabled.

    An action type must be one of the contract's; a tenant that is neither configured nor has any
    execution is accepted (a tenant can be stopped before its first intent) with a warning on stderr.
    """
    from surfaces.service import ExecutionService

    service = ExecutionService()
    hint = service.unknown_tenant_hint(key) if scope == "tenant" else None  # before the switch ledgers it
    row = service.set_kill_switch(scope, key, enabled=enabled, reason=reason, actor=actor)
    if hint:
        typer.echo(f"warning: {hint}; the switch is set, check the spelling", err=True)
    console.print(f"{row.scope} {row.key}: {'enabled' if row.enabled else 'DISABLED'}")


# --- tenants / db / blocks ----------------------------------------------------------------
@tenant_app.command("set")
def tenant_set(
    tenant_id: Annotated[str, typer.Argument(help="The tenant id.")],
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
    crm: Annotated[str | None, typer.Option("--crm", help="salesforce | hubspot")] = None,
    crm_block: Annotated[
        str | None, typer.Option("--crm-block", help="Name of the credentials block document.")
    ] = None,
    calendar: Annotated[str | None, typer.Option("--calendar", help="google_calendar")] = None,
    calendar_block: Annotated[
        str | None, typer.Option("--calendar-block", help="Name of the calendar credentials block.")
    ] = None,
    storage_block: Annotated[
        str | None, typer.Option("--storage-block", help="prefect-aws S3Bucket block for briefs.")
    ] = None,
    actor: ActorOption = "operator",
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Check the providers afterwards (read-only).")
    ] = True,
) -> None:
    """Map a tenant to its CRM / calendar providers and credential blocks, then check them (stderr)."""
    from surfaces.service import ExecutionService

    row = ExecutionService().set_tenant(
        tenant_id,
        actor=actor,
        name=name,
        crm_provider=crm,
        crm_block=crm_block,
        calendar_provider=calendar,
        calendar_block=calendar_block,
        storage_block=storage_block,
    )
    _print_json(row.model_dump(mode="json"))
    if check and (crm or crm_block or calendar or calendar_block):
        # What the tenant's org/portal offers each action type; on stderr, so stdout stays the row.
        _print_tenant_check(tenant_id, err)


def _print_tenant_check(tenant_id: str, out: Console, *, as_json: bool = False) -> bool:
    """Run the connector self-check of ``tenant_id``; print it; whether every configured family passed."""
    from dataclasses import asdict

    from tasks.check import check_tenant

    checks = check_tenant(tenant_id)
    if as_json:
        _print_json([{**asdict(c), "ok": c.ok, "disabled": c.disabled} for c in checks])
    else:
        table = Table(title=f"Connector check of {tenant_id}")
        for column in ("action type", "system", "guarantee"):
            table.add_column(column, overflow="fold")
        todo: list[str] = []
        for c in checks:
            for action_type, guarantee in c.guarantees.items():
                shown = str(guarantee) if c.error_class is None else f"not enabled ({c.error_class})"
                table.add_row(action_type, c.system or "-", shown)
                if guarantee == "not enabled":
                    todo += [f"{action_type}: {fix}" for fix in c.fixes.get(action_type) or [c.error or ""]]
        out.print(table)
        for line in todo:
            out.print(line, soft_wrap=True, markup=False, highlight=False)
    return all(c.ok for c in checks if c.configured)


@tenant_app.command("check")
def tenant_check(
    tenant_id: Annotated[str, typer.Argument(help="The tenant id.")], as_json: JsonFlag = False
) -> None:
    """Check, read-only against the live org/portal, every precondition each action type relies on; print the
    guarantee per action type (exactly once by a provider key / by lookup within a window / needs a person
    on a lost response). An action type that fails is not enabled: its intents end NOT_CONFIGURED.
    Exit 1 when a configured provider fails a check or cannot be reached."""
    from surfaces.service import ExecutionService

    ExecutionService().get_tenant(tenant_id)  # an unknown tenant: one line, exit 1
    if not _print_tenant_check(tenant_id, console, as_json=as_json):
        raise typer.Exit(1)


@tenant_app.command("show")
def tenant_show(tenant_id: Annotated[str, typer.Argument(help="The tenant id.")]) -> None:
    """A tenant's connector configuration, as JSON (exit 1 when it is not configured)."""
    from surfaces.service import ExecutionService

    _print_json(ExecutionService().get_tenant(tenant_id).model_dump(mode="json"))


@db_app.command("upgrade")
def db_upgrade(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Database to migrate, as a role that owns the schema "
            "(default: FULFILL_MIGRATION_DATABASE_URL, else FULFILL_DATABASE_URL).",
        ),
    ] = None,
    runtime_role: Annotated[
        str | None,
        typer.Option(
            "--runtime-role",
            help="PostgreSQL role to grant the run-time privileges to (default: FULFILL_RUNTIME_ROLE).",
        ),
    ] = None,
) -> None:
    """Migrate the database schema to this fulfill's revision (an explicit deployment step)."""
    from sqlalchemy.exc import SQLAlchemyError

    from fulfill.db import upgrade_database
    from fulfill.settings import load_settings

    try:
        revision = upgrade_database(url, runtime_role=runtime_role)
    except (ValueError, SQLAlchemyError) as exc:
        typer.echo(f"database upgrade failed: {str(exc).splitlines()[0]}", err=True)
        raise typer.Exit(1) from None
    granted = runtime_role or load_settings().runtime_role
    console.print(f"database schema at revision {revision}" + (f"; granted to {granted}" if granted else ""))


@db_app.command("current")
def db_current(as_json: JsonFlag = False) -> None:
    """The database's schema revision and the one this fulfill needs (exit 1 when they differ)."""
    from fulfill.db import current_revision, head_revision, make_engine
    from fulfill.settings import load_settings

    engine = make_engine(load_settings().database_url)
    try:
        with engine.connect() as connection:
            current = current_revision(connection)
    finally:
        engine.dispose()
    head = head_revision()
    if as_json:
        _print_json({"current": current, "head": head})
    else:
        console.print(f"database: {current or 'no schema'}; this fulfill needs: {head}")
    if current != head:
        raise typer.Exit(1)


@blocks_app.command("register")
def blocks_register() -> None:
    """Register fulfill's credential block types with the Prefect server."""
    from blocks.google_calendar import GoogleCalendarCredentials
    from blocks.hubspot import HubSpotCredentials
    from blocks.salesforce import SalesforceCredentials

    for block in (SalesforceCredentials, HubSpotCredentials, GoogleCalendarCredentials):
        block.register_type_and_schema()
        console.print(f"registered {block.get_block_type_slug()}")


@sandbox_app.command("serve")
def sandbox_serve(
    salesforce_port: Annotated[int, typer.Option("--salesforce-port", help="Salesforce emulator.")] = 8771,
    hubspot_port: Annotated[int, typer.Option("--hubspot-port", help="HubSpot emulator.")] = 8772,
    google_port: Annotated[int, typer.Option("--google-port", help="Google Calendar emulator.")] = 8773,
    save_blocks_for: Annotated[
        str | None,
        typer.Option("--configure-tenant", help="Save sandbox blocks and point this tenant at them."),
    ] = None,
) -> None:
    """Serve the Salesforce, HubSpot and Google Calendar emulators on loopback until Ctrl-C."""
    start_sandbox = _development_tool("sandbox.local").start_sandbox
    sandbox = start_sandbox(
        ports={"salesforce": salesforce_port, "hubspot": hubspot_port, "google_calendar": google_port}
    )
    for name, url in sandbox.urls.items():
        console.print(f"{name:16} {url}   (faults: POST {url}/__sandbox/faults)")
    console.print("workers using these blocks need FULFILL_ALLOW_LOOPBACK_PROVIDERS=1 (loopback endpoints)")
    if save_blocks_for:
        sandbox.configure_tenant(save_blocks_for, crm="salesforce", prefix="sandbox", actor="sandbox")
        console.print(f"tenant {save_blocks_for} now uses the sandbox blocks")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sandbox.shutdown()


def _development_tool(module: str) -> Any:
    """The demo and the provider emulators: development tools, kept out of the production import graph
    and wheel (import-linter checks that no production module imports them), loaded only on demand."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        typer.echo(
            f"{module} is a development tool that this installation does not include; run it from a checkout",
            err=True,
        )
        raise typer.Exit(2) from None


# --- scorecard ---------------------------------------------------------------------------
@app.command("scorecard")
def scorecard(
    intents: Annotated[int, typer.Option(min=1, help="Approvals to deliver, across every action type.")] = 40,
    crashes: Annotated[int, typer.Option(min=0, help="Executions to SIGKILL at a recovery point.")] = 10,
    executors: Annotated[int, typer.Option(min=1, max=16, help="Executor processes.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the plan (which intent, which point, which fault).")] = 0,
    time_limit: Annotated[float, typer.Option(min=30, help="Give up after this many seconds.")] = 1800.0,
    write: Annotated[
        Path | None, typer.Option(help="Append the result as a Markdown section to this file.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Inject crashes and faults into real executions; exit 1 unless nothing was duplicated or lost."""
    module = _development_tool("surfaces.scorecard")
    config = module.ScorecardConfig(
        intents=intents, crashes=crashes, executors=executors, seed=seed, time_limit=time_limit
    )
    progress = err if as_json else console
    card = module.run_scorecard(config, emit=lambda line: progress.print(line, style="dim"))
    if as_json:
        _print_json({**dataclasses.asdict(card), "ok": card.ok})
    else:
        table = Table(title=f"fulfill scorecard — {'pass' if card.ok else 'FAIL'}")
        for column in ("measure", "value", "must be"):
            table.add_column(column, overflow="fold")
        for row in module.rows(card):
            table.add_row(*row)
        console.print(table)
    if write is not None:
        command = (
            f"fulfill scorecard --intents {intents} --crashes {crashes} --executors {executors} --seed {seed}"
        )
        with write.open("a", encoding="utf-8") as out:
            out.write("\n" + module.markdown(card, command))
    if not card.ok:
        raise typer.Exit(1)


# --- demo --------------------------------------------------------------------------------
@app.command("demo")
def demo(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the outcomes, as JSON (progress goes to stderr).")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Show Prefect's flow and task run logs.")
    ] = False,
) -> None:
    """Execute signed sample intents end to end on the embedded defaults and show the outcomes."""
    if verbose:
        os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"
    from surfaces.service import ExecutionService

    run_demo = _development_tool("surfaces.demo").run_demo

    started = time.monotonic()
    progress = err if as_json else console  # with --json, stdout carries the JSON and nothing else
    progress.print(
        "[bold]fulfill demo[/] — starting Prefect (ephemeral unless PREFECT_API_URL is set) and "
        "loopback emulators for Salesforce, HubSpot and Google Calendar…"
    )
    cases = run_demo(emit=lambda line: progress.print(line, style="dim"))
    if as_json:
        _print_json([{"scenario": c.title, "expect": c.expect, **c.outcome} for c in cases])
        return
    table = Table(title="Outcomes")
    for column in ("#", "scenario", "intent", "status", "explanation"):
        table.add_column(column, overflow="fold")
    for n, case in enumerate(cases, start=1):
        outcome = case.outcome
        failure = outcome.get("failure") or {}
        explanation = outcome.get("explanation", "")
        if failure.get("code"):
            explanation = f"[{failure['code']}] {explanation}"
        table.add_row(
            str(n),
            case.title,
            outcome.get("action_intent_id", ""),
            _status(outcome.get("status", "?")),
            explanation,
        )
    console.print(table)
    compensated = next(c for c in cases if c.title.startswith("Salesforce opportunity"))
    service = ExecutionService()
    _print_timeline(service.get_timeline(compensated.outcome["action_intent_id"]))
    chains_ok = all(r.ok for r in service.verify_ledger())
    console.print(f"ledger chains verify: {'[green]yes[/]' if chains_ok else '[red]NO[/]'}")
    from fulfill.settings import load_settings

    console.print(f"done in {time.monotonic() - started:.1f} s. Data: {load_settings().data_dir}")
    console.print(
        f"Try: [bold]./run fulfill status {cases[3].outcome.get('action_intent_id')}[/]  or  "
        f"[bold]./run fulfill timeline {cases[5].outcome.get('action_intent_id')}[/]",
        soft_wrap=True,
    )


# --- the running service ----------------------------------------------------------------
@app.command("up")
def up(
    prefect_port: Annotated[int, typer.Option("--prefect-port", help="Prefect server (UI and API).")] = 4200,
    api_port: Annotated[int, typer.Option("--api-port", help="The fulfill API (approval webhook).")] = 8080,
    process_worker: Annotated[
        bool,
        typer.Option(
            "--process-worker",
            help="Run both pools with Prefect's process worker (a new interpreter per run) instead of the warm worker.",
        ),
    ] = False,
) -> None:
    """Start the whole local stack: Prefect server and UI, work pools, deployments, workers, the API."""
    from fulfill.settings import load_settings
    from surfaces.up import running_stack

    data_dir = load_settings().data_dir
    try:
        with running_stack(
            data_dir,
            prefect_port=prefect_port,
            api_port=api_port,
            emit=console.print,
            warm=not process_worker,
        ) as stack:
            ui = stack.prefect_url.removesuffix("/api")
            console.print(
                f"[bold]Prefect UI[/]      {ui}   (user:password in {data_dir / 'prefect-api-auth'})"
            )
            console.print(f"[bold]Prefect API[/]     {stack.prefect_url}")
            console.print(
                f"[bold]fulfill API[/]     {stack.api_url}   POST /webhooks/approvals · /healthz · /docs"
            )
            console.print(
                "[bold]work pools[/]      fulfill (intents) · fulfill-maintenance (reconcile, expiry, signals); "
                + ("process workers" if process_worker else "warm workers")
            )
            console.print(f"[bold]logs[/]            {data_dir / 'logs'}")
            console.print("Ctrl-C stops everything.")
            while (dead := stack.dead()) is None:
                time.sleep(1)
            err.print(
                f"{dead} stopped unexpectedly (see {data_dir / 'logs' / (dead + '.log')}); stopping the rest"
            )
            raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("stopped")
    except RuntimeError as exc:
        err.print(f"fulfill up: {exc}")
        raise typer.Exit(1) from None


@app.command("worker")
def worker(
    pool: Annotated[
        str, typer.Option(help="The work pool whose runs it takes (of fulfill's flows only).")
    ] = "fulfill",
    limit: Annotated[
        int,
        typer.Option(
            min=1, help="Flow runs at a time: executor processes, ~150 MB each (and the pool's limit)."
        ),
    ] = 4,
    poll: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds between two timed looks at the pool (a run is also taken on its Prefect event, at once).",
        ),
    ] = 2.0,
) -> None:
    """Run fulfill's flow runs in warm executor processes (a Prefect worker, type fulfill-warm)."""
    import anyio
    from prefect.settings import temporary_settings

    from deployments.worker import WarmWorker

    with temporary_settings(updates={"worker.query_seconds": poll}):
        try:
            anyio.run(WarmWorker(work_pool_name=pool, limit=limit).start)
        except KeyboardInterrupt:
            console.print("stopped")


#: The commands that run fulfill as a service: their flow runs' logs belong in Prefect's UI.
SERVICE_COMMANDS = frozenset({"up", "worker"})


def default_prefect_logging_level(argv: list[str]) -> str:
    """Prefect's logging level for ``fulfill <argv>`` when the environment sets none.

    A service (``up``, ``worker``) logs at INFO: every flow and task run's logs reach Prefect's API,
    the per-run logs an operator reads in the UI, and the services' log files. In-process commands
    keep Prefect's console logging to errors that fulfill's own output does not already explain.
    """
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    return "INFO" if command in SERVICE_COMMANDS else "CRITICAL"


def main() -> None:
    """Console-script entry point.

    Prefect's logging level defaults by command (:func:`default_prefect_logging_level`; set
    ``PREFECT_LOGGING_LEVEL=INFO`` to see every flow and task run of an in-process command), and
    Prefect's telemetry stays off unless the environment says otherwise. (Set here, not at import:
    importing the module changes nothing.)
    """
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", default_prefect_logging_level(sys.argv[1:]))
    app()


if __name__ == "__main__":
    main()
