"""Prefect's read of the server's default result storage, once a minute in a process that runs many intents."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest import mock

import httpx
import pytest
from prefect import results
from prefect.client.orchestration import SyncPrefectClient

from flows import result_storage
from surfaces.service import ExecutionService

pytestmark = pytest.mark.usefixtures("prefect_server")

_PREFECTS_CALL = SyncPrefectClient.read_server_default_result_storage


@pytest.fixture
def storage_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[mock.MagicMock]:
    """Prefect's own read in place and nothing kept from earlier tests; yields the API call, counted."""
    monkeypatch.setattr(results, result_storage.PREFECTS_READ, result_storage.PREFECTS_OWN)
    monkeypatch.setattr(result_storage, "_read", {})
    with mock.patch.object(
        SyncPrefectClient, "read_server_default_result_storage", autospec=True, side_effect=_PREFECTS_CALL
    ) as read:
        yield read


def test_in_process_intents_read_the_default_storage_once_a_minute_not_twice_each(
    engine: Any, make_intent: Any, storage_reads: mock.MagicMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = ExecutionService(engine)
    for n in range(3):
        status = service.execute_action_intent(make_intent("internal.create_task", {"title": f"Task {n}"}))
        assert status.status == "SUCCEEDED"
    assert storage_reads.call_count == 1  # Prefect's engine alone: 2 per intent (flow run, task run)

    monkeypatch.setattr(result_storage, "READ_SECONDS", 0.0)  # a read a minute old is read again
    status = service.execute_action_intent(make_intent("internal.create_task", {"title": "Task 3"}))
    assert status.status == "SUCCEEDED"
    assert storage_reads.call_count == 1 + 2


def test_a_failed_read_is_not_kept_and_a_read_is_kept_per_prefect_api(storage_reads: mock.MagicMock) -> None:
    from prefect.settings import temporary_settings

    failures = [httpx.ConnectError("refused")]

    def read(client: SyncPrefectClient) -> Any:
        if failures:
            raise failures.pop()
        return _PREFECTS_CALL(client)

    storage_reads.side_effect = read
    assert result_storage.server_default_storage_block_id() is None  # Prefect's fallback: local storage
    assert result_storage.server_default_storage_block_id() is None  # none set on the test server
    assert storage_reads.call_count == 2, "a failed read was kept"
    assert result_storage.server_default_storage_block_id() is None
    assert storage_reads.call_count == 2
    with temporary_settings(updates={"api.url": "http://127.0.0.1:9/api"}):  # another server: its own read
        assert result_storage.server_default_storage_block_id() is None  # unreachable: not kept
    assert storage_reads.call_count == 3
