"""HubSpot connector: CRM tasks, deals (the contract's opportunities) and single-field updates.

Plans (one step = one idempotent external write) and the contract checks are shared with every CRM
(:class:`connectors.crm.CrmConnector`)::

    crm.create_task         -> ["create_task"]
    crm.update_field        -> ["update_field"]
    crm.create_opportunity  -> ["create_opportunity"] (+ ["create_follow_up_task"] with follow_up_task)

On top of the contract, validation checks what HubSpot accepts: numeric record ids, ``related_to``
objects that map to a HubSpot object type, property internal names (and never the idempotency key
property itself) and the 100-character limit of a deal stage.

**What the portal offers decides the strategy** (:meth:`HubSpotConnector.check`, cached on the
instance; the first ``execute`` of an instance runs it). Every task and deal we create carries the
step's idempotency key in a custom property (the block's ``intent_key_property``, default
``fulfill_intent_key``). Its definition, ``GET /crm/v3/properties/{objectType}/{name}``
(https://developers.hubspot.com/docs/api-reference/crm-properties-v3/guide), says per object type
whether HubSpot enforces it (``hasUniqueValue``). HubSpot allows unique-value properties on
companies, contacts, deals, tickets and custom objects only — never on tasks
(https://developers.hubspot.com/docs/api-reference/crm-properties-v3/guide "unique identifier
properties") — so tasks always take the second strategy:

* :attr:`KeyStrategy.UNIQUE` (``Guarantee.PROVIDER_KEY``): create; HubSpot refuses a second record
  with the same value, and a refused create (409, or 400 as HubSpot reports some duplicates) is read
  back with ``GET /crm/v3/objects/{type}/{key}?idProperty={property}`` ("retrieve records by a
  unique identifier property" — valid for unique properties only; HubSpot answers 400 otherwise).
* :attr:`KeyStrategy.SEARCH` (``Guarantee.LOOKUP_WINDOW``): search before create
  (``POST /crm/v3/objects/{type}/search``, filter ``EQ`` on the key property;
  https://developers.hubspot.com/docs/api-reference/search/guide). The search index lags writes by
  a few seconds, so a miss is trusted only where no earlier attempt of the step may have committed.
  The connector remembers, per process, every create it sent (:data:`_ATTEMPTS`, kept across
  connector instances): a record id it was answered with is read back by id (consistent, no index);
  a create whose answer was lost (read timeout, 500/502/504) makes the next attempt wait out the
  block's ``search_settle_seconds`` from that send (it raises :class:`OutcomeUnknown` with
  ``retry_after``, so the flow waits keeping its lease) and search again. A hit is reused; a miss
  after the window raises :class:`OutcomeUnsettled` — the execution ends ``AMBIGUOUS_OUTCOME`` with a
  person flagged, and the create is never sent a second time in that run. An attempt that is not
  the step's first (``StepCall.attempt``, counted in the database) with nothing remembered here —
  the earlier one ran in another process: a worker that died mid-call, a rerun elsewhere — first
  waits one full indexing window, then searches; a miss then means the earlier attempt left nothing.

Associations travel in the create body (``associations: [{to: {id}, types: [{associationCategory:
"HUBSPOT_DEFINED", associationTypeId}]}]``), so record and association are one write
(https://developers.hubspot.com/docs/api-reference/latest/crm/activities/tasks/guide). Type ids:
task→company 192, task→deal 216, task→contact 204, deal→company (primary) 5.

``update_field`` maps the contract's objects to HubSpot object types: Account→companies,
Opportunity→deals, Contact→contacts and Lead→leads (HubSpot's Leads object, objectTypeId 0-136,
https://developers.hubspot.com/docs/api-reference/crm-leads-v3/guide; the ``field`` is a HubSpot
internal property name). It reads the property first (``previous_value`` guard and the value kept
for compensation), then ``PATCH /crm/v3/objects/{type}/{id}``. A task cannot be related to a Lead:
HubSpot documents no HUBSPOT_DEFINED task→lead association type for the create body, so such a
``crm.create_task`` is refused before any call (relate it to the lead's contact or company).

A deal's ``currency`` must be one of the portal's currencies (``companyCurrency`` and
``additionalCurrencies`` of ``GET /account-info/v3/details``,
https://developers.hubspot.com/docs/api-reference/latest/account/account-information/get-account-details),
else the intent is refused (``VALIDATION_FAILED``) before any write.

Compensation archives (``DELETE /crm/v3/objects/{type}/{id}``, 204; 404 = already gone) or
restores the previous value. Record links are ``{app_url}/contacts/{portal_id}/record/{objectTypeId}/{id}``
(companies 0-2, deals 0-3, contacts 0-1, leads 0-136); a task has no page of its own, so its link
opens the record it is attached to.

Errors follow HubSpot's JSON shape ``{"status": "error", "message", "correlationId", "category"}``;
429 carries ``Retry-After`` and a ``policyName`` (``DAILY`` or the ten-secondly burst policy)
(https://developers.hubspot.com/docs/api/usage-details). The last ``X-HubSpot-RateLimit-*``
headers seen are kept on :attr:`HubSpotConnector.rate_limit`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from enum import StrEnum
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from blocks.hubspot import HubSpotCredentials
from connectors.base import (
    ConnectorCheck,
    ExternalRef,
    Guarantee,
    Precondition,
    ProviderRequest,
    StepCall,
    StepResult,
)
from connectors.crm import (
    CREATE_OPPORTUNITY,
    CREATE_TASK,
    STEP_CREATE_FOLLOW_UP_TASK,
    STEP_CREATE_OPPORTUNITY,
    STEP_UPDATE_FIELD,
    UPDATE_FIELD,
    CrmConnector,
)
from connectors.errors import (
    AuthenticationFailed,
    Conflict,
    ConnectorError,
    NotConfigured,
    OutcomeUnknown,
    OutcomeUnsettled,
    ProviderUnavailable,
    RateLimitedError,
    StalePrecondition,
    ValidationRejected,
)
from connectors.http import ProviderClient, error_class_for_status, json_object, json_or_none, retry_after

# The contract's CRM objects -> HubSpot object type (plural path name), singular name, objectTypeId.
OBJECT_TYPES: dict[str, str] = {
    "Account": "companies",
    "Opportunity": "deals",
    "Contact": "contacts",
    "Lead": "leads",
}
SINGULAR: dict[str, str] = {
    "companies": "company",
    "deals": "deal",
    "contacts": "contact",
    "leads": "lead",
    "tasks": "task",
}
OBJECT_TYPE_IDS: dict[str, str] = {
    "contacts": "0-1",
    "companies": "0-2",
    "deals": "0-3",
    "tasks": "0-27",
    "leads": "0-136",
}
# HUBSPOT_DEFINED association type ids from a new task / deal to an existing record. HubSpot documents
# none from a task to a lead for the create body, so a task related to a Lead is refused (module doc).
TASK_ASSOCIATION: dict[str, int] = {"companies": 192, "deals": 216, "contacts": 204}
DEAL_TO_COMPANY_PRIMARY = 5
PRIORITIES: dict[str, str] = {"Low": "LOW", "Normal": "MEDIUM", "High": "HIGH"}
# Dates become noon UTC so the day reads the same in every timezone from UTC-11 to UTC+11.
DUE_TIME = "T12:00:00Z"
RATE_LIMIT_HEADER_PREFIX = "x-hubspot-ratelimit-"
# A deal stage is a pipeline stage id; longer values are refused before any call (the contract sets no limit).
STAGE_MAX = 100
# A 429 without Retry-After: HubSpot's burst limit is a 10-second rolling window ("TEN_SECONDLY_ROLLING").
BURST_WINDOW_SECONDS = 10.0
# A 429 with policyName DAILY: the quota resets at midnight in the account's (unknown) time zone, so
# only a full day is surely after the reset (see ``_raise_for_status``).
DAILY_RESET_WAIT_SECONDS = 86400.0
#: The object types whose records fulfill creates, and those ``crm.update_field`` may change.
CREATED_TYPES = ("tasks", "deals")
UPDATED_TYPES = ("companies", "deals", "contacts", "leads")
#: How many search hits are asked for: one is expected; a second means duplicates exist already.
SEARCH_LIMIT = 10
#: How long this process remembers a create it sent (only the first ``search_settle_seconds`` matter
#: for a record id; a lost answer is remembered until settled, a person was flagged, or this passes).
ATTEMPT_MEMORY_SECONDS = 3600.0
#: Statuses after which a create may have committed at HubSpot although it answered an error.
MAY_HAVE_COMMITTED = frozenset({500, 502, 504})

_NUMERIC_ID = re.compile(r"^[0-9]{1,30}$")
_PROPERTY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class KeyStrategy(StrEnum):
    """How creates of one object type are kept to one record per idempotency key (module doc)."""

    #: The key property has ``hasUniqueValue``: HubSpot refuses a duplicate; read back by ``idProperty``.
    UNIQUE = "unique-value key property"
    #: No uniqueness (tasks always): search for the key before creating, within the indexing window.
    SEARCH = "search before create"


GUARANTEE_OF: dict[KeyStrategy, Guarantee] = {
    KeyStrategy.UNIQUE: Guarantee.PROVIDER_KEY,
    KeyStrategy.SEARCH: Guarantee.LOOKUP_WINDOW,
}


@dataclass(frozen=True)
class PortalFacts:
    """What :meth:`HubSpotConnector.check` learned about the portal, cached per connector instance.

    Args:
        check: The check's preconditions and guarantees.
        strategies: Per created object type whose key property exists, how creates are kept unique.
        currencies: The portal's currencies (company currency first), or ``None`` when unreadable.
        readable: The object types ``crm.update_field`` can read.
    """

    check: ConnectorCheck
    strategies: Mapping[str, KeyStrategy]
    currencies: tuple[str, ...] | None
    readable: frozenset[str]


@dataclass
class _Attempt:
    """What this process knows of the creates it sent for one key (module doc, SEARCH strategy)."""

    lost_at: float | None = None
    record_id: str | None = None
    #: Nothing of an earlier attempt can be pending: it was refused or never sent here, or an attempt of
    #: another process was given one indexing window.
    waited: bool = False
    at: float = dataclass_field(default_factory=time.monotonic)


_ATTEMPTS: dict[tuple[str, ...], _Attempt] = {}
_ATTEMPTS_LOCK = threading.Lock()


def forget_attempts() -> None:
    """Forget every create this process remembers (tests; each starts from a fresh portal)."""
    with _ATTEMPTS_LOCK:
        _ATTEMPTS.clear()


class HubSpotConnector(CrmConnector):
    """Fulfils CRM actions in one tenant's HubSpot portal.

    Args:
        client: The block's ``get_client()``, or any client (tests pass one with a mock transport): when it
            has no auth of its own, the block's ``auth()`` is used. URLs are absolute, built from the
            credentials block, so the client's ``base_url`` is not used.
        credentials: The tenant's :class:`HubSpotCredentials` block.
        clock: Seconds since the epoch, injectable for token-expiry tests, task timestamps and the
            search settle window.
        sleep: How :meth:`lookup` waits out the search settle window (tests pass a fake).
        facts: What :meth:`check` learned, when it is already known (tests, a dry run); else the first
            ``execute`` runs the check.
    """

    system: ClassVar[str] = "hubspot"
    provider: ClassVar[str] = "HubSpot"

    def __init__(
        self,
        client: httpx.Client,
        credentials: HubSpotCredentials,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        facts: PortalFacts | None = None,
    ) -> None:
        self._http = ProviderClient(client, credentials, provider=self.provider, clock=clock)
        self._credentials = credentials
        self._clock = clock
        self._sleep = sleep
        self._facts = facts
        self.rate_limit: dict[str, str] = {}
        """The ``X-HubSpot-RateLimit-*`` headers of the last HubSpot answer that carried them."""

    # -- validation beyond the contract -----------------------------------------------------
    def _validate_provider(self, action_type: str, params: Mapping[str, Any]) -> None:
        """What HubSpot accepts beyond the contract: numeric ids, known objects, property names.

        Raises:
            ValidationRejected: naming the field, e.g. ``parameters.record_id: …``.
        """
        if action_type == CREATE_TASK:
            related = params.get("related_to")
            if related is None:
                return
            if related["object"] not in OBJECT_TYPES:
                raise ValidationRejected(
                    "parameters.related_to.object: must be one of Account, Opportunity, Contact, Lead"
                )
            if OBJECT_TYPES[related["object"]] not in TASK_ASSOCIATION:
                raise ValidationRejected(
                    "parameters.related_to.object: a HubSpot task cannot be attached to a Lead "
                    "(HubSpot keeps leads as their own object); relate it to the lead's Contact or Account"
                )
            _check_numeric_id(related["id"], "parameters.related_to.id")
        elif action_type == UPDATE_FIELD:
            _check_numeric_id(params["record_id"], "parameters.record_id")
            field = params["field"]
            if not _PROPERTY_NAME.fullmatch(field):
                raise ValidationRejected("parameters.field: must be a HubSpot property internal name")
            if field == self._credentials.intent_key_property:
                raise ValidationRejected("parameters.field: the idempotency key property cannot be set")
        elif len(params["stage"]) > STAGE_MAX:
            raise ValidationRejected(f"parameters.stage: at most {STAGE_MAX} characters")

    # -- the portal self-check ---------------------------------------------------------------
    def check(self) -> ConnectorCheck:
        """Read (never write) what each action type relies on; cache it for :meth:`execute`.

        * ``{type}.{key property}`` exists on tasks and deals (required) and whether it has unique
          values (``hasUniqueValue``: :attr:`KeyStrategy.UNIQUE`, else :attr:`KeyStrategy.SEARCH`);
        * the portal's currencies (``GET /account-info/v3/details``), for deals with a currency;
        * companies, deals, contacts and leads can be read (``GET /crm/v3/objects/{type}?limit=1``),
          for ``crm.update_field``.

        Raises:
            ConnectorError: the portal could not be read at all (authentication, network, 5xx, 429).
        """
        key = self._credentials.intent_key_property
        preconditions: list[Precondition] = []
        strategies: dict[str, KeyStrategy] = {}
        users = {
            "tasks": frozenset({CREATE_TASK, CREATE_OPPORTUNITY}),
            "deals": frozenset({CREATE_OPPORTUNITY}),
        }
        for object_type in CREATED_TYPES:
            singular = SINGULAR[object_type]
            response = self._send(self._definition_request(object_type, key))
            found = response.status_code == 200
            if not found:
                _raise_unless_missing(response)
            definition = _json(response) if found else {}
            preconditions.append(
                Precondition(
                    name=f"the {object_type} property {key} exists",
                    ok=found,
                    action_types=users[object_type],
                    fix=_missing_property_fix(response.status_code, object_type, key),
                )
            )
            if not found:
                continue
            unique = definition.get("hasUniqueValue") is True
            strategies[object_type] = KeyStrategy.UNIQUE if unique else KeyStrategy.SEARCH
            preconditions.append(
                Precondition(
                    name=f"the {object_type} property {key} requires unique values",
                    ok=unique,
                    action_types=users[object_type],
                    fix=(
                        f"HubSpot allows no unique-value property on tasks: each {singular} create searches "
                        "for its key first, and a lost answer the search cannot settle needs a person."
                        if object_type == "tasks"
                        else f"Turn on 'Require unique values' for the {object_type} property {key} so "
                        f"HubSpot itself refuses a second {singular} with the same key."
                    ),
                    required=False,
                )
            )
        currencies = self._read_currencies()
        preconditions.append(
            Precondition(
                name="the portal's currencies can be read (account details)",
                ok=currencies is not None,
                action_types=frozenset({CREATE_OPPORTUNITY}),
                fix="Let the HubSpot app read the account details (GET /account-info/v3/details); until "
                "then opportunities with a currency are refused.",
                required=False,
            )
        )
        readable: set[str] = set()
        for object_type in UPDATED_TYPES:
            response = self._send(self._list_request(object_type))
            if response.status_code == 200:
                readable.add(object_type)
            else:
                _raise_unless_missing(response)
            preconditions.append(
                Precondition(
                    name=f"{object_type} records can be read",
                    ok=response.status_code == 200,
                    action_types=frozenset({UPDATE_FIELD}),
                    fix=_unreadable_fix(response.status_code, object_type),
                    required=False,
                )
            )
        guarantees: dict[str, Guarantee] = {}
        task = strategies.get("tasks")
        deal = strategies.get("deals")
        guarantees[CREATE_TASK] = Guarantee.DISABLED if task is None else GUARANTEE_OF[task]
        if task is None or deal is None:
            guarantees[CREATE_OPPORTUNITY] = Guarantee.DISABLED
        elif KeyStrategy.SEARCH in (task, deal):
            guarantees[CREATE_OPPORTUNITY] = Guarantee.LOOKUP_WINDOW
        else:
            guarantees[CREATE_OPPORTUNITY] = Guarantee.PROVIDER_KEY
        # An update sets a value: a retry reads the field first and finds it set (no second effect).
        guarantees[UPDATE_FIELD] = Guarantee.PROVIDER_KEY if readable else Guarantee.DISABLED
        result = ConnectorCheck(system=self.system, preconditions=tuple(preconditions), guarantees=guarantees)
        self._facts = PortalFacts(
            check=result, strategies=strategies, currencies=currencies, readable=frozenset(readable)
        )
        return result

    def portal_facts(self) -> PortalFacts:
        """What :meth:`check` learned, running it once per instance when it has not run yet."""
        if self._facts is None:
            self.check()
        assert self._facts is not None
        return self._facts

    def _require_enabled(self, call: StepCall) -> PortalFacts:
        """The portal's facts; raises NotConfigured naming what to set up before any write."""
        facts = self.portal_facts()
        if not facts.check.enabled(call.action_type):
            fixes = facts.check.problems(call.action_type) or [
                f"None of the objects {call.action_type} needs can be read in this HubSpot portal."
            ]
            raise NotConfigured(
                f"{call.action_type} is not enabled for this HubSpot portal: " + " ".join(fixes),
                seller_message="This action cannot run until HubSpot is set up for it: " + " ".join(fixes),
            )
        if call.step == STEP_UPDATE_FIELD:
            object_type = OBJECT_TYPES[str(call.params["object"])]
            if object_type not in facts.readable:
                fix = _unreadable_fix(403, object_type)
                raise NotConfigured(
                    f"{object_type} cannot be read in this HubSpot portal: {fix}",
                    seller_message=f"This action cannot run until HubSpot is set up for it: {fix}",
                )
        return facts

    def _account_request(self) -> ProviderRequest:
        # https://developers.hubspot.com/docs/api-reference/latest/account/account-information/get-account-details
        return ProviderRequest(
            "GET", f"{self._base()}/account-info/v3/details", "read the account's currencies", False
        )

    def _check_requests(self) -> list[ProviderRequest]:
        """The reads :meth:`check` sends, in its order."""
        key = self._credentials.intent_key_property
        return [
            *(self._definition_request(t, key) for t in CREATED_TYPES),
            self._account_request(),
            *(self._list_request(t) for t in UPDATED_TYPES),
        ]

    def _read_currencies(self) -> tuple[str, ...] | None:
        response = self._send(self._account_request())
        if response.status_code != 200:
            _raise_unless_missing(response)
            return None
        body = _json(response)
        codes = [body.get("companyCurrency"), *(body.get("additionalCurrencies") or [])]
        found = tuple(dict.fromkeys(c for c in codes if isinstance(c, str) and _CURRENCY.fullmatch(c)))
        return found or None

    def _check_currency(self, call: StepCall, facts: PortalFacts) -> None:
        currency = call.params.get("currency")
        if not currency:
            return
        if facts.currencies is None:
            raise ValidationRejected(
                "parameters.currency: the HubSpot portal's currencies could not be read, so no currency "
                "can be set (leave it empty for the company currency)"
            )
        if currency not in facts.currencies:
            raise ValidationRejected(
                f"parameters.currency: {currency} is not a currency of this HubSpot portal "
                f"(its currencies: {', '.join(facts.currencies)})"
            )

    # -- the steps -------------------------------------------------------------------------
    def execute(self, call: StepCall) -> StepResult:
        """Perform one step; a retried create returns the record of the first attempt (module doc).

        Raises:
            NotConfigured: the portal lacks what this action type needs (before any write).
            OutcomeUnknown: an earlier attempt's answer was lost and the search index may not show
                its record yet; ``retry_after`` says when the search can be trusted.
            OutcomeUnsettled: an earlier attempt's answer was lost and the search does not show its
                record after the window: a person must check (never a second create).
            ConnectorError: classified transient or permanent.
        """
        step = self._require_step(call)
        facts = self._require_enabled(call)
        if step == STEP_UPDATE_FIELD:
            return self._update_field(call)
        if step == STEP_CREATE_OPPORTUNITY:
            self._check_currency(call, facts)
        object_type = _created_type(step)
        create = self._create(call)
        if facts.strategies[object_type] is KeyStrategy.UNIQUE:
            return self._create_unique(call, object_type, create)
        return self._create_searching(call, object_type, create)

    def lookup(self, call: StepCall) -> StepResult | None:
        """Find the effect of an earlier attempt: the record holding the key, or the field already set.

        With the SEARCH strategy, a miss within the settle window after a lost answer waits the window
        out (``sleep``) and searches once more.
        """
        step = self._require_step(call)
        if step == STEP_UPDATE_FIELD:
            object_type = OBJECT_TYPES[str(call.params["object"])]
            field = str(call.params["field"])
            current = self._read_property(object_type, str(call.params["record_id"]), field)
            if not _same(current, call.params.get("value")):
                return None
            return self._already_set(call)
        object_type = _created_type(step)
        self.portal_facts()
        if self._strategy(object_type) is KeyStrategy.UNIQUE:
            existing = self._get_by_key(object_type, call)
            return None if existing is None else self._created_result(call, existing, created=False)
        found = self._find_searching(call, object_type)
        if found is not None:
            return self._created_result(call, found, created=False)
        attempt = _recall(self._memory_key(object_type, call))
        if attempt is not None and attempt.lost_at is not None:
            left = attempt.lost_at + self._settle_seconds() - self._clock()
            if left > 0:
                self._sleep(left)
                found = self._find_searching(call, object_type)
                if found is not None:
                    return self._created_result(call, found, created=False)
        return None

    def compensate(self, call: StepCall, result: StepResult) -> None:
        """Archive the created record, or restore the value a field had before; twice is harmless.

        Raises:
            Conflict: the field changed again since our update, so restoring would clobber someone.
        """
        step = self._require_step(call)
        if step != STEP_UPDATE_FIELD:
            object_type = _created_type(step)
            # https://developers.hubspot.com/docs/api-reference/crm-objects-v3/guide (archive: 204)
            response = self._send(
                ProviderRequest(
                    "DELETE",
                    self._record_path(object_type, result.ref.id),
                    f"archive {SINGULAR[object_type]}",
                    True,
                )
            )
            if response.status_code != 404:
                _raise_for_status(response)
            return
        if not result.undo.get("restorable", False):
            return
        object_type = str(result.undo["object_type"])
        field = str(result.undo["field"])
        previous = result.undo.get("previous")
        current = self._read_property(object_type, result.ref.id, field)
        if _same(current, previous):
            return
        if not _same(current, result.undo.get("value")):
            raise Conflict(
                f"{field} changed again after the update; not restoring it", provider_code="CHANGED_SINCE"
            )
        _raise_for_status(self._send(self._patch(object_type, result.ref.id, {field: _to_hubspot(previous)})))

    def describe(self, call: StepCall) -> list[ProviderRequest]:
        """The requests of a create (a search first where the key is not unique) or of an update. No I/O.

        The strategy is the one :meth:`check` learned. Before any check (a fresh instance, as in a dry
        run) the list starts with the check's own reads, which the first ``execute`` sends once, and a
        create is described with its search (the strategy every task uses; a portal whose key property
        is unique skips it).
        """
        step = self._require_step(call)
        if self._facts is None:
            note = "once per connector: the portal self-check (cached for later steps)"
            return [replace(r, note=note) for r in self._check_requests()] + self._describe_step(call, step)
        return self._describe_step(call, step)

    def _describe_step(self, call: StepCall, step: str) -> list[ProviderRequest]:
        if step != STEP_UPDATE_FIELD:
            object_type = _created_type(step)
            singular = SINGULAR[object_type]
            create = self._create(call)
            if self._strategy(object_type) is KeyStrategy.UNIQUE:
                note = f"a refused create (400/409) reads back the {singular} holding the key"
                return [replace(create, note=note)]
            search = replace(
                self._search_request(object_type, call),
                note=f"HubSpot's search may lag a write by {self._settle_seconds():g} s (module doc)",
            )
            condition = (
                f"only if no {singular} holds the key (and no earlier attempt of this step lost its answer: "
                "then a person is flagged instead)"
            )
            return [search, replace(create, condition=condition)]
        params = call.params
        object_type = OBJECT_TYPES[str(params["object"])]
        record_id, field = str(params["record_id"]), str(params["field"])
        condition = "only if the record does not hold the value yet" + (
            " and still holds previous_value (else STALE_PRECONDITION)" if "previous_value" in params else ""
        )
        patch = self._patch(object_type, record_id, {field: _to_hubspot(params.get("value"))})
        return [self._read(object_type, record_id, field), replace(patch, condition=condition)]

    # -- creates: UNIQUE -------------------------------------------------------------------
    def _create_unique(self, call: StepCall, object_type: str, create: ProviderRequest) -> StepResult:
        response = self._send(create)
        if response.status_code in (400, 409):
            existing = self._get_by_key(object_type, call)
            if existing is not None:
                return self._created_result(call, existing, created=False)
            if response.status_code == 409:
                raise Conflict(
                    "HubSpot refused the create as a duplicate but no record holds this step's key",
                    status_code=409,
                    provider_code=_category(response),
                )
        _raise_for_status(response)
        return self._created_result(call, _json(response), created=True)

    # -- creates: SEARCH -------------------------------------------------------------------
    def _create_searching(self, call: StepCall, object_type: str, create: ProviderRequest) -> StepResult:
        memory = self._memory_key(object_type, call)
        if call.attempt > 1 and _recall(memory) is None:
            # An earlier attempt ran in another process (a worker that died, a rerun elsewhere): when it
            # sent its create is unknown here, so the index gets one full window before a miss counts.
            _remember(memory, _Attempt(waited=True))
            settle = self._settle_seconds()
            if settle > 0:
                raise OutcomeUnknown(
                    f"attempt {call.attempt} of this {SINGULAR[object_type]}: an earlier attempt ran in another "
                    f"process; searching after the {settle:g} s indexing window",
                    provider_code="SEARCH_NOT_SETTLED",
                    retry_after=settle,
                )
        found = self._find_searching(call, object_type)
        if found is not None:
            return self._created_result(call, found, created=False)
        attempt = _recall(memory)
        if attempt is not None and attempt.lost_at is not None:
            settle = self._settle_seconds()
            left = attempt.lost_at + settle - self._clock()
            singular = SINGULAR[object_type]
            if left > 0:
                raise OutcomeUnknown(
                    f"an earlier create of this {singular} lost its answer and HubSpot's search may not "
                    f"show it yet; searching again after the {settle:g} s indexing window",
                    provider_code="SEARCH_NOT_SETTLED",
                    retry_after=left,
                )
            _forget(memory)  # a person owns it now; a deliberate rerun searches afresh
            raise OutcomeUnsettled(
                f"an earlier create of this {singular} lost its answer and HubSpot's search does not show "
                f"it {settle:g} s later; it may still commit, so it is not created again",
                provider_code="SEARCH_UNSETTLED",
            )
        _remember(memory, _Attempt(lost_at=self._clock()))
        try:
            response = self._send(create)
        except OutcomeUnknown:
            raise  # the marker stays: the next attempt waits the index out
        except ConnectorError:
            _remember(memory, _Attempt(waited=True))  # never sent, or refused before HubSpot processed it
            raise
        if response.status_code >= 300:
            if response.status_code not in MAY_HAVE_COMMITTED:
                _remember(memory, _Attempt(waited=True))  # refused: this attempt left nothing
            _raise_for_status(response)
        record = _json(response)
        _remember(memory, _Attempt(record_id=str(record.get("id") or "") or None))
        return self._created_result(call, record, created=True)

    def _find_searching(self, call: StepCall, object_type: str) -> dict[str, Any] | None:
        """The record holding the key: by search, or by the id this process was answered with."""
        key_property = self._credentials.intent_key_property
        response = self._send(self._search_request(object_type, call))
        _raise_for_status(response)
        results = _json(response).get("results")
        hits = [
            r
            for r in (results if isinstance(results, list) else [])
            if isinstance(r, dict) and (r.get("properties") or {}).get(key_property) == call.idempotency_key
        ]
        memory = self._memory_key(object_type, call)
        if len(hits) > 1:
            ids = ", ".join(sorted(str(r.get("id")) for r in hits))
            raise Conflict(f"{len(hits)} HubSpot {object_type} hold this step's key: {ids}")
        if hits:
            _remember(memory, _Attempt(record_id=str(hits[0].get("id") or "") or None))
            return hits[0]
        attempt = _recall(memory)
        if attempt is None or attempt.record_id is None:
            return None
        # Answered with an id by an earlier attempt: a read by id does not wait for the search index.
        response = self._send(
            ProviderRequest(
                "GET",
                self._record_path(object_type, attempt.record_id),
                f"read {SINGULAR[object_type]}",
                False,
                params={"properties": _read_properties(object_type, key_property)},
            )
        )
        if response.status_code == 404:
            return None
        _raise_for_status(response)
        record = _json(response)
        return record if (record.get("properties") or {}).get(key_property) == call.idempotency_key else None

    def _search_request(self, object_type: str, call: StepCall) -> ProviderRequest:
        # https://developers.hubspot.com/docs/api-reference/search/guide (filter EQ on a property)
        key_property = self._credentials.intent_key_property
        return ProviderRequest(
            "POST",
            f"{self._objects_url(object_type)}/search",
            f"search {SINGULAR[object_type]} by key",
            False,
            body={
                "filterGroups": [
                    {
                        "filters": [
                            {"propertyName": key_property, "operator": "EQ", "value": call.idempotency_key}
                        ]
                    }
                ],
                "properties": _read_properties(object_type, key_property).split(","),
                "limit": SEARCH_LIMIT,
            },
        )

    def _memory_key(self, object_type: str, call: StepCall) -> tuple[str, ...]:
        return (
            self._base(),
            self._credentials.portal_id or "",
            self._credentials.intent_key_property,
            object_type,
            call.idempotency_key,
        )

    def _settle_seconds(self) -> float:
        return float(self._credentials.search_settle_seconds)

    def _strategy(self, object_type: str) -> KeyStrategy:
        """The learned strategy; SEARCH when nothing was learned yet (describe, lookup before a check)."""
        if self._facts is None:
            return KeyStrategy.SEARCH
        return self._facts.strategies.get(object_type, KeyStrategy.SEARCH)

    # -- update_field ----------------------------------------------------------------------
    def _update_field(self, call: StepCall) -> StepResult:
        params = call.params
        object_type = OBJECT_TYPES[str(params["object"])]
        record_id = str(params["record_id"])
        field = str(params["field"])
        value = params.get("value")
        current = self._read_property(object_type, record_id, field)
        if _same(current, value):
            # Already set: by an earlier attempt of this step whose answer was lost, or before we came.
            return self._already_set(call)
        if "previous_value" in params and not _same(current, params["previous_value"]):
            raise StalePrecondition(
                f"{field} on {SINGULAR[object_type]} {record_id} no longer holds the approved previous value",
                provider_code="PREVIOUS_VALUE_MISMATCH",
            )
        _raise_for_status(self._send(self._patch(object_type, record_id, {field: _to_hubspot(value)})))
        return self._update_result(call, previous=current, created=True)

    def _patch(self, object_type: str, record_id: str, properties: dict[str, str]) -> ProviderRequest:
        # https://developers.hubspot.com/docs/api-reference/crm-objects-v3/guide (update a record)
        return ProviderRequest(
            "PATCH",
            self._record_path(object_type, record_id),
            f"update {SINGULAR[object_type]}",
            True,
            body={"properties": properties},
        )

    def _read(self, object_type: str, record_id: str, field: str) -> ProviderRequest:
        return ProviderRequest(
            "GET",
            self._record_path(object_type, record_id),
            f"read {SINGULAR[object_type]}",
            False,
            params={"properties": field},
        )

    def _read_property(self, object_type: str, record_id: str, field: str) -> str | None:
        response = self._send(self._read(object_type, record_id, field))
        _raise_for_status(response)
        value = (_json(response).get("properties") or {}).get(field)
        return None if value is None else str(value)

    def _already_set(self, call: StepCall) -> StepResult:
        """The field already holds the value: restorable only to the approved ``previous_value``."""
        if "previous_value" in call.params:
            return self._update_result(call, previous=call.params["previous_value"], created=False)
        return self._update_result(call, previous=None, created=False, restorable=False)

    def _update_result(
        self, call: StepCall, *, previous: Any, created: bool, restorable: bool = True
    ) -> StepResult:
        params = call.params
        object_type = OBJECT_TYPES[str(params["object"])]
        record_id = str(params["record_id"])
        field = str(params["field"])
        value = params.get("value")
        shown = "empty" if value is None or value == "" else f"“{_to_hubspot(value)}”"
        return StepResult(
            ref=ExternalRef(
                system=self.system,
                object=SINGULAR[object_type],
                id=record_id,
                url=self._record_url(object_type, record_id),
            ),
            created=created,
            undo={
                "object_type": object_type,
                "field": field,
                "previous": previous if previous is None else _to_hubspot(previous),
                "value": _to_hubspot(value),
                "restorable": restorable,
            },
            summary=f"Set {field} on the HubSpot {SINGULAR[object_type]} {record_id} to {shown}.",
        )

    # -- creates ---------------------------------------------------------------------------
    def _create(self, call: StepCall) -> ProviderRequest:
        object_type, properties, associations = self._create_body(call)
        # https://developers.hubspot.com/docs/api-reference/crm-objects-v3/guide (create a record)
        return ProviderRequest(
            "POST",
            self._objects_url(object_type),
            f"create {SINGULAR[object_type]}",
            True,
            body={"properties": properties, "associations": associations},
        )

    def _create_body(self, call: StepCall) -> tuple[str, dict[str, str], list[dict[str, Any]]]:
        params = call.params
        key_property = self._credentials.intent_key_property
        company_id = _account_id(call)
        if call.step == STEP_CREATE_OPPORTUNITY:
            properties = {
                "dealname": str(params["name"]),
                "dealstage": str(params["stage"]),
                "pipeline": self._credentials.deal_pipeline,
                "closedate": f"{params['close_date']}{DUE_TIME}",
                key_property: call.idempotency_key,
            }
            if params.get("amount") is not None:
                properties["amount"] = _to_hubspot(params["amount"])
            if params.get("currency"):
                properties["deal_currency_code"] = str(params["currency"])
            return "deals", properties, [_association(company_id, DEAL_TO_COMPANY_PRIMARY)]
        if call.step == STEP_CREATE_FOLLOW_UP_TASK:
            follow_up = params["follow_up_task"]
            deal = call.prior.get(STEP_CREATE_OPPORTUNITY)
            if deal is None:
                raise ValidationRejected(
                    "prior.create_opportunity: the deal of this follow-up task is unknown"
                )
            properties = self._task_properties(
                call, str(follow_up["subject"]), follow_up.get("due_date"), None, "Normal"
            )
            associations = [
                _association(deal.id, TASK_ASSOCIATION["deals"]),
                _association(company_id, TASK_ASSOCIATION["companies"]),
            ]
            return "tasks", properties, associations
        target_type, target_id = self._task_target(call)
        properties = self._task_properties(
            call,
            str(params["subject"]),
            params.get("due_date"),
            params.get("description"),
            str(params.get("priority") or "Normal"),
        )
        return "tasks", properties, [_association(target_id, TASK_ASSOCIATION[target_type])]

    def _task_properties(
        self, call: StepCall, subject: str, due_date: Any, description: Any, priority: str
    ) -> dict[str, str]:
        # https://developers.hubspot.com/docs/api-reference/latest/crm/activities/tasks/guide (properties)
        timestamp = f"{due_date}{DUE_TIME}" if due_date else str(int(self._clock() * 1000))
        properties = {
            "hs_task_subject": subject,
            "hs_timestamp": timestamp,
            "hs_task_priority": PRIORITIES[priority],
            "hs_task_status": "NOT_STARTED",
            self._credentials.intent_key_property: call.idempotency_key,
        }
        if description:
            properties["hs_task_body"] = str(description)
        return properties

    def _task_target(self, call: StepCall) -> tuple[str, str]:
        related = call.params.get("related_to")
        if isinstance(related, Mapping):
            return OBJECT_TYPES[str(related["object"])], str(related["id"])
        return "companies", _account_id(call)

    def _get_by_key(self, object_type: str, call: StepCall) -> dict[str, Any] | None:
        # https://developers.hubspot.com/docs/api-reference/crm-objects-v3/guide
        # (retrieve a record by a unique property value with ?idProperty=)
        key_property = self._credentials.intent_key_property
        response = self._send(
            ProviderRequest(
                "GET",
                self._record_path(object_type, call.idempotency_key),
                f"read {SINGULAR[object_type]} by key",
                False,
                params={
                    "idProperty": key_property,
                    "properties": _read_properties(object_type, key_property),
                },
            )
        )
        if response.status_code == 404:
            return None
        _raise_for_status(response)
        record = _json(response)
        if (record.get("properties") or {}).get(key_property) != call.idempotency_key:
            raise Conflict("HubSpot returned a record that does not hold this step's key", status_code=200)
        return record

    def _created_result(self, call: StepCall, record: Mapping[str, Any], *, created: bool) -> StepResult:
        record_id = str(record.get("id") or "")
        if not record_id:
            raise ProviderUnavailable("HubSpot answered a create without a record id")
        step = call.step
        object_type = _created_type(step)
        if step == STEP_CREATE_OPPORTUNITY:
            name = str(call.params["name"])
            url = self._record_url("deals", record_id)
            summary = f"Created the deal “{name}” in HubSpot."
        elif step == STEP_CREATE_FOLLOW_UP_TASK:
            name = str(call.params["follow_up_task"]["subject"])
            deal = call.prior.get(STEP_CREATE_OPPORTUNITY)
            url = self._record_url("deals", deal.id) if deal is not None else None
            summary = f"Created the follow-up task “{name}” on the deal in HubSpot."
        else:
            name = str(call.params["subject"])
            target_type, target_id = self._task_target(call)
            url = self._record_url(target_type, target_id)
            summary = f"Created the task “{name}” in HubSpot."
        return StepResult(
            ref=ExternalRef(system=self.system, object=SINGULAR[object_type], id=record_id, url=url),
            created=created,
            undo={"object_type": object_type},
            summary=summary,
        )

    # -- portal reads (check) --------------------------------------------------------------
    def _definition_request(self, object_type: str, name: str) -> ProviderRequest:
        # https://developers.hubspot.com/docs/api-reference/crm-properties-v3/guide (read a property)
        return ProviderRequest(
            "GET",
            f"{self._base()}/crm/v3/properties/{object_type}/{quote(name, safe='')}",
            f"read the {SINGULAR[object_type]} property {name}",
            False,
        )

    def _list_request(self, object_type: str) -> ProviderRequest:
        # https://developers.hubspot.com/docs/api-reference/crm-objects-v3/guide (list records)
        return ProviderRequest(
            "GET",
            self._objects_url(object_type),
            f"read one {SINGULAR[object_type]}",
            False,
            params={"limit": "1", "properties": "hs_object_id"},
        )

    # -- URLs ------------------------------------------------------------------------------
    def _base(self) -> str:
        return self._credentials.api_base_url.rstrip("/")

    def _objects_url(self, object_type: str) -> str:
        return f"{self._base()}/crm/v3/objects/{object_type}"

    def _record_path(self, object_type: str, record_id: str) -> str:
        return f"{self._objects_url(object_type)}/{quote(record_id, safe='')}"

    def _record_url(self, object_type: str, record_id: str) -> str | None:
        portal = self._credentials.portal_id
        if not portal:
            return None
        app = self._credentials.app_url.rstrip("/")
        return f"{app}/contacts/{portal}/record/{OBJECT_TYPE_IDS[object_type]}/{record_id}"

    # -- HTTP ------------------------------------------------------------------------------
    def _send(self, request: ProviderRequest) -> httpx.Response:
        """Send through the block's auth; remember the rate-limit headers of the answer."""
        response = self._http.send(request)
        seen = {
            key: value
            for key, value in response.headers.items()
            if key.lower().startswith(RATE_LIMIT_HEADER_PREFIX)
        }
        if seen:
            self.rate_limit = seen
        return response


