"""The suite itself cannot reach a non-loopback address (see tests/conftest.py)."""

from __future__ import annotations

import socket

import httpx
import pytest


def test_non_loopback_connections_are_refused() -> None:
    with pytest.raises(ConnectionRefusedError, match="loopback"), socket.socket() as sock:
        sock.connect(("192.0.2.1", 443))  # TEST-NET-1: never routed
    with pytest.raises(httpx.ConnectError):
        httpx.get("http://192.0.2.1/", timeout=1)


def test_loopback_is_allowed() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.socket() as client:
            client.connect(server.getsockname())
