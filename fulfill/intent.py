"""ActionIntentV1 (contract §1–2): the approved, immutable instruction, validated strictly.

Unknown fields are rejected everywhere; every error names the offending field with a dotted
path (``parameters.subject``) so an integrator can fix the producer.

**Bounded, linear-time work before the signature.** An intent may come from a forger, and its
signature can only be checked once it is parsed, so everything that runs before the signature is
bounded by the document's size and linear in it: the raw text is at most :data:`MAX_INTENT_BYTES`;
before ``json.loads`` one pass of ``str`` methods counts its strings and containers
(:func:`load_intent_document`: at most :data:`MAX_JSON_STRINGS` strings and
:data:`MAX_JSON_TOKENS` commas and brackets — no valid intent comes near); after it,
:func:`check_document` bounds the values (:data:`MAX_JSON_VALUES`), the nesting, the integers and
the decoded text (:data:`MAX_TEXT_BYTES`, what the canonical form that is verified can hold). Every
string and list of the schema has a limit (the contract's where it gives one), and no check uses a
backtracking regular expression (the email check is :func:`is_email`). :func:`check_envelope` is the
cheap structural parse the signature needs (the envelope's fields, not the parameters' model).
"""

from __future__ import annotations

import json
import math
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
# Limits of the raw document, checked before the schema (:func:`load_intent_document`).
# JSON text: a 1 MiB brief whose every byte a producer escapes as \uXXXX (6 bytes), plus the rest.
MAX_INTENT_BYTES = 7 * 1024 * 1024
MAX_DEPTH = 32  # nested objects/arrays; a real intent needs 3
MAX_INT_DIGITS = 20  # digits of any integer (an epoch needs 11; int64 has 19)
# Counted before parsing; the largest valid intent (50 attendees) has about 80 strings and 100 tokens.
MAX_JSON_STRINGS = 1000  # strings, keys included
MAX_JSON_TOKENS = 1000  # commas, "[" and "{" outside strings
MAX_JSON_VALUES = 1000  # values of a parsed document (check_document)
# Decoded text of all strings and keys together: the brief's 1 MiB plus every other field at its limit.
MAX_TEXT_BYTES = MAX_BRIEF_BYTES + 64 * 1024
MAX_EMAIL_CHARS = 320  # RFC 5321: 64 (local part) + "@" + 255 (domain)
MAX_TEXT_VALUE_CHARS = 131072  # a crm.update_field value: Salesforce's longest text field
# 10000-01-01T00:00:00Z: any expiry below converts to a datetime without overflowing.
MAX_EXPIRES_AT_EPOCH = 253402300800


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


def is_email(value: str) -> bool:
    r"""``local@domain.tld``: one ``@``, no white space, a dot inside the domain; linear time, no regex.

    (It replaces ``^[^@\s]+@[^@\s]+\.[^@\s]+$``, whose backtracking made a 100 KB string cost seconds.)
    """
    if not 3 <= len(value) <= MAX_EMAIL_CHARS or value.count("@") != 1:
        return False
    local, _, domain = value.partition("@")
    return bool(local) and "." in domain[1:-1] and not any(ch.isspace() for ch in value)


def _email(value: str) -> str:
    if not is_email(value):
        raise ValueError("must be an email address")
    return value


def _brief_size(value: str) -> str:
    size = len(value.encode("utf-8"))
    if size > MAX_BRIEF_BYTES:
        raise ValueError(f"is {size} bytes; the limit is {MAX_BRIEF_BYTES} bytes (1 MiB)")
    return value


