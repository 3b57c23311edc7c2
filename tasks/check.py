"""A tenant's connector self-check: what each action type relies on in its org/portal, and the guarantee.

``fulfill tenant check`` (and ``tenant set``) and the ``connector-health`` flow call :func:`check_tenant`:
for every family of action types (CRM, calendar, internal) the tenant's connector is resolved exactly as
an execution resolves it and asked to :meth:`~connectors.base.Connector.check` the live org/portal
(read-only). A family whose connector cannot be built or reached is reported with the error's class and
its seller-safe sentence; every action type of that family is then not enabled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from connectors.base import ConnectorCheck, Guarantee, Precondition
from connectors.errors import ConnectorError
from connectors.registry import ACTION_FAMILY
from fulfill.db import get_engine, transaction
from fulfill.tenants import get_tenant
from tasks.resolve import resolve_connector

FAMILIES = ("crm", "calendar", "internal")


@dataclass(frozen=True)
class FamilyCheck:
    """One family's result: the connector's check, or why there is none."""

    family: str
    system: str | None
    guarantees: dict[str, Guarantee]
    preconditions: tuple[Precondition, ...] = ()
    error_class: str | None = None
    error: str | None = None
    fixes: dict[str, list[str]] = field(default_factory=dict)
    configured: bool = True

    @property
    def ok(self) -> bool:
        """Reached, and every action type of the family enabled."""
        return self.error_class is None and all(g is not Guarantee.DISABLED for g in self.guarantees.values())

    @property
    def disabled(self) -> list[str]:
        """The action types whose intents end NOT_CONFIGURED."""
        return [a for a, g in self.guarantees.items() if g is Guarantee.DISABLED]


def _family_types(family: str) -> list[str]:
    return sorted(a for a, f in ACTION_FAMILY.items() if f == family)


def check_family(tenant_id: str, family: str) -> FamilyCheck:
    """Check one family of a tenant's action types against its configured connector (read-only)."""
    types = _family_types(family)
    try:
        connector = resolve_connector(tenant_id, types[0])
        report: ConnectorCheck = connector.check()
    except Exception as error:  # a block that does not load, an unreachable org: not enabled, by class
        return FamilyCheck(
            family=family,
            system=None,
            guarantees=dict.fromkeys(types, Guarantee.DISABLED),
            error_class=type(error).__name__[:64],
            error=error.seller_message if isinstance(error, ConnectorError) else "the check could not run",
        )
    guarantees = {a: report.guarantees.get(a, Guarantee.DISABLED) for a in types}
    fixes = {a: report.problems(a) for a in types if guarantees[a] is Guarantee.DISABLED}
    return FamilyCheck(
        family=family,
        system=report.system,
        guarantees=guarantees,
        preconditions=report.preconditions,
        fixes=fixes,
    )


def check_tenant(tenant_id: str, families: tuple[str, ...] = FAMILIES) -> list[FamilyCheck]:
    """Check every family of action types for ``tenant_id``.

    A CRM or calendar family the tenant has no provider for is reported ``configured=False`` (its
    action types end NOT_CONFIGURED) without contacting anything.
    """
    with transaction(get_engine()) as session:
        tenant = get_tenant(session, tenant_id)
        config = {} if tenant is None else tenant.model_dump()
    checks: list[FamilyCheck] = []
    for family in families:
        if family != "internal" and not config.get(f"{family}_provider"):
            checks.append(
                FamilyCheck(
                    family=family,
                    system=None,
                    guarantees=dict.fromkeys(_family_types(family), Guarantee.DISABLED),
                    error_class="NotConfigured",
                    error=f"no {family} provider: fulfill tenant set {tenant_id} --{family} PROVIDER "
                    f"--{family}-block BLOCK",
                    configured=False,
                )
            )
            continue
        checks.append(check_family(tenant_id, family))
    return checks
