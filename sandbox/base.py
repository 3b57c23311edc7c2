"""Local provider emulators: the shared machinery.

An :class:`Emulator` holds a provider's state and answers ``httpx.Request`` objects with
``httpx.Response`` objects shaped as the provider documents them. The same object serves
two ways:

* in tests, as an ``httpx.MockTransport`` (``emulator.transport()``), no sockets at all;
* for the demo and end-to-end runs, as a real HTTP server on loopback (``emulator.serve()``),
  so a connector can be pointed at it by base URL in its credentials block.

Faults are injected per emulator (Python API or ``POST /__sandbox/faults``):

* ``status``   answer with a given status/body/headers without processing (e.g. 503, 429 + Retry-After);
* ``latency``  sleep, then process normally;
* ``timeout``  never answer (MockTransport raises ``httpx.ReadTimeout``; the server stalls then drops);
* ``drop``     process the request (the write COMMITS), then lose the response;
* ``late``     lose the response at once, and process the request (the write COMMITS) ``delay`` seconds
  LATER, in the background: a provider that was still working on a request the client gave up on.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import httpx

FaultKind = Literal["status", "latency", "timeout", "drop", "late"]


@dataclass
class Fault:
    """One injected misbehaviour, consumed ``times`` times by matching requests."""

    kind: FaultKind
    method: str | None = None
    path: str | None = None  # regex searched in the request path
    contains: str | None = None  # regex searched in the path and the body (e.g. one intent's key)
    times: int = 1
    status: int = 503
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    def matches(self, request: httpx.Request) -> bool:
        """Whether this fault applies to ``request``."""
        if self.method and request.method.upper() != self.method.upper():
            return False
        if self.contains and not re.search(
            self.contains, request.url.path + "\n" + request.content.decode("utf-8", "replace")
        ):
            return False
        return not (self.path and not re.search(self.path, request.url.path))


class DroppedResponse(Exception):
    """Raised internally when a committed request's response must be lost."""


Route = tuple[str, re.Pattern[str], Callable[..., httpx.Response]]


class Emulator:
    """Base class: routing, fault injection, request log, and serving."""

    name: str = "emulator"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._faults: list[Fault] = []
        self._routes: list[Route] = []
        self.requests: list[httpx.Request] = []
        self._server: ThreadingHTTPServer | None = None
        self.register_routes()

    # -- to be provided by providers -------------------------------------------------------
    def register_routes(self) -> None:
        """Subclasses call :meth:`route` for each endpoint they emulate."""

    def reset(self) -> None:
        """Forget all state and faults."""
        with self._lock:
            self._faults.clear()
            self.requests.clear()

    # -- routing ---------------------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Callable[..., httpx.Response]) -> None:
        """Register ``handler(request, **groups)`` for ``method`` and a full-match path regex."""
        self._routes.append((method.upper(), re.compile(pattern), handler))

    def inject(self, fault: Fault) -> None:
        """Queue a fault for matching requests."""
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, request: httpx.Request) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(request):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request, applying faults. Raises httpx errors for timeout/drop faults."""
        request.read()
        with self._lock:
            self.requests.append(request)
        fault = self._take_fault(request)
        if fault is not None:
            if fault.kind == "status":
                return json_response(fault.status, fault.body, headers=fault.headers)
            if fault.kind == "latency":
                time.sleep(fault.delay)
            if fault.kind == "timeout":
                time.sleep(fault.delay)
                raise httpx.ReadTimeout("emulated timeout", request=request)
            if fault.kind == "late":
                threading.Timer(fault.delay, self._commit_late, args=(request,)).start()
                raise httpx.ReadTimeout("emulated timeout; the request commits later", request=request)
        response = self._dispatch(request)
        if fault is not None and fault.kind == "drop":
            raise httpx.ReadTimeout("emulated dropped response after commit", request=request)
        return response

    def _commit_late(self, request: httpx.Request) -> None:
        with contextlib.suppress(Exception):  # a late commit has no one to answer
            self._dispatch(request)

    def _dispatch(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        allowed = False
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            allowed = True
            if method == request.method.upper():
                with self._lock:
                    return handler(request, **match.groupdict())
        if allowed:
            return json_response(405, {"error": "method not allowed"})
        return self.not_found(request)

    def not_found(self, request: httpx.Request) -> httpx.Response:
        """Answer for an unknown path; providers override to match their error shape."""
        return json_response(404, {"error": f"no route for {request.method} {request.url.path}"})

    def transport(self) -> httpx.MockTransport:
        """An in-process transport for ``httpx.Client(transport=...)``."""
        return httpx.MockTransport(self.handle)

    # -- serving on loopback ---------------------------------------------------------------
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start a threaded HTTP server on loopback; returns its base URL."""
        if host not in {"127.0.0.1", "localhost", "::1"}:
            raise ValueError("emulators only listen on loopback")
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = f"http://{self.headers.get('Host', host)}{self.path}"
                request = httpx.Request(self.command, url, headers=dict(self.headers.items()), content=body)
                if request.url.path == "/__sandbox/faults" and self.command == "POST":
                    emulator.inject(Fault(**json.loads(body)))
                    response = json_response(201, {"ok": True})
                elif request.url.path == "/__sandbox/reset" and self.command == "POST":
                    emulator.reset()
                    response = json_response(200, {"ok": True})
                else:
                    try:
                        response = emulator.handle(request)
                    except httpx.TimeoutException:
                        self.close_connection = True
                        with contextlib.suppress(OSError):
                            self.connection.shutdown(2)
                        return
                payload = response.read()
                self.send_response(response.status_code)
                for key, value in response.headers.items():
                    if key.lower() not in {"content-length", "transfer-encoding", "connection"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                # The client may be gone (killed mid-call); what it asked for is committed all the same.
                with contextlib.suppress(OSError):
                    self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name=f"{self.name}-emulator", daemon=True).start()
        bound_port = server.server_address[1]
        return f"http://{host}:{bound_port}"

    def shutdown(self) -> None:
        """Stop the loopback server, if any."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def json_response(status: int, body: Any = None, *, headers: dict[str, str] | None = None) -> httpx.Response:
    """An ``httpx.Response`` with a JSON body (or no body for ``None``)."""
    if body is None:
        return httpx.Response(status, headers=headers or {})
    return httpx.Response(status, json=body, headers=headers or {})


def request_json(request: httpx.Request) -> Any:
    """The JSON body of a request, or ``None`` when empty."""
    raw = request.content
    return json.loads(raw) if raw else None