# -- helpers (module-private) -------------------------------------------------------------------
def _created_type(step: str) -> str:
    return "deals" if step == STEP_CREATE_OPPORTUNITY else "tasks"


def _read_properties(object_type: str, key_property: str) -> str:
    names = ["dealname", "dealstage"] if object_type == "deals" else ["hs_task_subject", "hs_timestamp"]
    return ",".join([*names, key_property])


def _account_id(call: StepCall) -> str:
    if not _NUMERIC_ID.fullmatch(call.account_id):
        raise ValidationRejected("account_id: a HubSpot company id is numeric")
    return call.account_id


def _association(to_id: str, type_id: int) -> dict[str, Any]:
    return {
        "to": {"id": to_id},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}],
    }


def _check_numeric_id(value: Any, field: str) -> None:
    if not isinstance(value, str) or not _NUMERIC_ID.fullmatch(value):
        raise ValidationRejected(f"{field}: a HubSpot record id is numeric")


def _to_hubspot(value: Any) -> str:
    """A contract value as HubSpot stores property values: strings; null clears the property."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _same(current: str | None, wanted: Any) -> bool:
    """Whether HubSpot's stored string ``current`` equals the contract value ``wanted``."""
    if wanted is None or wanted == "":
        return current is None or current == ""
    if current is None:
        return False
    if isinstance(wanted, bool):
        return current.strip().lower() == ("true" if wanted else "false")
    if isinstance(wanted, int | float):
        try:
            return float(current) == float(wanted)
        except ValueError:
            return False
    return current == str(wanted)


