"""The one error hierarchy of every connector.

Each class decides its own retryability where it is raised, so the retry policy
(``tasks.connector_step.is_retryable``) only asks the error::

    ConnectorError                 (base; .retryable, .code, .seller_message)
    ├── TransientError             retryable: the same call with the same key may succeed later
    │   ├── RateLimitedError       429 / REQUEST_LIMIT_EXCEEDED / rateLimitExceeded (carries retry_after)
    │   ├── ProviderUnavailable    5xx, 503 maintenance
    │   └── NetworkError           timeouts, connection resets
    │       └── OutcomeUnknown     the request may have been committed (read timeout, dropped response)
    └── PermanentError             not retryable: fail now, compensate earlier steps
        ├── ValidationRejected     400 / INVALID_FIELD / malformed parameters (VALIDATION_FAILED)
        ├── NotFound               404: the record does not exist
        ├── Forbidden              403: the integration user may not do this
        ├── AuthenticationFailed   401 after one token refresh
        ├── Conflict               300 multiple matches, 409 that cannot be reconciled
        ├── StalePrecondition      the record changed since approval (STALE_PRECONDITION)
        ├── OutcomeUnsettled       an earlier answer was lost and no lookup can settle it (AMBIGUOUS_OUTCOME)
        └── NotConfigured          no connector / credentials for this tenant (NOT_CONFIGURED)

Errors survive pickling (``__reduce__``) because Prefect states carry them across processes,
and their messages never contain credentials or raw provider bodies: ``seller_message`` is
a sentence safe to show a seller; ``detail`` is a short operator-facing string that callers
must already have scrubbed of secrets. All three texts are made storable on every database
(``fulfill.redaction.storable_text``: NUL and lone surrogates replaced).
"""

from __future__ import annotations

from typing import Any, ClassVar

from fulfill.redaction import storable_text


class ConnectorError(Exception):
    """Root of every connector failure.

    Args:
        detail: Short, secret-free description for operators and the ledger.
        seller_message: Sentence safe to show a seller; defaults to the class's message.
        status_code: Provider HTTP status, when there was one.
        provider_code: Provider error code (e.g. ``INVALID_FIELD``), when there was one.
        retry_after: Seconds the provider asked us to wait (``Retry-After``), if any.
    """

    retryable: ClassVar[bool] = False
    code: ClassVar[str] = "CONNECTOR_REJECTED"
    default_seller_message: ClassVar[str] = "The connected system rejected the action."

    def __init__(
        self,
        detail: str,
        *,
        seller_message: str | None = None,
        status_code: int | None = None,
        provider_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        # Provider text may hold what no database stores (NUL, a lone surrogate): made storable here,
        # once, so the step record, the ledger and the execution can always record the failure.
        detail = storable_text(detail)
        super().__init__(detail)
        self.detail = detail
        self.seller_message = storable_text(seller_message or self.default_seller_message)
        self.status_code = status_code
        self.provider_code = storable_text(provider_code) if provider_code is not None else None
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (
                type(self),
                self.detail,
                self.seller_message,
                self.status_code,
                self.provider_code,
                self.retry_after,
            ),
        )

    def as_dict(self) -> dict[str, Any]:
        """Secret-free description for ledger rows and step records."""
        return {
            "error": type(self).__name__,
            "code": self.code,
            "retryable": self.retryable,
            "detail": self.detail,
            "status_code": self.status_code,
            "provider_code": self.provider_code,
            "retry_after": self.retry_after,
        }


def _rebuild(
    cls: type[ConnectorError],
    detail: str,
    seller_message: str,
    status_code: int | None,
    provider_code: str | None,
    retry_after: float | None,
) -> ConnectorError:
    return cls(
        detail,
        seller_message=seller_message,
        status_code=status_code,
        provider_code=provider_code,
        retry_after=retry_after,
    )


class TransientError(ConnectorError):
    """The call may succeed if repeated with the same idempotency key."""

    retryable = True
    code = "RETRIES_EXHAUSTED"
    default_seller_message = "The connected system was temporarily unavailable; we tried several times."


class RateLimitedError(TransientError):
    """The provider throttled us (HTTP 429 or a provider rate-limit code)."""

    default_seller_message = "The connected system is rate-limiting requests; we tried several times."


class ProviderUnavailable(TransientError):
    """The provider answered 5xx or is in maintenance."""


class NetworkError(TransientError):
    """No usable answer: timeout, refused or reset connection."""


class OutcomeUnknown(NetworkError):
    """The request reached the provider but its answer was lost: the write may exist."""

    code = "AMBIGUOUS_OUTCOME"
    default_seller_message = "We could not confirm whether the change was made; a person will check."


class PermanentError(ConnectorError):
    """Repeating the call cannot help: fail now."""


class ValidationRejected(PermanentError):
    """The parameters are invalid for this provider (400, INVALID_FIELD, …)."""

    code = "VALIDATION_FAILED"
    default_seller_message = "The connected system rejected the values in this action."


class NotFound(PermanentError):
    """The record the action refers to does not exist."""

    default_seller_message = "The record this action refers to no longer exists."


class Forbidden(PermanentError):
    """The integration user lacks permission."""

    default_seller_message = "The integration is not allowed to make this change."


class AuthenticationFailed(PermanentError):
    """Credentials were refused even after one refresh."""

    default_seller_message = "The connection to the connected system needs to be re-authorised."


class Conflict(PermanentError):
    """The idempotency key matches several objects, or a conflict we cannot reconcile."""

    default_seller_message = "The connected system holds conflicting records for this action."


class StalePrecondition(PermanentError):
    """The record changed since the approver saw it; nothing was written."""

    code = "STALE_PRECONDITION"
    default_seller_message = "The record changed after the action was approved, so nothing was changed."


class OutcomeUnsettled(PermanentError):
    """An earlier attempt's answer was lost and nothing the provider offers can tell whether it committed.

    Never retried (a retry could make a second object): the execution ends ``AMBIGUOUS_OUTCOME`` with
    ``needs_human``.
    """

    code = "AMBIGUOUS_OUTCOME"
    default_seller_message = OutcomeUnknown.default_seller_message


class NotConfigured(PermanentError):
    """The tenant has no connector or credentials for this action."""

    code = "NOT_CONFIGURED"
    default_seller_message = "This action's destination system is not connected for your team."
