"""The conformance kit's vocabulary: one ``ConformanceCase`` per (connector, action, step).

Each provider contributes ``CASES`` from ``tests/connectors/cases_<provider>.py``;
``tests/connectors/test_conformance.py`` runs the same checks over all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from connectors.base import Connector, ExternalRef
from connectors.errors import ConnectorError


class ConformanceEnv(Protocol):
    """A connector wired to an emulated provider (no sockets), with fault switches."""

    connector: Connector

    def observe(self) -> Any:
        """A comparable snapshot of what the action affects at the provider
        (e.g. the sorted ids of live objects of that kind, or a field's value)."""

    def drop_next_write(self) -> None:
        """The next write commits at the provider but its response is lost."""

    def fail_next(self, status: int, body: Any, headers: dict[str, str]) -> None:
        """The next request is answered with this documented error response, unprocessed."""


@dataclass
class ErrorCase:
    """A documented provider error response and the class it must be classified as."""

    status: int
    body: Any
    expected: type[ConnectorError]
    headers: dict[str, str] = field(default_factory=dict)
    id: str = ""


@dataclass
class ConformanceCase:
    """One connector step under test."""

    id: str
    action_type: str
    step: str
    params: dict[str, Any]
    make_env: Callable[[Path], ConformanceEnv]
    bad_params: dict[str, Any]
    bad_field: str
    error_cases: list[ErrorCase] = field(default_factory=list)
    prior: Callable[[ConformanceEnv], dict[str, ExternalRef]] = lambda env: {}
    account_id: str = "001Hs00002abcDEF"