def _recall(memory: tuple[str, ...]) -> _Attempt | None:
    """What this process remembers of the creates sent for ``memory`` (stale entries are dropped)."""
    now = time.monotonic()
    with _ATTEMPTS_LOCK:
        for key in [k for k, a in _ATTEMPTS.items() if now - a.at > ATTEMPT_MEMORY_SECONDS]:
            del _ATTEMPTS[key]
        attempt = _ATTEMPTS.get(memory)
        return None if attempt is None else replace(attempt)


def _remember(memory: tuple[str, ...], attempt: _Attempt) -> None:
    with _ATTEMPTS_LOCK:
        _ATTEMPTS[memory] = attempt


def _forget(memory: tuple[str, ...]) -> None:
    with _ATTEMPTS_LOCK:
        _ATTEMPTS.pop(memory, None)


def _raise_unless_missing(response: httpx.Response) -> None:
    """During the check, 403/404/400 say what the portal lacks; anything else stops the check."""
    if response.status_code in (400, 403, 404):
        return
    if response.status_code == 401:
        raise AuthenticationFailed(f"HubSpot answered 401 ({_category(response) or 'unauthenticated'})")
    _raise_for_status(response)


def _missing_property_fix(status: int, object_type: str, name: str) -> str:
    if status == 403:
        return (
            f"The HubSpot app may not read {object_type} properties: add the read scope for "
            f"{object_type} to the app and reinstall it."
        )
    kind = "with 'Require unique values'" if object_type != "tasks" else "(single-line text)"
    return (
        f"Create the custom property {name} {kind} on {object_type} in HubSpot (Settings → Properties), "
        "or set the block's intent_key_property to an existing one."
    )


