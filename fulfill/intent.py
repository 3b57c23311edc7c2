"""ActionIntentV1 (contract §1–2): the approved, immutable instruction, validated strictly.

Unknown fields are rejected everywhere; every error names the offending field with a dotted
path (``parameters.subject``) so an integrator can fix the producer.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

SCHEMA_VERSION = "action_intent.v1"
MAX_BRIEF_BYTES = 1024 * 1024
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class IntentInvalid(ValueError):
    """An intent failed validation; ``field`` is the dotted path of the first problem.

    Args:
        field: Dotted path of the offending field (``parameters.subject``), or ``$`` for the document.
        message: What is wrong, in one sentence.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (IntentInvalid, (self.field, self.message))


def parse_timestamp(value: str) -> datetime:
    """Parse an RFC 3339 timestamp with an offset (``Z`` or ``z`` allowed) into an aware datetime."""
    text = value.replace("z", "Z")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", text):
        raise ValueError("must be an RFC 3339 timestamp with a time zone offset")
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _rfc3339(value: str, *, require_utc: bool) -> str:
    if parse_timestamp(value).utcoffset() != timedelta(0) and require_utc:
        raise ValueError("must be in UTC (Z)")
    return value


def _utc(value: str) -> str:
    return _rfc3339(value, require_utc=True)


def _with_offset(value: str) -> str:
    return _rfc3339(value, require_utc=False)


def _iso_date(value: str) -> str:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("must be a date YYYY-MM-DD")
    date.fromisoformat(value)
    return value


def _email(value: str) -> str:
    if not EMAIL.match(value):
        raise ValueError("must be an email address")
    return value


def _brief_size(value: str) -> str:
    size = len(value.encode("utf-8"))
    if size > MAX_BRIEF_BYTES:
        raise ValueError(f"is {size} bytes; the limit is {MAX_BRIEF_BYTES} bytes (1 MiB)")
    return value


