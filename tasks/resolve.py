"""Find the connector that fulfils an action for a tenant, with its credentials block.

Credentials are loaded by block name INSIDE the worker (never passed as flow parameters) and
cached per process for a few minutes so a token survives across steps and runs.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx

from connectors.base import Connector
from connectors.errors import NotConfigured
from connectors.internal import InternalConnector
from connectors.registry import ACTION_FAMILY, block_class, build_connector
from fulfill.db import get_engine, transaction
from fulfill.settings import load_settings
from fulfill.storage import LocalObjectStore, ObjectStore, S3ObjectStore
from fulfill.tenants import get_tenant

CACHE_SECONDS = 300.0
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
_cache: dict[tuple[str, ...], tuple[float, Connector]] = {}
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget cached connectors (tests; after rotating credentials)."""
    with _cache_lock:
        _cache.clear()


def object_store(storage_block: str | None) -> ObjectStore:
    """Local directory under the data dir by default; an S3 bucket when the tenant names a block."""
    if storage_block:
        from prefect_aws.s3 import S3Bucket

        return S3ObjectStore.from_block(S3Bucket.load(storage_block))
    return LocalObjectStore(Path(load_settings().data_dir) / "objects")


def load_credentials(provider: str, block_name: str) -> Any:
    """Load a tenant's credentials block (raises NotConfigured when it does not exist)."""
    try:
        return block_class(provider).load(block_name)
    except (ValueError, KeyError) as exc:
        raise NotConfigured(f"credentials block {block_name!r} for {provider} could not be loaded") from exc


def resolve_connector(tenant_id: str, action_type: str) -> Connector:
    """The connector for ``action_type`` configured for ``tenant_id``.

    Raises:
        NotConfigured: the tenant has no provider or credentials block for this action family.
    """
    family = ACTION_FAMILY[action_type]
    settings = load_settings()
    with transaction(get_engine()) as session:
        tenant = get_tenant(session, tenant_id)
        config = None if tenant is None else tenant.model_dump()
    if family == "internal":
        storage = (config or {}).get("storage_block")
        key: tuple[str, ...] = ("internal", settings.database_url, str(settings.data_dir), storage or "")
        return _cached(key, lambda: InternalConnector(get_engine(), object_store(storage)))
    provider = (config or {}).get(f"{family}_provider")
    block_name = (config or {}).get(f"{family}_block")
    if not provider or not block_name:
        raise NotConfigured(f"tenant {tenant_id} has no {family} connector configured")

    def build() -> Connector:
        credentials = load_credentials(provider, block_name)
        # The block hands out the client: base URL and its grant's auth (token cache, refresh on 401).
        timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
        return build_connector(provider, credentials, timeout=timeout)

    return _cached((family, tenant_id, provider, block_name), build)


def _cached(key: tuple[str, ...], build: Any) -> Connector:
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1]
    connector: Connector = build()
    with _cache_lock:
        _cache[key] = (now, connector)
    return connector
