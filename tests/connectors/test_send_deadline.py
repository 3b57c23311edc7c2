"""The approval's expiry at send time (``connectors.http.send_deadline``): no provider request starts
after the deadline — token fetch included — and none stays outstanding past it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from blocks.auth import ClientCredentialsAuth, StaticTokenAuth
from connectors.base import ProviderRequest
from connectors.errors import OutcomeUnknown
from connectors.http import DeadlinePassed, send, send_deadline

API = "https://api.example"
TOKEN_URL = "https://login.example/token"
WRITE = ProviderRequest("POST", f"{API}/things", "create thing", True, body={"a": 1})
READ = ProviderRequest("GET", f"{API}/things/1", "read thing", False)


def oauth() -> ClientCredentialsAuth:
    return ClientCredentialsAuth(
        TOKEN_URL, client_id="c", client_secret=SecretStr("s"), provider="Example", default_lifetime=600
    )


class Recorder:
    """A MockTransport handler: a token endpoint taking ``token_delay`` seconds, an API answering at once."""

    def __init__(self, token_delay: float = 0.0) -> None:
        self.token_delay = token_delay
        self.requests: list[httpx.Request] = []
        self.api_started: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if str(request.url) == TOKEN_URL:
            time.sleep(self.token_delay)
            return httpx.Response(200, json={"access_token": "tok", "expires_in": 600})
        self.api_started.append(time.monotonic())
        return httpx.Response(201, json={"id": "1"})


def test_a_slow_token_endpoint_does_not_let_the_write_start_after_the_deadline() -> None:
    provider = Recorder(token_delay=0.6)
    with (
        httpx.Client(transport=httpx.MockTransport(provider)) as client,
        send_deadline(0.3),
        pytest.raises(DeadlinePassed, match="before the POST request could be sent"),
    ):
        send(client, WRITE, auth=oauth(), provider="Example")
    assert [str(r.url) for r in provider.requests] == [TOKEN_URL]  # the write never left


def test_nothing_is_sent_once_the_deadline_has_passed() -> None:
    provider = Recorder()
    with (
        httpx.Client(transport=httpx.MockTransport(provider)) as client,
        send_deadline(0.0),
        pytest.raises(DeadlinePassed, match="token request"),
    ):
        send(client, WRITE, auth=oauth(), provider="Example")
    assert provider.requests == []


def test_every_timeout_is_capped_by_the_time_left() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.extensions["timeout"]))
        if str(request.url) == TOKEN_URL:
            return httpx.Response(200, json={"access_token": "tok"})
        return httpx.Response(201, json={})

    timeout = httpx.Timeout(30.0, connect=5.0)
    with httpx.Client(transport=httpx.MockTransport(handler), timeout=timeout) as client:
        with send_deadline(2.0):
            send(client, WRITE, auth=oauth(), provider="Example")
        send(client, WRITE, auth=StaticTokenAuth(SecretStr("t")), provider="Example")  # no deadline
    assert len(seen) == 3
    for capped in seen[:2]:  # the token request and the write
        assert set(capped) == {"connect", "read", "write", "pool"}
        assert all(0 < value <= 2.0 for value in capped.values())
    assert seen[2] == {"connect": 5.0, "read": 30.0, "write": 30.0, "pool": 30.0}


class Silent:
    """A loopback listener that accepts connections, reads the request and never answers."""

    def __init__(self) -> None:
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.server.settimeout(0.1)
        self.connections: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}"

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                continue
            self.connections.append(connection)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        for connection in self.connections:
            connection.close()
        self.server.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    served = Silent()
    yield served
    served.close()


def test_a_write_in_flight_is_cut_at_the_deadline_and_is_outcome_unknown(silent: Silent) -> None:
    """The provider never answers: the write is cut at the deadline (not after the 30 s read timeout),
    and, as it may have been received, it is an unknown outcome — never a success."""
    request = ProviderRequest("POST", f"{silent.url}/things", "create thing", True, body={"a": 1})
    with httpx.Client(timeout=httpx.Timeout(30.0)) as client, send_deadline(0.5):
        started = time.monotonic()
        with pytest.raises(OutcomeUnknown, match="approval expired"):
            send(client, request, auth=StaticTokenAuth(SecretStr("t")), provider="Example")
        elapsed = time.monotonic() - started
    assert len(silent.connections) == 1  # it was in flight
    assert 0.4 <= elapsed < 5.0, elapsed  # cut at the deadline, far before the client's own timeout


def test_a_read_in_flight_is_cut_at_the_deadline_as_expired(silent: Silent) -> None:
    request = ProviderRequest("GET", f"{silent.url}/things/1", "read thing", False)
    with httpx.Client(timeout=httpx.Timeout(30.0)) as client, send_deadline(0.5):
        started = time.monotonic()
        with pytest.raises(DeadlinePassed, match="nothing was written"):
            send(client, request, auth=StaticTokenAuth(SecretStr("t")), provider="Example")
        assert time.monotonic() - started < 5.0
