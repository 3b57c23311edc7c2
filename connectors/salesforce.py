"""Salesforce connector: ``crm.create_task``, ``crm.update_field`` and ``crm.create_opportunity``.

Plans and the contract checks are shared with every CRM (:class:`connectors.crm.CrmConnector`)::

    crm.create_task          -> ["create_task"]
    crm.update_field         -> ["update_field"]
    crm.create_opportunity   -> ["create_opportunity"] (+ ["create_follow_up_task"] with follow_up_task)

On top of the contract, validation checks Salesforce's own formats: record ids (at most 18 letters and digits),
object and field API names, fields that can never be written (``Id``, ``CreatedDate``, …) and the
255-character limit of ``StageName``.

Creates are idempotent by construction (ARCHITECTURE §2): an *upsert* on a custom External ID + Unique
field (the block's ``external_id_field``, default ``Fulfill_Intent_Key__c``),
``PATCH /services/data/vXX.X/sobjects/{Object}/{ExternalIdField}/{value}`` — 201 created, 200/204 matched
and updated, 300 several matches (https://developer.salesforce.com/docs/platform/api-rest/guide/dome-upsert.html).

The external id *value* is not the raw key. Keys look like ``ai_7f3c:create_task`` and intent ids may hold
``.``/``:``; in a URL path segment ``:`` needs care and Salesforce reads a trailing ``.json``/``.xml`` — or
a TLD-like suffix — as a format extension (the upsert page warns that ``…@email.inc`` answers 404). So the
value is ``sha256(key)`` in lowercase hex: 64 characters of ``[0-9a-f]``, safe in any path segment without
encoding, deterministic, and within the 255 characters of a Text External ID field. See
:func:`external_id_for`.

What the org offers is read once per instance (``describe`` of the objects a step writes; the org's
currency for an opportunity with a ``currency``) and decides, before any write: a create whose object
lacks the External ID + Unique key field raises :class:`NotConfigured` naming what to set up; a stage
outside ``StageName``'s values, a currency the org cannot record (``CurrencyIsoCode`` is sent only in a
multi-currency org, for an active currency) or an unknown/unwritable field is :class:`ValidationRejected`.
A task related to a Lead carries ``WhoId`` alone: Salesforce requires ``WhatId`` to be empty then.
:meth:`SalesforceConnector.check` reports every precondition and the guarantee per action type.

``update_field`` reads the record first (``GET /sobjects/{Object}/{id}?fields={field}``): a differing
``previous_value`` halts with :class:`StalePrecondition` before anything is written; a record that already
holds the target value is an earlier attempt's effect and is reused. The write is ``PATCH
/sobjects/{Object}/{id}`` (naturally idempotent); ``undo`` keeps the value before.

Errors are JSON arrays ``[{"message", "errorCode", "fields"}]``
(https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm). Note that
``REQUEST_LIMIT_EXCEEDED`` arrives as **403** and is a rate limit, not a permission problem, and that
``INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY`` arrives as 400 but is a permission problem.

Every REST response carries ``Sforce-Limit-Info: api-usage=used/max``
(https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm); the last
value seen is :attr:`SalesforceConnector.limit_info`.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from blocks.salesforce import SalesforceCredentials
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
    STEP_CREATE_TASK,
    STEP_UPDATE_FIELD,
    UPDATE_FIELD,
    CrmConnector,
)
from connectors.errors import (
    Conflict,
    ConnectorError,
    Forbidden,
    NotConfigured,
    NotFound,
    OutcomeUnknown,
    PermanentError,
    ProviderUnavailable,
    RateLimitedError,
    StalePrecondition,
    TransientError,
    ValidationRejected,
)
from connectors.http import ProviderClient, error_class_for_status, json_object, json_or_none, retry_after

# Task.WhoId points at people (Contact, Lead); Task.WhatId at everything else.
WHO_OBJECTS = frozenset({"Contact", "Lead"})
# Opportunity.StageName (a picklist) holds at most 255 characters; the contract sets no limit.
STAGE_MAX = 255

_RECORD_ID = re.compile(r"^[A-Za-z0-9]{1,18}$")
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
_OBJECT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
_LIMIT_INFO = re.compile(r"api-usage=(\d+)/(\d+)")
# The sObject each step creates; update_field creates nothing.
_CREATED_OBJECTS: dict[str, str | None] = {
    STEP_CREATE_TASK: "Task",
    STEP_UPDATE_FIELD: None,
    STEP_CREATE_OPPORTUNITY: "Opportunity",
    STEP_CREATE_FOLLOW_UP_TASK: "Task",
}
_NOT_WRITABLE_FIELDS = frozenset({"id", "isdeleted", "createddate", "createdbyid", "systemmodstamp"})
# Key prefixes of the objects a task may name (the first three characters of every record id).
KEY_PREFIXES = {"Account": "001", "Contact": "003", "Opportunity": "006", "Lead": "00Q", "Task": "00T"}
# The objects crm.update_field may write (the contract's literal).
UPDATABLE_OBJECTS = ("Account", "Opportunity", "Contact", "Lead")
# The objects each create action type writes: it is enabled only when every one has the external id field.
_CREATES: dict[str, tuple[str, ...]] = {CREATE_TASK: ("Task",), CREATE_OPPORTUNITY: ("Opportunity", "Task")}
ORG_CURRENCY_QUERY = "SELECT DefaultCurrencyIsoCode FROM Organization"
ACTIVE_CURRENCIES_QUERY = "SELECT IsoCode FROM CurrencyType WHERE IsActive = true"
_ONCE = "once per connector instance: what the org offers (cached)"


def external_id_for(idempotency_key: str) -> str:
    """The value stored in the External ID field for one step: lowercase hex sha256 of the key.

    Args:
        idempotency_key: The step's idempotency key, e.g. ``"ai_7f3c:create_task"``.

    Returns:
        64 characters of ``[0-9a-f]``: safe unencoded in a URL path segment, never read as a format
        extension, and deterministic across retries and processes.
    """
    return hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class _Described:
    """What one ``GET /sobjects/{Object}/describe`` says that the connector relies on."""

    name: str
    createable: bool
    updateable: bool
    fields: Mapping[str, Mapping[str, Any]]
    """Field definitions by lower-case API name (Salesforce names are case-insensitive)."""

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> _Described:
        fields = body.get("fields")
        definitions = {
            str(f["name"]).lower(): f
            for f in (fields if isinstance(fields, list) else [])
            if isinstance(f, dict) and isinstance(f.get("name"), str)
        }
        return cls(
            name=str(body.get("name", "")),
            createable=body.get("createable") is True,
            updateable=body.get("updateable") is True,
            fields=definitions,
        )

    def field(self, name: str) -> Mapping[str, Any] | None:
        """The definition of field ``name``, or ``None`` when the user cannot see it."""
        return self.fields.get(name.lower())

    def picklist(self, name: str, *, restricted_only: bool = False) -> tuple[str, ...] | None:
        """The active values of picklist ``name``; ``None`` when it is no (restricted) picklist here."""
        definition = self.field(name)
        if definition is None or definition.get("type") not in ("picklist", "multipicklist"):
            return None
        if restricted_only and definition.get("restrictedPicklist") is not True:
            return None
        values = definition.get("picklistValues")
        return tuple(
            str(v["value"])
            for v in (values if isinstance(values, list) else [])
            if isinstance(v, dict) and v.get("active") is not False and isinstance(v.get("value"), str)
        )


class SalesforceConnector(CrmConnector):
    """Creates Tasks and Opportunities and updates fields in one Salesforce org, idempotently.

    Args:
        client: The block's ``get_client()``, or any client (tests pass one with a mock transport): when it
            has no auth of its own, the block's ``auth()`` is used. URLs are absolute, built from the block;
            the auth sends them to the instance the token names (``blocks.salesforce``).
        credentials: The tenant's :class:`SalesforceCredentials` block.
        clock: Seconds since the epoch, injectable for JWT and token-expiry tests.
    """

    system: ClassVar[str] = "salesforce"
    provider: ClassVar[str] = "Salesforce"

    def __init__(
        self,
        client: httpx.Client,
        credentials: SalesforceCredentials,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = ProviderClient(client, credentials, provider=self.provider, clock=clock)
        self._credentials = credentials
        self._instance_url: str | None = None
        self.limit_info: tuple[int, int] | None = None
        """The last ``Sforce-Limit-Info`` ``api-usage`` seen, as ``(used, max)``; ``None`` before any call."""
        self._described: dict[str, _Described | None] = {}
        self._org_currency: str | None = None
        self.last_check: ConnectorCheck | None = None
        """The result of the last :meth:`check` on this instance, if any."""

    # -- validation beyond the contract -----------------------------------------------------
    def _validate_provider(self, action_type: str, params: Mapping[str, Any]) -> None:
        """Salesforce's id and API-name formats, unwritable fields and the ``StageName`` limit.

        Raises:
            ValidationRejected: naming the field, e.g. ``parameters.record_id: must be a Salesforce record id``.
        """
        if action_type == CREATE_TASK:
            related = params.get("related_to")
            if related is None:
                return
            if not _OBJECT_NAME.fullmatch(related["object"]):
                raise ValidationRejected("parameters.related_to.object: must be a Salesforce object name")
            if not _RECORD_ID.fullmatch(related["id"]):
                raise ValidationRejected("parameters.related_to.id: must be a Salesforce record id")
            prefix = KEY_PREFIXES.get(related["object"])
            if prefix is not None and len(related["id"]) in (15, 18) and not related["id"].startswith(prefix):
                raise ValidationRejected(
                    f"parameters.related_to.id: is not a {related['object']} id (those start with {prefix})"
                )
        elif action_type == UPDATE_FIELD:
            if not _RECORD_ID.fullmatch(params["record_id"]):
                raise ValidationRejected("parameters.record_id: must be a Salesforce record id")
            field = params["field"]
            if not _FIELD_NAME.fullmatch(field):
                raise ValidationRejected("parameters.field: must be a field API name, e.g. StageName")
            if field.lower() in _NOT_WRITABLE_FIELDS:
                raise ValidationRejected(f"parameters.field: {field} cannot be written")
        elif len(params["stage"]) > STAGE_MAX:
            raise ValidationRejected(f"parameters.stage: at most {STAGE_MAX} characters")

    # -- the steps -------------------------------------------------------------------------
    def execute(self, call: StepCall) -> StepResult:
        """Perform one step; a repeated call with the same key reuses the earlier effect.

        Raises:
            ConnectorError: classified transient or permanent.
        """
        sobject = self._created_object(call)
        if sobject is None:
            self._require_field_writable(call.params)
            return self._update_field(call)
        self._fields(call, sobject, send_currency=False)  # the intent's own problems first, before any read
        self._require_enabled(call.action_type, self._step_objects(call))
        currency = self._accepted_currency(call) if call.step == STEP_CREATE_OPPORTUNITY else None
        value = external_id_for(call.idempotency_key)
        upsert = self._upsert(call, sobject, send_currency=currency is not None)
        response = self._send(upsert)
        _raise_for_status(response, what=upsert.purpose)
        body = _json_object(response) if response.content else {}
        record_id = body.get("id")
        if not isinstance(record_id, str) or not record_id:
            # 204 (older API versions answer an update without a body): read the id back.
            found = self._get_by_external_id(sobject, value)
            if found is None:
                raise OutcomeUnknown(f"upsert {sobject} answered {response.status_code} without an id")
            record_id = str(found["Id"])
        created = response.status_code == 201 or body.get("created") is True
        return self._created_result(call, sobject, record_id, created=created)

    def lookup(self, call: StepCall) -> StepResult | None:
        """Find an earlier attempt's effect: the record holding this step's external id, or the target value.

        Raises:
            Conflict: several records hold this step's external id.
        """
        sobject = self._created_object(call)
        if sobject is None:
            params = call.params
            current = self._current_value(params)
            if not _same_value(current, params.get("value")):
                return None
            return self._update_result(call, before=self._assumed_before(params, current), created=False)
        found = self._get_by_external_id(sobject, external_id_for(call.idempotency_key))
        if found is None:
            return None
        return self._created_result(call, sobject, str(found["Id"]), created=False)

    def compensate(self, call: StepCall, result: StepResult) -> None:
        """Delete a created record, or restore an updated field; undoing twice is not an error.

        Raises:
            Conflict: the updated field changed again since our write; it is left as it is for a person.
        """
        if self._created_object(call) is None:
            self._restore_field(call, result)
            return
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_delete_record.htm
        delete = ProviderRequest(
            "DELETE", self._record_path(result.ref.object, result.ref.id), f"delete {result.ref.object}", True
        )
        response = self._send(delete)
        if response.status_code == 404:  # NOT_FOUND or ENTITY_IS_DELETED: already gone
            return
        _raise_for_status(response, what=delete.purpose)

    def describe(self, call: StepCall) -> list[ProviderRequest]:
        """The upsert of a create step; the read and the conditional write of ``update_field``. No I/O."""
        sobject = self._created_object(call)
        if sobject is None:
            params = call.params
            condition = "only if the record does not hold the value yet" + (
                " and still holds previous_value (else STALE_PRECONDITION)"
                if "previous_value" in params
                else ""
            )
            requests = [
                *self._uncached_reads((str(params["object"]),), currency=False),
                self._read_field(params),
                self._patch_field(params, params.get("value"), condition),
            ]
        else:
            currency = call.step == STEP_CREATE_OPPORTUNITY and bool(call.params.get("currency"))
            send_currency = currency and self._currency_known_accepted(call.params)
            # A follow-up task runs after its opportunity, on the connector that read the org for it.
            after_first = call.step == STEP_CREATE_FOLLOW_UP_TASK and STEP_CREATE_OPPORTUNITY in call.prior
            reads = [] if after_first else self._uncached_reads(self._step_objects(call), currency=currency)
            requests = [*reads, self._upsert(call, sobject, send_currency=send_currency)]
        if self._credentials.instance_url:
            return requests
        note = (
            "instance URL assumed from the login URL (no instance_url in the block); "
            "Salesforce's token answer decides it at run time"
        )
        return [replace(request, note=note) for request in requests]

    def _created_object(self, call: StepCall) -> str | None:
        """The sObject a create step makes, or ``None`` for ``update_field``; rejects foreign steps."""
        return _CREATED_OBJECTS[self._require_step(call)]

    # -- update_field ----------------------------------------------------------------------
    def _update_field(self, call: StepCall) -> StepResult:
        params = call.params
        current = self._current_value(params)
        target = params.get("value")
        if _same_value(current, target):
            # Already holds the value: an earlier attempt committed (or nothing to change).
            return self._update_result(call, before=self._assumed_before(params, current), created=False)
        if "previous_value" in params and not _same_value(current, params["previous_value"]):
            raise StalePrecondition(
                f"{params['object']}.{params['field']} no longer holds the value the approver saw",
                provider_code="STALE_PRECONDITION",
            )
        self._write_field(params, target)
        return self._update_result(call, before=current, created=True)

    def _restore_field(self, call: StepCall, result: StepResult) -> None:
        undo = result.undo
        if "previous" not in undo:
            raise PermanentError("no previous value was recorded; the field cannot be restored")
        params = call.params
        current = self._current_value(params)
        previous = undo["previous"]
        if _same_value(current, previous):
            return
        if not _same_value(current, undo.get("value", params.get("value"))):
            raise Conflict(
                f"{params['object']}.{params['field']} changed again after our update; not restoring it",
                seller_message="The field was changed again after this action, so it was not reverted.",
            )
        self._write_field(params, previous)

    def _current_value(self, params: Mapping[str, Any]) -> Any:
        sobject, field = str(params["object"]), str(params["field"])
        read = self._read_field(params)
        response = self._send(read)
        _raise_for_status(response, what=read.purpose)
        record = _json_object(response)
        for key, value in record.items():  # Salesforce field names are case-insensitive
            if key.lower() == field.lower():
                return value
        raise ValidationRejected(f"parameters.field: {field!r} is not readable on {sobject}")

    def _read_field(self, params: Mapping[str, Any]) -> ProviderRequest:
        sobject = str(params["object"])
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_get_field_values.htm
        return ProviderRequest(
            "GET",
            self._record_path(sobject, str(params["record_id"])),
            f"read {sobject}",
            False,
            params={"fields": str(params["field"])},
        )

    def _patch_field(self, params: Mapping[str, Any], value: Any, condition: str = "") -> ProviderRequest:
        sobject = str(params["object"])
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_update_fields.htm
        return ProviderRequest(
            "PATCH",
            self._record_path(sobject, str(params["record_id"])),
            f"update {sobject}",
            True,
            body={str(params["field"]): value},
            condition=condition,
        )

    def _write_field(self, params: Mapping[str, Any], value: Any) -> None:
        patch = self._patch_field(params, value)
        _raise_for_status(self._send(patch), what=patch.purpose)

    @staticmethod
    def _assumed_before(params: Mapping[str, Any], current: Any) -> Any:
        # When the record already holds the target, the value before our write is what the approver saw;
        # without previous_value it cannot be known any more and the current value is recorded.
        return params.get("previous_value", current)

    def _update_result(self, call: StepCall, *, before: Any, created: bool) -> StepResult:
        params = call.params
        sobject, record_id, field = str(params["object"]), str(params["record_id"]), str(params["field"])
        return StepResult(
            ref=ExternalRef(
                system=self.system, object=sobject, id=record_id, url=self._record_url(sobject, record_id)
            ),
            created=created,
            undo={
                "object": sobject,
                "record_id": record_id,
                "field": field,
                "previous": before,
                "value": params.get("value"),
            },
            summary=(
                f"Changed {field} on the {sobject} from {_shown(before)} to {_shown(params.get('value'))} "
                "in Salesforce."
            ),
        )

    # -- creates ---------------------------------------------------------------------------
    def _upsert(self, call: StepCall, sobject: str, *, send_currency: bool = False) -> ProviderRequest:
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_sobject_upsert_patch.htm
        return ProviderRequest(
            "PATCH",
            self._upsert_path(sobject, external_id_for(call.idempotency_key)),
            f"upsert {sobject}",
            True,
            body=self._fields(call, sobject, send_currency=send_currency),
        )

    def _fields(self, call: StepCall, sobject: str, *, send_currency: bool) -> dict[str, Any]:
        params = call.params
        if call.step == STEP_CREATE_TASK:
            return _task_fields(params, call.account_id)
        if call.step == STEP_CREATE_FOLLOW_UP_TASK:
            opportunity = call.prior.get(STEP_CREATE_OPPORTUNITY)
            if opportunity is None:
                raise ValidationRejected(
                    "prior.create_opportunity: the follow-up task needs the opportunity's id"
                )
            follow_up = dict(params.get("follow_up_task") or {})
            fields = _task_fields(follow_up, call.account_id)
            fields["WhatId"] = opportunity.id
            return fields
        fields = {
            "Name": params["name"],
            "StageName": params["stage"],
            "CloseDate": params["close_date"],
            "AccountId": call.account_id,
        }
        if params.get("amount") is not None:
            fields["Amount"] = params["amount"]
        if send_currency and params.get("currency"):
            # Only multi-currency orgs have CurrencyIsoCode (_accepted_currency); a single-currency org
            # records the amount in its one currency, which the intent's currency was checked against.
            fields["CurrencyIsoCode"] = params["currency"]
        return fields

    def _created_result(self, call: StepCall, sobject: str, record_id: str, *, created: bool) -> StepResult:
        params = call.params
        if call.step == STEP_CREATE_OPPORTUNITY:
            summary = (
                f"Created the opportunity “{params['name']}” ({params['stage']}, closing "
                f"{params['close_date']}) in Salesforce."
            )
        elif call.step == STEP_CREATE_FOLLOW_UP_TASK:
            subject = (params.get("follow_up_task") or {}).get("subject", "")
            summary = f"Created the follow-up task “{subject}” on the opportunity in Salesforce."
        else:
            summary = f"Created the task “{params['subject']}” in Salesforce."
        return StepResult(
            ref=ExternalRef(
                system=self.system, object=sobject, id=record_id, url=self._record_url(sobject, record_id)
            ),
            created=created,
            undo={"object": sobject, "id": record_id},
            summary=summary,
        )

    def _get_by_external_id(self, sobject: str, value: str) -> dict[str, Any] | None:
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_upsert.htm
        response = self._send(
            ProviderRequest(
                "GET",
                self._upsert_path(sobject, value),
                f"read {sobject} by external id",
                False,
                params={"fields": "Id"},
            )
        )
        if response.status_code == 404 and not _missing_external_id_field(response):
            return None
        _raise_for_status(response, what=f"read {sobject} by external id")
        record = _json_object(response)
        if not isinstance(record.get("Id"), str):
            raise ProviderUnavailable(f"{sobject} read by external id answered without an Id")
        return record

    # -- what the org offers: describe once per instance ---------------------------------------
    def check(self) -> ConnectorCheck:
        """Read (never write) what each action type relies on in the org, and the guarantee that results.

        * the block can get a token: its fields, and a My Domain ``login_url`` for client credentials
          (checked without sending anything);
        * ``Task`` and ``Opportunity`` can be created and hold the block's ``external_id_field`` marked
          *External ID* and *Unique* (``describe``): without it a create has no provider key, so
          ``crm.create_task`` / ``crm.create_opportunity`` are not enabled;
        * ``Opportunity.StageName``'s picklist values are readable (stages are checked before a write);
        * the org's currencies: multi-currency (``CurrencyIsoCode`` and its active values) or the one
          currency of the org (``Organization.DefaultCurrencyIsoCode``);
        * which of Account, Opportunity, Contact and Lead the integration user may read and update
          (``crm.update_field``; an object it may not update refuses its intents with NOT_CONFIGURED).

        ``crm.update_field`` writes one field of a record named by its id, after reading it (the
        previous-value guard); setting a field to a value is idempotent, so a retry can never make a
        second effect: exactly once by the provider's record id.

        Raises:
            ConnectorError: the org could not be read (authentication, network, …).
        """
        everything = frozenset(self.action_types)
        problems = self._credentials.configuration_problems()
        token = Precondition(
            "the credentials block can request a token (fields, My Domain for client credentials)",
            ok=not problems,
            action_types=everything,
            fix=" ".join(problems),
        )
        if problems:
            result = ConnectorCheck(
                system=self.system,
                preconditions=(token,),
                guarantees=dict.fromkeys(sorted(self.action_types), Guarantee.DISABLED),
            )
            self.last_check = result
            return result
        preconditions = [token, self._key_precondition("Task"), self._key_precondition("Opportunity")]
        preconditions.append(self._stage_precondition())
        preconditions.append(self._currency_precondition())
        updatable = [self._update_precondition(sobject) for sobject in UPDATABLE_OBJECTS]
        preconditions += updatable
        guarantees: dict[str, Guarantee] = {}
        for action_type in sorted(self.action_types):
            failed = any(not p.ok and p.required and action_type in p.action_types for p in preconditions)
            if action_type == UPDATE_FIELD and not any(p.ok for p in updatable):
                failed = True
            guarantees[action_type] = Guarantee.DISABLED if failed else Guarantee.PROVIDER_KEY
        result = ConnectorCheck(system=self.system, preconditions=tuple(preconditions), guarantees=guarantees)
        self.last_check = result
        return result

    def _key_precondition(self, sobject: str) -> Precondition:
        field = self._credentials.external_id_field
        action_types = frozenset(a for a, objects in _CREATES.items() if sobject in objects)
        name = f"{sobject} can be created and {sobject}.{field} is an External ID and Unique"
        described = self._describe(sobject)
        where = (
            "Setup > Object Manager > Activity"
            if sobject == "Task"
            else f"Setup > Object Manager > {sobject}"
        )
        if described is None or not described.createable:
            fix = f"Give the integration user Read, Create, Edit and Delete access to {sobject}."
            return Precondition(name, ok=False, action_types=action_types, fix=fix)
        definition = described.field(field)
        if definition is None:
            fix = (
                f"Create a Text field {field} marked External ID and Unique on {sobject} ({where}) and give "
                "the integration user edit access to it, or name an existing one in the block's "
                "external_id_field."
            )
            return Precondition(name, ok=False, action_types=action_types, fix=fix)
        if definition.get("externalId") is not True or definition.get("unique") is not True:
            fix = (
                f"Mark {sobject}.{field} as External ID and Unique ({where}): without it a retried create "
                f"could make a second {sobject}."
            )
            return Precondition(name, ok=False, action_types=action_types, fix=fix)
        if definition.get("createable") is not True:
            fix = f"Give the integration user edit access to {sobject}.{field} (field-level security)."
            return Precondition(name, ok=False, action_types=action_types, fix=fix)
        return Precondition(name, ok=True, action_types=action_types)

    def _stage_precondition(self) -> Precondition:
        described = self._describe("Opportunity")
        stages = described.picklist("StageName") if described is not None else None
        return Precondition(
            "Opportunity.StageName picklist values are readable",
            ok=bool(stages),
            action_types=frozenset({CREATE_OPPORTUNITY}),
            fix="Give the integration user read access to Opportunity.StageName (field-level security).",
        )

    def _currency_precondition(self) -> Precondition:
        described = self._describe("Opportunity")
        active = described.picklist("CurrencyIsoCode") if described is not None else None
        if active is not None:
            name = f"multi-currency org; active currencies: {', '.join(active) or 'none'}"
        else:
            name = (
                f"single-currency org ({self._org_currency_code()}); an intent in another currency is refused"
            )
        return Precondition(name, ok=True, action_types=frozenset({CREATE_OPPORTUNITY}), required=False)

    def _update_precondition(self, sobject: str) -> Precondition:
        described = self._describe(sobject)
        return Precondition(
            f"{sobject} can be read and updated",
            ok=described is not None and described.updateable,
            action_types=frozenset({UPDATE_FIELD}),
            fix=f"Give the integration user Read and Edit access to {sobject}.",
            required=False,
        )

    def _step_objects(self, call: StepCall) -> tuple[str, ...]:
        """The objects whose provider key a create step relies on: a first step checks every object its
        action type writes (no opportunity is made whose follow-up task could not be); a follow-up task,
        made after its opportunity, checks Task alone."""
        return ("Task",) if call.step == STEP_CREATE_FOLLOW_UP_TASK else _CREATES[call.action_type]

    def _require_enabled(self, action_type: str, sobjects: tuple[str, ...]) -> None:
        """Refuse a create action type whose objects lack their provider key, before any write.

        Raises:
            NotConfigured: naming what to set up in the org.
        """
        failed = [self._key_precondition(sobject) for sobject in sobjects]
        fixes = [p.fix for p in failed if not p.ok]
        if fixes:
            raise NotConfigured(
                f"{action_type} is not enabled for this Salesforce org: {' '.join(fixes)}",
                seller_message="This action is not set up in your Salesforce org yet; an administrator has "
                "been told what to configure.",
            )

    def _require_field_writable(self, params: Mapping[str, Any]) -> None:
        """The object may be updated, the field exists and is writable, a restricted picklist holds the value.

        Raises:
            NotConfigured: the integration user may not update the object.
            ValidationRejected: naming ``parameters.field`` or ``parameters.value``.
        """
        sobject, field = str(params["object"]), str(params["field"])
        described = self._describe(sobject)
        if described is None or not described.updateable:
            raise NotConfigured(
                f"crm.update_field on {sobject} is not enabled for this Salesforce org: give the integration "
                f"user Read and Edit access to {sobject}."
            )
        definition = described.field(field)
        if definition is None:
            raise ValidationRejected(f"parameters.field: {field} is not a field of {sobject} in this org")
        if definition.get("updateable") is not True:
            raise ValidationRejected(f"parameters.field: {sobject}.{field} cannot be written")
        values = described.picklist(str(definition.get("name", field)), restricted_only=True)
        value = params.get("value")
        if values is not None and value is not None and value not in values:
            raise ValidationRejected(f"parameters.value: {value!r} is not a value of {sobject}.{field}")

    def _accepted_currency(self, call: StepCall) -> str | None:
        """The ``CurrencyIsoCode`` to send for the opportunity, after checking the stage and currency.

        Raises:
            ValidationRejected: ``parameters.stage`` is not one of the org's stages, or
                ``parameters.currency`` is one the org cannot record (VALIDATION_FAILED, nothing written).
        """
        params = call.params
        described = self._describe("Opportunity")
        stages = described.picklist("StageName") if described is not None else None
        if stages and params["stage"] not in stages:
            raise ValidationRejected(
                f"parameters.stage: {params['stage']!r} is not an opportunity stage of this Salesforce org"
            )
        currency = params.get("currency")
        if not currency:
            return None
        org_currency = self._org_currency_code()
        active = described.picklist("CurrencyIsoCode") if described is not None else None
        if active is not None:
            if currency not in active:
                raise ValidationRejected(
                    f"parameters.currency: {currency} is not an active currency of this Salesforce org "
                    f"(active: {', '.join(active)})"
                )
            return str(currency)
        if currency != org_currency:
            raise ValidationRejected(
                f"parameters.currency: this Salesforce org records every amount in {org_currency}; "
                f"{currency} cannot be recorded"
            )
        return None  # a single-currency org has no CurrencyIsoCode: the amount is in its one currency

    def _currency_known_accepted(self, params: Mapping[str, Any]) -> bool:
        """For ``describe``: whether CurrencyIsoCode would be sent (assumed so until the org is known)."""
        if "Opportunity" not in self._described:
            return True
        described = self._described["Opportunity"]
        active = described.picklist("CurrencyIsoCode") if described is not None else None
        return active is not None and params.get("currency") in active

    def _uncached_reads(self, sobjects: tuple[str, ...], *, currency: bool) -> list[ProviderRequest]:
        """The describe (and currency) reads a step sends first because this instance has not made them."""
        reads = [self._describe_request(s) for s in sobjects if s not in self._described]
        if currency and self._org_currency is None:
            reads.append(self._query_request(ORG_CURRENCY_QUERY, "read the org's currency"))
        return reads

    def _describe(self, sobject: str) -> _Described | None:
        """The object's describe, read once per instance; ``None`` when the user cannot see the object."""
        if sobject in self._described:
            return self._described[sobject]
        request = self._describe_request(sobject)
        response = self._send(request)
        found: _Described | None = None
        if response.status_code != 404:  # NOT_FOUND: no such object for this user
            _raise_for_status(response, what=request.purpose)
            found = _Described.parse(_json_object(response))
        self._described[sobject] = found
        return found

    def _org_currency_code(self) -> str:
        """``Organization.DefaultCurrencyIsoCode``, read once per instance."""
        if self._org_currency is None:
            request = self._query_request(ORG_CURRENCY_QUERY, "read the org's currency")
            response = self._send(request)
            _raise_for_status(response, what=request.purpose)
            records = _json_object(response).get("records")
            first = records[0] if isinstance(records, list) and records else None
            code = first.get("DefaultCurrencyIsoCode") if isinstance(first, dict) else None
            if not isinstance(code, str) or not code:
                raise ProviderUnavailable("the Organization query answered without DefaultCurrencyIsoCode")
            self._org_currency = code
        return self._org_currency

    def _describe_request(self, sobject: str) -> ProviderRequest:
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_sobject_describe.htm
        return ProviderRequest(
            "GET", f"{self._sobject_path(sobject)}/describe", f"describe {sobject}", False, condition=_ONCE
        )

    def _query_request(self, soql: str, purpose: str) -> ProviderRequest:
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_query.htm
        base = self._credentials.api_base_url
        return ProviderRequest(
            "GET",
            f"{base}/services/data/v{self._credentials.api_version}/query/",
            purpose,
            False,
            params={"q": soql},
            condition=_ONCE,
        )

    # -- URLs ----------------------------------------------------------------------------------
    def _sobject_path(self, sobject: str) -> str:
        base = self._credentials.api_base_url
        return f"{base}/services/data/v{self._credentials.api_version}/sobjects/{quote(sobject, safe='')}"

    def _record_path(self, sobject: str, record_id: str) -> str:
        return f"{self._sobject_path(sobject)}/{quote(record_id, safe='')}"

    def _upsert_path(self, sobject: str, value: str) -> str:
        field = quote(self._credentials.external_id_field, safe="")
        return f"{self._sobject_path(sobject)}/{field}/{value}"

    def _record_url(self, sobject: str, record_id: str) -> str:
        base = self._instance_url or self._credentials.api_base_url
        return f"{base}/lightning/r/{quote(sobject, safe='')}/{quote(record_id, safe='')}/view"

    # -- HTTP ------------------------------------------------------------------------------
    def _send(self, request: ProviderRequest) -> httpx.Response:
        """Send through the block's auth; remember the instance it went to and the API usage."""
        response = self._http.send(request)
        url = response.request.url
        self._instance_url = f"{url.scheme}://{url.netloc.decode('ascii')}"
        header = response.headers.get("Sforce-Limit-Info")
        match = _LIMIT_INFO.search(header) if header else None
        if match is not None:
            self.limit_info = (int(match.group(1)), int(match.group(2)))
        return response


