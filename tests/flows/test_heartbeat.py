"""The flow heartbeat is off inside ``without_flow_heartbeat``, derived once, and back on after."""

from __future__ import annotations

from prefect.settings import get_current_settings, temporary_settings

from flows.heartbeat import without_flow_heartbeat


def test_the_heartbeat_is_off_inside_and_the_settings_are_derived_once() -> None:
    with temporary_settings(updates={"flows.heartbeat_frequency": 30}):
        outer = get_current_settings()
        with without_flow_heartbeat():
            first = get_current_settings()
            assert first.flows.heartbeat_frequency is None
            assert first.api.url == outer.api.url  # everything else as it was
        with without_flow_heartbeat():
            assert get_current_settings() is first, "the second run reuses the derived settings"
        assert get_current_settings().flows.heartbeat_frequency == 30
        with temporary_settings(updates={"flows.heartbeat_frequency": 45}), without_flow_heartbeat():
            changed = get_current_settings()
            assert changed is not first and changed.flows.heartbeat_frequency is None


def test_settings_without_a_heartbeat_are_used_as_they_are() -> None:
    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        current = get_current_settings()
        with without_flow_heartbeat():
            assert get_current_settings() is current