UtcTimestamp = Annotated[StrictStr, AfterValidator(_utc)]
OffsetTimestamp = Annotated[StrictStr, AfterValidator(_with_offset)]
IsoDate = Annotated[StrictStr, AfterValidator(_iso_date)]
Email = Annotated[StrictStr, AfterValidator(_email)]
NonEmpty = Annotated[StrictStr, Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RelatedTo(_Strict):
    """The CRM record a task hangs off."""

    object: NonEmpty
    id: Annotated[StrictStr, Field(min_length=1, max_length=128)]


class CrmCreateTask(_Strict):
    """Parameters of ``crm.create_task``."""

    subject: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    due_date: IsoDate | None = None
    description: Annotated[StrictStr, Field(max_length=32000)] | None = None
    priority: Literal["Low", "Normal", "High"] = "Normal"
    related_to: RelatedTo | None = None


class CrmUpdateField(_Strict):
    """Parameters of ``crm.update_field``."""

    object: Literal["Account", "Opportunity", "Contact", "Lead"]
    record_id: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    field: Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    value: StrictStr | StrictBool | StrictInt | StrictFloat | None
    previous_value: StrictStr | StrictBool | StrictInt | StrictFloat | None = None

    @model_validator(mode="before")
    @classmethod
    def _require_value_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "value" not in data:
            raise ValueError("value: Field required (null is allowed, absence is not)")
        return data


class FollowUpTask(_Strict):
    """The optional follow-up task of ``crm.create_opportunity``."""

    subject: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    due_date: IsoDate | None = None


class CrmCreateOpportunity(_Strict):
    """Parameters of ``crm.create_opportunity``."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=120)]
    stage: NonEmpty
    close_date: IsoDate
    amount: StrictInt | StrictFloat | None = None
    currency: Annotated[StrictStr, Field(pattern=r"^[A-Z]{3}$")] | None = None
    follow_up_task: FollowUpTask | None = None


class CalendarDraftMeeting(_Strict):
    """Parameters of ``calendar.draft_meeting``."""

    title: Annotated[StrictStr, Field(min_length=1, max_length=1024)]
    start: OffsetTimestamp
    end: OffsetTimestamp
    organizer: NonEmpty
    attendees: Annotated[list[Email], Field(max_length=50)] = []
    description: Annotated[StrictStr, Field(max_length=8000)] | None = None
    location: Annotated[StrictStr, Field(max_length=1024)] | None = None

    @model_validator(mode="after")
    def _end_after_start(self) -> CalendarDraftMeeting:
        if parse_timestamp(self.end) <= parse_timestamp(self.start):
            raise ValueError("end: must be after start")
        return self


class InternalCreateTask(_Strict):
    """Parameters of ``internal.create_task``."""

    title: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    assignee: Annotated[StrictStr, Field(max_length=255)] | None = None
    due_date: IsoDate | None = None
    description: Annotated[StrictStr, Field(max_length=32000)] | None = None


class InternalLogNote(_Strict):
    """Parameters of ``internal.log_note``."""

    body: Annotated[StrictStr, Field(min_length=1, max_length=100000)]
    title: Annotated[StrictStr, Field(max_length=255)] | None = None


class InternalAttachBrief(_Strict):
    """Parameters of ``internal.attach_brief``."""

    title: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    content: Annotated[StrictStr, AfterValidator(_brief_size)]
    content_type: Annotated[StrictStr, Field(pattern=r"^[\w.+-]+/[\w.+-]+$")] = "text/markdown"


PARAMETER_MODELS: dict[str, type[_Strict]] = {
    "crm.create_task": CrmCreateTask,
    "crm.update_field": CrmUpdateField,
    "crm.create_opportunity": CrmCreateOpportunity,
    "calendar.draft_meeting": CalendarDraftMeeting,
    "internal.create_task": InternalCreateTask,
    "internal.log_note": InternalLogNote,
    "internal.attach_brief": InternalAttachBrief,
}
ACTION_TYPES = tuple(PARAMETER_MODELS)
REVERSIBLE = dict.fromkeys(ACTION_TYPES, True)


class Approval(_Strict):
    """The approval binding (contract §3)."""

    approval_id: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    approved_by: Annotated[StrictStr, Field(min_length=1, max_length=320)]
    approved_at: UtcTimestamp
    edited: StrictBool
    key_id: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    # Optional in the schema so a missing signature is reported as APPROVAL_INVALID by the
    # approval check (contract §3), not as a schema error.
    signature: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None


class ActionIntentV1(_Strict):
    """An approved, immutable instruction (contract §1)."""

    schema_version: Literal["action_intent.v1"]
    action_intent_id: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
    tenant_id: Annotated[StrictStr, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    account_id: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    decision_id: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    action_type: Literal[
        "crm.create_task",
        "crm.update_field",
        "crm.create_opportunity",
        "calendar.draft_meeting",
        "internal.create_task",
        "internal.log_note",
        "internal.attach_brief",
    ]
    parameters: dict[str, Any]
    approval: Approval
    created_at: UtcTimestamp
    expires_at_epoch: StrictInt

    @model_validator(mode="after")
    def _validate_parameters(self) -> ActionIntentV1:
        try:
            PARAMETER_MODELS[self.action_type].model_validate(self.parameters)
        except ValidationError as exc:
            inner = _format(exc)
            path = "parameters" if inner.field == "$" else f"parameters.{inner.field}"
            raise ValueError(f"{path}: {inner.message}") from None
        return self

    def typed_parameters(self) -> BaseModel:
        """The parameters parsed into the action type's model (defaults applied)."""
        return PARAMETER_MODELS[self.action_type].model_validate(self.parameters)

    def normalized_parameters(self) -> dict[str, Any]:
        """Parameters with defaults applied, as JSON-ready data."""
        return self.typed_parameters().model_dump(mode="json", exclude_none=True)


def _format(error: Exception) -> IntentInvalid:
    if isinstance(error, ValidationError):
        first = error.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "$"
        message = str(first["msg"]).removeprefix("Value error, ")
        if first.get("type") == "extra_forbidden":
            message = "unknown field (not part of action_intent.v1)"
        elif first.get("type") == "value_error" and ": " in message:
            # "end: must be after start" raised by a model validator -> field "end"
            sub, _, rest = message.partition(": ")
            if re.fullmatch(r"[A-Za-z0-9_.]+", sub):
                field = sub if field == "$" else f"{field}.{sub}"
                message = rest
        return IntentInvalid(field, message)
    return IntentInvalid("$", str(error))


def parse_intent(document: dict[str, Any] | str | bytes) -> ActionIntentV1:
    """Validate a raw intent (JSON text or parsed object).

    Args:
        document: The intent as received.

    Returns:
        The validated intent.

    Raises:
        IntentInvalid: naming the first offending field.
    """
    if isinstance(document, str | bytes):
        try:
            document = json.loads(document)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IntentInvalid("$", f"is not valid JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(document, dict):
        raise IntentInvalid("$", "must be a JSON object")
    try:
        return ActionIntentV1.model_validate(document)
    except ValidationError as exc:
        raise _format(exc) from None
