"""Prefect's flow heartbeat, switched off for runs that no Prefect worker watches.

A sync flow joins its heartbeat thread when it ends (about 1 s per run, measured), and its zombie
detection adds nothing where fulfill's lease heartbeat and the reconciler already settle a dead
executor. ``temporary_settings`` would do, but it validates every Prefect setting again on each entry
(pydantic-settings: tens of milliseconds per in-process intent, docs/benchmarks.md, P1); the settings
without the heartbeat are derived once per current settings object instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.context import SettingsContext, get_settings_context
from prefect.settings import Settings

_lock = threading.Lock()
_derived: dict[int, tuple[Settings, Settings]] = {}


@contextmanager
def without_flow_heartbeat() -> Iterator[None]:
    """Run the enclosed flows with Prefect's current settings, minus the flow heartbeat."""
    context = get_settings_context()
    current = context.settings
    if current.flows.heartbeat_frequency is None:
        yield
        return
    with _lock:
        source, derived = _derived.get(id(current), (None, None))
        if source is not current or derived is None:
            derived = current.copy_with_update(updates={"flows.heartbeat_frequency": None})
            _derived.clear()  # one entry: the settings of the process seldom change
            _derived[id(current)] = (current, derived)
    with SettingsContext(profile=context.profile, settings=derived):
        yield