# -- request building -------------------------------------------------------------------------
def _task_fields(params: Mapping[str, Any], account_id: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"Subject": params["subject"], "Priority": params.get("priority") or "Normal"}
    if params.get("due_date"):
        fields["ActivityDate"] = params["due_date"]
    if params.get("description"):
        fields["Description"] = params["description"]
    related = params.get("related_to")
    if isinstance(related, Mapping) and related.get("object") == "Lead":
        # A lead belongs to no account yet: Salesforce requires WhatId to be empty when WhoId is a Lead
        # (Task.WhoId in the object reference), so the task names the lead alone.
        fields["WhoId"] = related["id"]
    elif isinstance(related, Mapping) and related.get("object") in WHO_OBJECTS:
        fields["WhoId"] = related["id"]
        fields["WhatId"] = account_id
    elif isinstance(related, Mapping):
        fields["WhatId"] = related["id"]
    else:
        fields["WhatId"] = account_id
    return fields


def _same_value(current: Any, expected: Any) -> bool:
    """Equality as an approver means it: 5 == 5.0, but True is not 1 and "5" is not 5."""
    if isinstance(current, bool) or isinstance(expected, bool):
        return type(current) is type(expected) and current == expected
    if isinstance(current, int | float) and isinstance(expected, int | float):
        return float(current) == float(expected)
    return type(current) is type(expected) and bool(current == expected)