# The length limits run first (in pydantic-core), so the Python checks after them see bounded text.
UtcTimestamp = Annotated[StrictStr, Field(max_length=64), AfterValidator(_utc)]
OffsetTimestamp = Annotated[StrictStr, Field(max_length=64), AfterValidator(_with_offset)]
IsoDate = Annotated[StrictStr, Field(max_length=10), AfterValidator(_iso_date)]
Email = Annotated[StrictStr, Field(max_length=MAX_EMAIL_CHARS), AfterValidator(_email)]
NonEmpty = Annotated[StrictStr, Field(min_length=1, max_length=255)]
FieldValue = (
    Annotated[StrictStr, Field(max_length=MAX_TEXT_VALUE_CHARS)] | StrictBool | StrictInt | StrictFloat
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RelatedTo(_Strict):
    """The CRM record a task hangs off."""

    object: Annotated[StrictStr, Field(min_length=1, max_length=128)]
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
    value: FieldValue | None
    previous_value: FieldValue | None = None

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
    organizer: Annotated[StrictStr, Field(min_length=1, max_length=1024)]
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
    content: Annotated[StrictStr, Field(max_length=MAX_BRIEF_BYTES), AfterValidator(_brief_size)]
    content_type: Annotated[StrictStr, Field(max_length=255, pattern=r"^[\w.+-]+/[\w.+-]+$")] = (
        "text/markdown"
    )


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


class IntentEnvelope(_Strict):
    """Every field of an intent, its ``parameters`` an unchecked JSON object: what the signature needs.

    :func:`check_envelope` validates it (cheap: bounded strings and fixed patterns); the parameters'
    own model (:class:`ActionIntentV1`) can then wait until the signature verified.
    """

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
    expires_at_epoch: Annotated[StrictInt, Field(gt=0, lt=MAX_EXPIRES_AT_EPOCH)]


class ActionIntentV1(IntentEnvelope):
    """An approved, immutable instruction (contract §1): the envelope and its action's parameters."""

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
        """Parameters with defaults applied, as JSON-ready data.

        An optional field that was absent stays absent; one given as ``null`` stays ``null``:
        ``previous_value: null`` means "the field was empty when the human approved" and must reach
        the connector's precondition check (contract §2), while an absent one means "no check".
        """
        return _explicit(self.typed_parameters())


def _explicit(model: BaseModel) -> dict[str, Any]:
    """``model_dump(mode="json")`` without the ``None`` values that came from defaults, not from input."""
    dumped: dict[str, Any] = model.model_dump(mode="json")
    for name in type(model).model_fields:
        value = getattr(model, name)
        if value is None and name not in model.model_fields_set:
            del dumped[name]
        elif isinstance(value, BaseModel):
            dumped[name] = _explicit(value)
    return dumped


def not_an_object(value: Any, field: str = "$") -> IntentInvalid:
    """The error for an intent (or a part of one) that is not a JSON object, naming ``field``.

    A string gets its own sentence: the usual mistake is an intent encoded twice (JSON text inside a
    JSON string, e.g. ``{"intent": "{\\"schema_version\\": …}"}``).
    """
    if isinstance(value, str):
        return IntentInvalid(field, STRING_NOT_OBJECT)
    return IntentInvalid(field, "must be a JSON object")


STRING_NOT_OBJECT = (
    "is a string, not a JSON object: send the object itself, not JSON text inside a string (encoded twice?)"
)


def _format(error: Exception) -> IntentInvalid:
    if isinstance(error, ValidationError):
        first = error.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "$"
        message = str(first["msg"]).removeprefix("Value error, ")
        if first.get("type") == "extra_forbidden":
            message = "unknown field (not part of action_intent.v1)"
        elif first.get("type") in ("dict_type", "model_type") and isinstance(first.get("input"), str):
            message = STRING_NOT_OBJECT
        elif first.get("type") == "value_error" and ": " in message:
            # "end: must be after start" raised by a model validator -> field "end"
            sub, _, rest = message.partition(": ")
            if re.fullmatch(r"[A-Za-z0-9_.]+", sub):
                field = sub if field == "$" else f"{field}.{sub}"
                message = rest
        return IntentInvalid(field, message)
    return IntentInvalid("$", str(error))


class _Refused:
    """A JSON token the loader will not convert; :func:`check_document` reports it with its path."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class _DuplicateKeys(dict[str, Any]):
    """A JSON object in which ``duplicate`` (the first repeated key) appeared more than once."""

    duplicate: str = ""


def _json_int(token: str) -> int | _Refused:
    # Refused before int() runs: Python's own limit (4300 digits) raises a bare ValueError.
    digits = len(token) - token.startswith("-")
    if digits > MAX_INT_DIGITS:
        return _Refused(f"is an integer of {digits} digits; the limit is {MAX_INT_DIGITS}")
    return int(token)


def _json_float(token: str) -> float | _Refused:
    value = float(token)
    return value if math.isfinite(value) else _Refused("is a number too large to represent")


def _json_constant(token: str) -> _Refused:
    return _Refused(f"is {token}, which is not a JSON number")


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) == len(pairs):
        return result
    marked = _DuplicateKeys(result)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.duplicate = key
            break
        seen.add(key)
    return marked


def _too_large(size: str) -> IntentInvalid:
    return IntentInvalid("$", f"is {size} bytes; the limit is {MAX_INTENT_BYTES} bytes (7 MiB)")


def count_structure(text: str) -> tuple[int, int]:
    """The strings, and the commas and opening brackets outside strings, of a JSON text — in C-speed passes.

    First the raw counts, upper bounds (a quote or bracket inside a string counts too): when they are
    within the limits, that is the answer. Else escaped backslashes, then escaped quotes, are dropped
    (``str.replace`` pairs backslashes from the left, as JSON does), so every quote left delimits a
    string, and the text between strings is what counts for structure; that text is split only when
    the strings are few. Exact for JSON; for text that is not JSON, a bound good enough to refuse it.

    Returns:
        ``(strings, tokens)``; either may stop being counted (0 tokens) once a limit is exceeded.
    """
    quotes = text.count('"')
    backslashes = text.count("\\")
    tokens = text.count(",") + text.count("[") + text.count("{")
    # Each escape sequence (one or two backslashes) decodes to at least one byte of text, and a
    # character inside a string to one byte or more: past these bounds the text is too long anyway.
    if backslashes > 2 * MAX_TEXT_BYTES or quotes - backslashes > 2 * MAX_JSON_STRINGS:
        return max(MAX_JSON_STRINGS + 1, (quotes - backslashes + 1) // 2), 0
    if tokens <= MAX_JSON_TOKENS and quotes <= 2 * MAX_JSON_STRINGS:
        return (quotes + 1) // 2, tokens
    if tokens > MAX_JSON_TOKENS + MAX_TEXT_BYTES:
        return 0, tokens
    plain = text.replace("\\\\", "").replace('\\"', "")
    strings = (plain.count('"') + 1) // 2
    if strings > MAX_JSON_STRINGS:
        return strings, 0
    outside = plain.split('"')[::2]
    return strings, sum(part.count(",") + part.count("[") + part.count("{") for part in outside)


def _check_structure(text: str) -> None:
    strings, tokens = count_structure(text)
    if strings > MAX_JSON_STRINGS:
        raise IntentInvalid("$", f"holds more than {MAX_JSON_STRINGS} strings; no valid intent comes near")
    if tokens > MAX_JSON_TOKENS:
        raise IntentInvalid(
            "$", f"holds more than {MAX_JSON_TOKENS} values and containers; no valid intent comes near"
        )


def load_intent_document(text: str | bytes) -> dict[str, Any]:
    """Parse an intent's JSON text safely: size first, a count of its structure, then JSON, then :func:`check_document`.

    Refuses, as :class:`IntentInvalid` (never another exception): more than
    :data:`MAX_INTENT_BYTES` (before any parsing), invalid UTF-8, more than :data:`MAX_JSON_STRINGS`
    strings or :data:`MAX_JSON_TOKENS` commas and brackets (:func:`count_structure`, before parsing),
    invalid JSON, ``NaN``/``Infinity``, non-finite numbers, integers over :data:`MAX_INT_DIGITS`
    digits, duplicate keys, nesting deeper than :data:`MAX_DEPTH`, NUL characters and lone surrogates
    (in values and keys), more than :data:`MAX_TEXT_BYTES` of decoded text.

    Args:
        text: The document as received (bytes must be UTF-8).

    Returns:
        The parsed JSON object.

    Raises:
        IntentInvalid: naming the offending field (dotted path), or ``$`` for the whole document.
    """
    if isinstance(text, bytes | bytearray):
        if len(text) > MAX_INTENT_BYTES:
            raise _too_large(str(len(text)))
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise IntentInvalid("$", f"is not valid UTF-8 (invalid byte at offset {exc.start})") from None
    else:
        if len(text) > MAX_INTENT_BYTES:  # a character is at least one byte: no need to encode
            raise _too_large(f"more than {MAX_INTENT_BYTES}")
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_INTENT_BYTES:
            raise _too_large(str(size))
    _check_structure(text)
    try:
        document = json.loads(
            text,
            object_pairs_hook=_json_object,
            parse_int=_json_int,
            parse_float=_json_float,
            parse_constant=_json_constant,
        )
    except json.JSONDecodeError as exc:
        raise IntentInvalid("$", f"is not valid JSON ({exc.__class__.__name__}: {exc})") from None
    except RecursionError:
        raise IntentInvalid("$", f"nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # not a JSONDecodeError: e.g. Python's own integer-size limit
        raise IntentInvalid("$", f"is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(document, dict):
        raise not_an_object(document)
    check_document(document)
    return document


def _display_key(key: str) -> str:
    shown = key if key.isprintable() else ascii(key)[1:-1]
    return shown if len(shown) <= 64 else f"{shown[:61]}..."


def _child(path: str, key: str) -> str:
    return key if path == "$" else f"{path}.{key}"


def _text_size(value: str, path: str, what: str) -> int:
    if "\x00" in value:
        raise IntentInvalid(path, f"{what}contains a NUL character (U+0000)")
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise IntentInvalid(
            path, f"{what}contains a lone surrogate (U+D800..U+DFFF), which is not valid Unicode"
        ) from None


def check_document(document: Any) -> None:
    """Check an already-parsed intent document is plain, bounded JSON (iteratively, no recursion).

    The same limits as :func:`load_intent_document`: only JSON types (string keys), at most
    :data:`MAX_JSON_VALUES` values, nesting at most :data:`MAX_DEPTH`, integers of at most
    :data:`MAX_INT_DIGITS` digits, finite floats, no NUL character or lone surrogate in any string or
    key, at most :data:`MAX_TEXT_BYTES` of text (keys and strings, UTF-8). It stops at the first
    problem, so its work is bounded by these limits whatever it is given.

    Raises:
        IntentInvalid: naming the first offending field (dotted path), or ``$``.
    """
    total = 0
    values = 0
    pending: list[tuple[Any, str, int]] = [(document, "$", 0)]
    while pending:
        value, path, depth = pending.pop()
        values += 1
        if values > MAX_JSON_VALUES:
            raise IntentInvalid(path, f"is beyond the {MAX_JSON_VALUES} values any intent may hold")
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, str):
            total += _text_size(value, path, "")
        elif isinstance(value, int):
            if abs(value) >= 10**MAX_INT_DIGITS:
                raise IntentInvalid(path, f"is an integer of more than {MAX_INT_DIGITS} digits")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise IntentInvalid(path, "is not a finite number")
        elif isinstance(value, _Refused):
            raise IntentInvalid(path, value.message)
        elif isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                raise IntentInvalid(path, f"nests deeper than {MAX_DEPTH} levels")
            if isinstance(value, _DuplicateKeys):
                raise IntentInvalid(
                    _child(path, _display_key(value.duplicate)), "appears more than once in its object"
                )
            if len(value) > MAX_JSON_VALUES:
                raise IntentInvalid(path, f"holds more than {MAX_JSON_VALUES} members")
            children: list[tuple[Any, str, int]] = []
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise IntentInvalid(path, "object keys must be strings")
                    child = _child(path, _display_key(key))
                    total += _text_size(key, child, "key ")
                    children.append((item, child, depth + 1))
            else:
                children = [(item, _child(path, str(i)), depth + 1) for i, item in enumerate(value)]
            pending.extend(reversed(children))  # popped in document order
        else:
            raise IntentInvalid(path, f"is not a JSON value ({type(value).__name__})")
        if total > MAX_TEXT_BYTES:
            raise IntentInvalid(
                path,
                f"brings the intent's text beyond {MAX_TEXT_BYTES} bytes (the brief's 1 MiB and the rest)",
            )


def check_envelope(document: Any) -> IntentEnvelope:
    """The cheap structural parse before the signature: plain bounded JSON, then the envelope's fields.

    The parameters are not validated against their action's model here (:func:`parse_intent` does);
    every check is linear in the (bounded) document.

    Raises:
        IntentInvalid: naming the first offending field.
    """
    if not isinstance(document, dict):
        raise not_an_object(document)
    check_document(document)
    try:
        return IntentEnvelope.model_validate(document)
    except ValidationError as exc:
        raise _format(exc) from None


def parse_intent(document: dict[str, Any] | str | bytes) -> ActionIntentV1:
    """Validate a raw intent (JSON text or parsed object).

    Text goes through :func:`load_intent_document`, a parsed object through :func:`check_document`,
    before the schema.

    Args:
        document: The intent as received.

    Returns:
        The validated intent.

    Raises:
        IntentInvalid: naming the first offending field.
    """
    if isinstance(document, str | bytes):
        document = load_intent_document(document)
    elif isinstance(document, dict):
        check_document(document)
    else:
        raise IntentInvalid("$", "must be a JSON object")
    try:
        return ActionIntentV1.model_validate(document)
    except ValidationError as exc:
        raise _format(exc) from None
