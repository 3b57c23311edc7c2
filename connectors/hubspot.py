"""HubSpot connector: CRM tasks, deals (the contract's opportunities) and single-field updates.

Plans (one step = one idempotent external write) and the contract checks are shared with every CRM
(:class:`connectors.crm.CrmConnector`)::

    crm.create_task         -> ["create_task"]
    crm.update_field        -> ["update_field"]
    crm.create_opportunity  -> ["create_opportunity"] (+ ["create_follow_up_task"] with follow_up_task)

On top of the contract, validation checks what HubSpot accepts: numeric record ids, ``related_to``
objects that map to a HubSpot object type, property internal names (and never the idempotency key
property itself) and the 100-character limit of a deal stage.

Idempotency by construction (ARCHITECTURE §2): every task and deal we create carries the step's
idempotency key in a custom property with ``hasUniqueValue: true`` (the block's
``intent_key_property``, default ``fulfill_intent_key``). HubSpot refuses a second record with the
same unique value, so a retried create cannot make a copy: when the create is refused we read the
record by that key — ``GET /crm/v3/objects/{type}/{key}?idProperty={property}``
(https://developers.hubspot.com/docs/api-reference/crm-objects-v3/guide "retrieve records by a
unique identifier property") — and reuse it. We deliberately do NOT search before creating: the
search index is eventually consistent. A refused create is read back on 409 (conflict) and also on
400, because HubSpot reports some unique-value violations as validation errors; if no record holds
our key the original error stands.

Associations travel in the create body (``associations: [{to: {id}, types: [{associationCategory:
"HUBSPOT_DEFINED", associationTypeId}]}]``), so record and association are one write
(https://developers.hubspot.com/docs/api-reference/latest/crm/activities/tasks/guide). Type ids:
task→company 192, task→deal 216, task→contact 204, deal→company (primary) 5.

``update_field`` maps the contract's objects to HubSpot object types: Account→companies,
Opportunity→deals, Contact→contacts and Lead→contacts (HubSpot keeps leads as contacts; the
``field`` is a HubSpot internal property name). It reads the property first (``previous_value``
guard and the value kept for compensation), then ``PATCH /crm/v3/objects/{type}/{id}``.

Compensation archives (``DELETE /crm/v3/objects/{type}/{id}``, 204; 404 = already gone) or
restores the previous value. Record links are ``{app_url}/contacts/{portal_id}/record/{objectTypeId}/{id}``
(companies 0-2, deals 0-3, contacts 0-1); a task has no page of its own, so its link opens the
record it is attached to.

Errors follow HubSpot's JSON shape ``{"status": "error", "message", "correlationId", "category"}``;
429 carries ``Retry-After`` and a ``policyName`` (``DAILY`` or the ten-secondly burst policy)
(https://developers.hubspot.com/docs/api/usage-details). The last ``X-HubSpot-RateLimit-*``
headers seen are kept on :attr:`HubSpotConnector.rate_limit`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from blocks.hubspot import HubSpotCredentials
from connectors.base import ExternalRef, ProviderRequest, StepCall, StepResult
from connectors.crm import (
    CREATE_TASK,
    STEP_CREATE_FOLLOW_UP_TASK,
    STEP_CREATE_OPPORTUNITY,
    STEP_UPDATE_FIELD,
    UPDATE_FIELD,
    CrmConnector,
)
from connectors.errors import (
    Conflict,
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
    "Lead": "contacts",
}
SINGULAR: dict[str, str] = {"companies": "company", "deals": "deal", "contacts": "contact", "tasks": "task"}
OBJECT_TYPE_IDS: dict[str, str] = {"contacts": "0-1", "companies": "0-2", "deals": "0-3", "tasks": "0-27"}
# HUBSPOT_DEFINED association type ids from a new task / deal to an existing record.
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

_NUMERIC_ID = re.compile(r"^[0-9]{1,30}$")
_PROPERTY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}$")


class HubSpotConnector(CrmConnector):
    """Fulfils CRM actions in one tenant's HubSpot portal.

    Args:
        client: The block's ``get_client()``, or any client (tests pass one with a mock transport): when it
            has no auth of its own, the block's ``auth()`` is used. URLs are absolute, built from the
            credentials block, so the client's ``base_url`` is not used.
        credentials: The tenant's :class:`HubSpotCredentials` block.
        clock: Seconds since the epoch, injectable for token-expiry tests and task timestamps.
    """

    system: ClassVar[str] = "hubspot"
    provider: ClassVar[str] = "HubSpot"

    def __init__(
        self,
        client: httpx.Client,
        credentials: HubSpotCredentials,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = ProviderClient(client, credentials, provider=self.provider, clock=clock)
        self._credentials = credentials
        self._clock = clock
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

    # -- the steps -------------------------------------------------------------------------
    def execute(self, call: StepCall) -> StepResult:
        """Perform one step; a retried create returns the record of the first attempt.

        Raises:
            ConnectorError: classified transient or permanent.
        """
        step = self._require_step(call)
        if step == STEP_UPDATE_FIELD:
            return self._update_field(call)
        object_type = _created_type(step)
        response = self._send(self._create(call))
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

    def lookup(self, call: StepCall) -> StepResult | None:
        """Find the effect of an earlier attempt: the record holding the key, or the field already set."""
        step = self._require_step(call)
        if step == STEP_UPDATE_FIELD:
            object_type = OBJECT_TYPES[str(call.params["object"])]
            field = str(call.params["field"])
            current = self._read_property(object_type, str(call.params["record_id"]), field)
            if not _same(current, call.params.get("value")):
                return None
            return self._already_set(call)
        object_type = _created_type(step)
        existing = self._get_by_key(object_type, call)
        return None if existing is None else self._created_result(call, existing, created=False)

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
            if response.status_code == 404:
                return
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
        """The create of a task or deal; the read and the conditional write of ``update_field``. No I/O."""
        step = self._require_step(call)
        if step != STEP_UPDATE_FIELD:
            create = self._create(call)
            note = (
                f"a refused create (400/409) reads back the {SINGULAR[_created_type(step)]} holding the key"
            )
            return [replace(create, note=note)]
        params = call.params
        object_type = OBJECT_TYPES[str(params["object"])]
        record_id, field = str(params["record_id"]), str(params["field"])
        condition = "only if the record does not hold the value yet" + (
            " and still holds previous_value (else STALE_PRECONDITION)" if "previous_value" in params else ""
        )
        patch = self._patch(object_type, record_id, {field: _to_hubspot(params.get("value"))})
        return [self._read(object_type, record_id, field), replace(patch, condition=condition)]

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

    # -- URLs ------------------------------------------------------------------------------
    def _objects_url(self, object_type: str) -> str:
        return f"{self._credentials.api_base_url.rstrip('/')}/crm/v3/objects/{object_type}"

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
