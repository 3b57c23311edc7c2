"""The connector interface every adapter implements.

A connector turns one *step* of an approved action into one idempotent external write.
It is stateless: everything it needs arrives in the :class:`StepCall` (one versioned input
object, Temporal-style) and in the injected ``httpx.Client`` / storage handles it was built
with. It never decides whether an action should happen; it only fulfils it.

Lifecycle of a step, as driven by ``flows/execute_intent.py``::

    steps(action_type, params)   -> ["create_opportunity", "create_follow_up_task"]
    validate(action_type, params)   pure, no I/O; raises ValidationRejected naming the field
                                    (validate_contract's schema check, then the provider's own rules)
    execute(call)                -> StepResult  (retried on TransientError with the SAME key)
    lookup(call)                 -> StepResult | None   (did an earlier attempt commit?)
    compensate(call, result)        undo a committed step (delete / restore / void)
    describe(call)               -> [ProviderRequest]  the requests execute(call) sends, none sent
                                    (``fulfill plan``); built by the same code execute() uses
    check()                      -> ConnectorCheck  reads (never writes) the live org/portal: every
                                    precondition each action type relies on, and the guarantee that
                                    results (``fulfill tenant check``, ``tenant set``, connector-health)

A connector sends what it describes: each request is a :class:`ProviderRequest` built once, by the
same method, whether it is then sent (``connectors.http.send``) or only shown.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, get_args

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from connectors.errors import ValidationRejected
from fulfill.intent import PARAMETER_MODELS
from fulfill.steps import ExternalRef, StepCall, StepResult, idempotency_key

__all__ = [
    "Connector",
    "ConnectorCheck",
    "Guarantee",
    "Precondition",
    "ExternalRef",
    "ProviderRequest",
    "StepCall",
    "StepResult",
    "idempotency_key",
    "placeholder_ref",
    "validate_contract",
]


@dataclass(frozen=True)
class ProviderRequest:
    """One request a step sends to its provider (or, for internal steps, one write of its own).

    Built by a connector once and then either sent (``connectors.http.send``) or shown (``describe``).

    Args:
        method: The HTTP method (``INSERT``/``PUT`` for internal writes).
        url: The absolute URL, without the query.
        purpose: What the request is for, e.g. ``"upsert Task by external id"``; names it in errors.
        write: Whether it changes something at the provider.
        params: The query parameters.
        body: The JSON body, if any.
        subject: The user the request acts as (Google's impersonated user), if it matters.
        condition: When it is sent, if not always, e.g. ``"only if the field still holds previous_value"``.
        note: What a reader of a dry run should know about it.
    """

    method: str
    url: str
    purpose: str
    write: bool
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    subject: str | None = None
    condition: str = ""
    note: str = ""


class Guarantee(StrEnum):
    """What a tenant gets for one action type, given what its org/portal offers (``fulfill tenant check``)."""

    #: The provider refuses a second object with the same key (External ID upsert, unique property,
    #: client-chosen event id, our own unique row): a retry can never duplicate.
    PROVIDER_KEY = "exactly once by a provider key"
    #: No provider-enforced key: fulfill searches for its key before creating, within the provider's
    #: indexing window; a lost response the search cannot settle ends AMBIGUOUS_OUTCOME for a person.
    LOOKUP_WINDOW = "exactly once by lookup within a window"
    #: Nothing can find an earlier attempt: a lost response always needs a person.
    NEEDS_PERSON = "needs a person on a lost response"
    #: A precondition failed: intents of this action type end NOT_CONFIGURED.
    DISABLED = "not enabled"


@dataclass(frozen=True)
class Precondition:
    """One thing an action type relies on in the tenant's org/portal, as found by :meth:`Connector.check`.

    Args:
        name: What was checked, e.g. ``"Task.Fulfill_Intent_Key__c is an External ID and Unique"``.
        ok: Whether it holds.
        action_types: The action types that rely on it.
        fix: When it does not hold, the sentence telling an operator what to set up (never a secret,
            never a provider's raw body).
        required: Whether the action types are disabled when it fails (else it only lowers the guarantee).
    """

    name: str
    ok: bool
    action_types: frozenset[str]
    fix: str = ""
    required: bool = True


@dataclass(frozen=True)
class ConnectorCheck:
    """The result of :meth:`Connector.check`: preconditions and the guarantee per action type."""

    system: str
    preconditions: tuple[Precondition, ...]
    guarantees: Mapping[str, Guarantee]

    def enabled(self, action_type: str) -> bool:
        """Whether intents of ``action_type`` may run for this tenant."""
        return self.guarantees.get(action_type, Guarantee.DISABLED) is not Guarantee.DISABLED

    def problems(self, action_type: str) -> list[str]:
        """The ``fix`` sentences of the failed required preconditions ``action_type`` relies on."""
        return [
            p.fix for p in self.preconditions if not p.ok and p.required and action_type in p.action_types
        ]


def placeholder_ref(system: str, step: str) -> ExternalRef:
    """The stand-in for the object ``step`` creates, for describing later steps before it exists.

    Args:
        system: The connector's system.
        step: The step that creates the object, e.g. ``create_opportunity``.

    Returns:
        A reference whose id reads ``{id from create_opportunity}``.
    """
    return ExternalRef(system=system, object=step, id=f"{{id from {step}}}")


class Connector(ABC):
    """Base class of every adapter. Subclasses are stateless apart from injected clients."""

    system: ClassVar[str]
    action_types: ClassVar[frozenset[str]]

    def supports(self, action_type: str) -> bool:
        """Whether this connector fulfils ``action_type``."""
        return action_type in self.action_types

    @abstractmethod
    def steps(self, action_type: str, params: Mapping[str, Any]) -> list[str]:
        """The ordered step names for this action (its plan). Pure.

        Args:
            action_type: One of the contract's action types that this connector supports.
            params: The intent's validated parameters.

        Returns:
            Step names; each becomes one checkpoint and one idempotency key.
        """

    @abstractmethod
    def validate(self, action_type: str, params: Mapping[str, Any]) -> None:
        """The contract schema (:func:`validate_contract`) and the provider's checks beyond it. Pure, no I/O.

        Raises:
            ValidationRejected: naming the offending field.
        """

    @abstractmethod
    def execute(self, call: StepCall) -> StepResult:
        """Perform one step idempotently: the same ``call.idempotency_key`` never makes two objects.

        Raises:
            ConnectorError: classified transient or permanent.
        """

    @abstractmethod
    def lookup(self, call: StepCall) -> StepResult | None:
        """Find the effect of an earlier attempt of ``call`` (for reconciliation after a lost response)."""

    @abstractmethod
    def compensate(self, call: StepCall, result: StepResult) -> None:
        """Undo a committed step. Must be idempotent: undoing twice is not an error."""

    @abstractmethod
    def describe(self, call: StepCall) -> list[ProviderRequest]:
        """The requests :meth:`execute` sends for ``call``, in order, without sending any. No I/O.

        Requests that depend on an answer (a write after a read) carry their ``condition``. Objects of
        earlier steps are taken from ``call.prior``: pass :meth:`planned_ref` of those steps.

        Raises:
            ValidationRejected: the call is not one of this connector's steps.
        """

    def check(self) -> ConnectorCheck:
        """Read the live org/portal and report every precondition each action type relies on. Never writes.

        The default suits a connector whose keys are its own (nothing to check): every action type
        exactly once by a provider key. Provider connectors override it; what they learn (field
        definitions, currencies, object types) is cached on the instance and used by ``execute`` so
        an action type whose preconditions fail raises ``NotConfigured`` naming what to set up,
        before any write.

        Raises:
            ConnectorError: the org/portal could not be read (authentication, network, …).
        """
        return ConnectorCheck(
            system=self.system,
            preconditions=(),
            guarantees=dict.fromkeys(sorted(self.action_types), Guarantee.PROVIDER_KEY),
        )

    def planned_ref(self, call: StepCall) -> ExternalRef:
        """The object ``call`` will create, as far as it is known before it exists (for :meth:`describe`).

        Returns:
            A :func:`placeholder_ref` unless the connector derives the id from the key alone.
        """
        return placeholder_ref(self.system, call.step)


def validate_contract(action_type: str, params: Mapping[str, Any]) -> None:
    """Check ``params`` against the contract's parameter model of ``action_type``. Pure, no I/O.

    The contract (``fulfill.intent.PARAMETER_MODELS``) is the shared rule set: required fields,
    types, lengths, dates, literals and unknown keys. Connectors call this first and then add only
    what their provider needs beyond it.

    Args:
        action_type: A contract action type, e.g. ``crm.create_task``.
        params: The intent's parameters.

    Raises:
        ValidationRejected: ``parameters.<field>: <what is wrong>`` for the first problem, with a
            dotted path (``parameters.follow_up_task.subject``) and list items as
            ``parameters.attendees[1]``.
    """
    model = PARAMETER_MODELS.get(action_type)
    if model is None:
        raise ValidationRejected(f"action_type: {action_type!r} is not a contract action type")
    try:
        model.model_validate(dict(params))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = first["loc"]
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            # The last part is the unknown key itself, which no model field describes.
            path = _join(_field_path(model, loc[:-1]), loc[-1]) if loc else ""
            message = "unknown parameter"
        else:
            path = _field_path(model, loc)
            if first["type"] == "value_error" and ": " in message:
                # A model validator names its field in the message: "end: must be after start".
                field, _, rest = message.partition(": ")
                if _FIELD_NAME.fullmatch(field):
                    path = _join(path, field)
                    message = rest
        where = f"parameters.{path}" if path else "parameters"
        raise ValidationRejected(f"{where}: {message}") from None


_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _field_path(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """The parameter path of a pydantic error location, without union member tags such as ``str``."""
    path = ""
    fields: dict[str, FieldInfo] | None = model.model_fields
    for part in loc:
        if isinstance(part, str):
            if fields is None or part not in fields:
                break  # a tag naming which member of a union failed, not a field
            fields = _nested_fields(fields[part].annotation)
        path = _join(path, part)
    return path


def _join(path: str, part: int | str) -> str:
    """Extend a parameter path: ``a`` + ``b`` is ``a.b``; ``a`` + ``1`` is ``a[1]``."""
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


def _nested_fields(annotation: Any) -> dict[str, FieldInfo] | None:
    """The fields of the model inside ``annotation`` (``Model | None``, ``list[Model]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.model_fields
    for arg in get_args(annotation):
        fields = _nested_fields(arg)
        if fields is not None:
            return fields
    return None
