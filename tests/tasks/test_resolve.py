"""Connector resolution in a fresh worker process: credentials load by block name, never as parameters."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from blocks.hubspot import HubSpotCredentials
from connectors.errors import NotConfigured
from tasks.resolve import load_credentials
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_a_fresh_process_loads_a_saved_block_by_name(prefect_server: str) -> None:
    """A worker has imported nothing yet: loading must register the block class itself."""
    name = f"hs-{uuid.uuid4().hex[:8]}"
    HubSpotCredentials(private_app_token=SecretStr("pat-canary-123")).save(name)
    code = (
        "from tasks.resolve import load_credentials;"
        f"block = load_credentials('hubspot', {name!r});"
        "print(type(block).__name__, block.private_app_token)"
    )
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "HubSpotCredentials **********"


def test_a_missing_block_is_not_configured() -> None:
    with pytest.raises(NotConfigured, match="could not be loaded"):
        load_credentials("salesforce", f"missing-{uuid.uuid4().hex[:8]}")
    with pytest.raises(NotConfigured):
        load_credentials("pipedrive", "x")


def test_the_connector_gets_the_blocks_client(engine: Any, tenant: str) -> None:
    """Execution's connector sends through ``block.get_client()``: base URL, the grant's auth, timeouts."""
    from blocks.auth import RefreshTokenAuth
    from fulfill.db import transaction
    from fulfill.tenants import configure
    from tasks.resolve import CONNECT_TIMEOUT, READ_TIMEOUT, clear_cache, resolve_connector

    name = f"hs-{uuid.uuid4().hex[:8]}"
    HubSpotCredentials(
        auth_mode="oauth", client_id="c", client_secret=SecretStr("s"), refresh_token=SecretStr("r")
    ).save(name)
    with transaction(engine) as session:
        configure(session, tenant, actor="test", crm_provider="hubspot", crm_block=name)
    clear_cache()
    connector: Any = resolve_connector(tenant, "crm.create_task")
    client: httpx.Client = connector._http.client
    assert isinstance(client.auth, RefreshTokenAuth) and connector._http.auth is client.auth
    assert str(client.base_url).rstrip("/") == "https://api.hubapi.com"
    assert client.timeout == httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    clear_cache()
