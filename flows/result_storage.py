"""Prefect's read of the server's default result storage, made once a minute instead of for every run.

With ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK`` unset, Prefect's engine asks its server for the default
result storage (``GET /admin/storage``) for every flow run and again for every task run: two API calls
per intent for a setting an administrator changes rarely (``PUT /admin/storage``). In a process that
runs many intents — a warm executor, the in-process service — a read that succeeded answers for
:data:`READ_SECONDS`; a failed one (Prefect then falls back to its local storage path) is not kept, so
the next run asks again. Reads are kept per Prefect API URL. With the setting set (production: a shared
S3 block, docs/operations.md) Prefect never asks and this changes nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from uuid import UUID

import httpx
from prefect import results
from prefect.client.orchestration import get_client
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import get_current_settings

#: How long a read of the server's default result storage answers for the next runs.
READ_SECONDS = 60.0
#: Prefect's function that this module stands in for (not exported by Prefect).
PREFECTS_READ = "_read_server_default_result_storage_block_id"

#: Prefect's own read, as this module found it (tests that compare with Prefect's path put it back).
PREFECTS_OWN: Callable[[], UUID | None] = getattr(results, PREFECTS_READ)

_lock = threading.Lock()
_read: dict[str | None, tuple[float, UUID | None]] = {}  # API URL → (when, block id)


def server_default_storage_block_id() -> UUID | None:
    """The server's default result storage block id (``None``: none set, or the read failed)."""
    url = get_current_settings().api.url
    with _lock:
        known = _read.get(url)
    if known is not None and time.monotonic() - known[0] < READ_SECONDS:
        return known[1]
    try:
        configuration = get_client(sync_client=True).read_server_default_result_storage()
    except (PrefectHTTPStatusError, httpx.HTTPError, RuntimeError, ValueError):
        return None  # Prefect's own fallback: the local storage path; asked again next run
    with _lock:
        _read[url] = (time.monotonic(), configuration.default_result_storage_block_id)
    return configuration.default_result_storage_block_id


def read_once_a_minute() -> None:
    """Have Prefect's engine in this process take the server's default result storage from
    :func:`server_default_storage_block_id` (for the rest of the process; calling it again is harmless)."""
    setattr(results, PREFECTS_READ, server_default_storage_block_id)