def _shown(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"“{value}”"


# -- responses ----------------------------------------------------------------------------------
def _json_object(response: httpx.Response) -> dict[str, Any]:
    return json_object(response, provider="Salesforce")


def _error_code(response: httpx.Response) -> str | None:
    """The first ``errorCode`` of Salesforce's error array ``[{"message", "errorCode", "fields"}]``."""
    body = json_or_none(response)
    first = body[0] if isinstance(body, list) and body else body
    code = first.get("errorCode") if isinstance(first, dict) else None
    return code[:64] if isinstance(code, str) else None


def _error_fields(response: httpx.Response) -> list[str]:
    body = json_or_none(response)
    first = body[0] if isinstance(body, list) and body else None
    fields = first.get("fields") if isinstance(first, dict) else None
    return [str(f)[:80] for f in fields[:5]] if isinstance(fields, list) else []


def _missing_external_id_field(response: httpx.Response) -> bool:
    """Whether a 404 says the External ID field itself is missing (a setup problem, not a missing record)."""
    body = json_or_none(response)
    first = body[0] if isinstance(body, list) and body else None
    message = first.get("message") if isinstance(first, dict) else None
    return isinstance(message, str) and message.startswith("Provided external ID field does not exist")


def _raise_for_status(response: httpx.Response, *, what: str) -> None:
    """Map a non-2xx REST answer to the error hierarchy (a 401 here survived the auth's one refresh)."""
    status = response.status_code
    if status < 300:
        return
    code = _error_code(response)
    fields = _error_fields(response)
    detail = f"Salesforce answered {status} to {what}" + (f" ({code})" if code else "")
    if fields:
        detail += f" on {', '.join(fields)}"
    if code == "NOT_FOUND" and _missing_external_id_field(response):
        raise NotConfigured(
            f"{what}: the org has no accessible External ID field of that name",
            status_code=status,
            provider_code=code,
        )
    if status == 429 or code == "REQUEST_LIMIT_EXCEEDED":
        raise RateLimitedError(
            detail, status_code=status, provider_code=code, retry_after=retry_after(response)
        )
    error: type[ConnectorError]
    if status >= 500 or code == "SERVER_UNAVAILABLE":
        error = ProviderUnavailable
    elif code == "UNABLE_TO_LOCK_ROW":  # record-lock contention: the same write succeeds later
        error = TransientError
    elif code is not None and code.startswith("INSUFFICIENT_ACCESS"):
        error = Forbidden
    elif code in ("ENTITY_IS_DELETED", "NOT_FOUND"):
        error = NotFound
    else:
        error = error_class_for_status(status)
    # A 503 (maintenance, overload) may say when to come back; never retry before that.
    wait = retry_after(response) if status >= 500 else None
    raise error(detail, status_code=status, provider_code=code, retry_after=wait)