def _unreadable_fix(status: int, object_type: str) -> str:
    if object_type == "leads" and status != 403:
        return "Set up the Leads object in HubSpot (Sales Hub) to update leads."
    return (
        f"The HubSpot app may not read {object_type}: add the read scope for {object_type} to the app "
        "and reinstall it."
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    return json_object(response, provider="HubSpot")


def _body(response: httpx.Response) -> dict[str, Any]:
    body = json_or_none(response)
    return body if isinstance(body, dict) else {}


def _category(response: httpx.Response) -> str | None:
    """HubSpot's short error code: ``category`` (or ``errorType`` on 429), never the message."""
    body = _body(response)
    code = body.get("category") or body.get("errorType")
    return code[:64] if isinstance(code, str) else None


def _raise_for_status(response: httpx.Response) -> None:
    """Map a non-2xx HubSpot answer onto the error hierarchy (a 401 here survived the auth's refresh).

    A 429 always carries the earliest moment a retry can help as ``retry_after`` (seconds), so the
    retry policy never retries earlier than HubSpot allows
    (https://developers.hubspot.com/docs/api/usage-details):

    * burst policy (``TEN_SECONDLY_ROLLING``), or a policy we do not know: the ``Retry-After``
      header when present, else :data:`BURST_WINDOW_SECONDS` — the burst limit is a 10-second
      rolling window, so after 10 s every request that counted against it has left the window.
    * ``DAILY``: the daily quota is spent and only its reset helps. HubSpot resets it at midnight
      in the ACCOUNT's time zone, which the connector does not know (the next local midnight can be
      anywhere from now to 24 h away), so we ask for :data:`DAILY_RESET_WAIT_SECONDS` (24 h, or the
      header's value if longer): the only wait that is never too early. A retry at midnight UTC would
      still be refused for every account west of UTC. In practice an approval whose TTL ends before
      that fails at once (``RETRIES_EXHAUSTED``) instead of burning retries within seconds.

    A 5xx passes on its ``Retry-After`` too (maintenance windows announce it).
    """
    status = response.status_code
    if status < 300:
        return
    body = _body(response)
    category = _category(response)
    correlation = body.get("correlationId")
    detail = f"HubSpot answered {status}" + (f" ({category})" if category else "")
    if isinstance(correlation, str) and re.fullmatch(r"[A-Za-z0-9-]{1,64}", correlation):
        detail += f", correlationId {correlation}"
    if status == 429:
        policy = body.get("policyName")
        if isinstance(policy, str) and re.fullmatch(r"[A-Z_]{1,40}", policy):
            detail += f", policy {policy}"
        wait = retry_after(response)
        if policy == "DAILY":
            wait = max(wait or 0.0, DAILY_RESET_WAIT_SECONDS)
        elif wait is None:
            wait = BURST_WINDOW_SECONDS
        raise RateLimitedError(
            detail,
            status_code=status,
            provider_code=policy if isinstance(policy, str) else category,
            retry_after=wait,
        )
    error = error_class_for_status(status, overrides={422: ValidationRejected})
    if error is ValidationRejected:
        field = _invalid_property(body)
        if field:
            detail += f", property {field}"
    raise error(
        detail,
        status_code=status,
        provider_code=category,
        retry_after=retry_after(response) if status >= 500 else None,
    )


def _invalid_property(body: Mapping[str, Any]) -> str | None:
    """The property name a validation error points at (``errors[].context.propertyName``), if any."""
    errors = body.get("errors")
    if not isinstance(errors, list):
        return None
    for item in errors:
        context = item.get("context") if isinstance(item, dict) else None
        names = context.get("propertyName") if isinstance(context, dict) else None
        if isinstance(names, list) and names:
            names = names[0]
        if isinstance(names, str) and _PROPERTY_NAME.fullmatch(names):
            return names
    return None
