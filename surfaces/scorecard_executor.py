"""One executor process of ``fulfill scorecard``: runs ``execute-intent`` flow runs in-process and dies
on purpose at a recovery point.

Started by :mod:`surfaces.scorecard` (``python -m surfaces.scorecard_executor``). It reads one JSON
line per flow run on stdin — ``{"flow_run_id", "action_intent_id", "kill_at", "drop_in"}`` — executes the run
of the ``execute-intent`` deployment that the intake created (the same flow run, in this already
running interpreter, like a worker that does not start a process per run) and answers one JSON line
on stdout. When ``kill_at`` names a recovery point, the process SIGKILLs ITSELF when that intent's
execution reaches it: no hook, no ``finally``, no flush — what a power cut or the OOM killer does.
When ``drop_in`` names a transaction (:class:`DropIn`), the database connection is closed under it
once; the answer lists where a connection dropped.

With ``--reconcile SECONDS`` it runs the reconciler instead (``reconcile`` watching for that long),
as the ``reconcile`` deployment does in production.

Every request this process sends to a provider emulator is appended to ``FULFILL_SCORECARD_LOG``
(time, intent, method, path) before it is sent, so the scorecard can tell when a call was made.
Nothing here changes what the engine decides: the points are wrappers around the flow's own steps.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from enum import StrEnum
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import httpx


class KillPoint(StrEnum):
    """Where an executor dies, in the order an execution passes them."""

    AFTER_ADMIT = "after_admit"  # admitted (signature verified again), nothing claimed
    AFTER_CLAIM = "after_claim"  # the lease is taken, no step started
    AFTER_CHECKPOINT = "after_checkpoint"  # CALL_STARTED recorded with the key; nothing sent
    DURING_CALL = "during_call"  # the request is at the provider, which commits after the process died
    AFTER_COMMIT = "after_commit"  # the provider committed and answered; the step is not recorded
    DURING_COMPENSATION = "during_compensation"  # an undo reached the provider; not recorded
    DURING_FINISH = "during_finish"  # inside the outcome's transaction, before it commits


class DropIn(StrEnum):
    """The transaction (a function of :mod:`fulfill.executions`) inside which the database connection drops.

    The connection is closed under the first statement that function sends — the server went away
    mid-transaction — so the transaction fails and rolls back; the executor lives on.
    """

    CLAIM = "claim"
    CHECKPOINT = "checkpoint"
    STEP_SUCCEEDED = "step_succeeded"
    FINISH = "finish"


CURRENT: dict[str, Any] = {
    "intent": None,
    "kill_at": None,
    "armed": False,
    "phase": "step",
    "drop_in": None,  # a DropIn: where this flow run's database connection drops, once
    "dropping": None,  # the thread whose next statement meets the dropped connection
    "dropped": [],  # where it did drop
}
_LOG_FD: int | None = None
_PROVIDER_PORTS: set[int] = set()


def die() -> None:
    """SIGKILL this process now (nothing after this line runs)."""
    os.kill(os.getpid(), signal.SIGKILL)


def die_during(intent: str | None) -> None:
    """SIGKILL this process if it is still executing ``intent``."""
    if CURRENT["intent"] == intent:
        die()


def _log_request(request: httpx.Request) -> None:
    if _LOG_FD is None or request.url.port not in _PROVIDER_PORTS:
        return
    line = json.dumps(
        {
            "t": time.time(),
            "intent": CURRENT["intent"],
            "method": request.method,
            "port": request.url.port,
            "path": request.url.path,
            "phase": CURRENT["phase"],
            "pid": os.getpid(),
        }
    )
    os.write(_LOG_FD, (line + "\n").encode())


def _at(point: KillPoint) -> bool:
    return bool(CURRENT["kill_at"] == point)


def install(log_path: str | None, provider_urls: list[str]) -> None:
    """Wrap the flow's steps with the kill points and log provider requests. Idempotent per process."""
    global _LOG_FD
    import flows.execute_intent as flow_module
    from fulfill import executions
    from tasks.admit import Rejected
    from tasks.claim import ClaimRefused

    _drop_connections()
    if log_path:
        _LOG_FD = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    _PROVIDER_PORTS.update(p for url in provider_urls if (p := urlsplit(url).port) is not None)

    original = httpx.HTTPTransport.handle_request

    def handle_request(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        # The transport is the last step before the network: a request the deadline or a kill switch
        # refused in the client's auth flow never gets here, so only requests really sent are logged.
        _log_request(request)
        if (
            CURRENT["armed"]
            and _at(KillPoint.DURING_CALL)
            and request.url.port in _PROVIDER_PORTS
            and request.method != "GET"
        ):
            # The emulator holds this request for longer, then commits. Only this intent's execution dies:
            # one that finished meanwhile (the hold went to another request) is not blamed on the next.
            threading.Timer(0.3, die_during, args=(CURRENT["intent"],)).start()
        return original(self, request)

    httpx.HTTPTransport.handle_request = handle_request  # type: ignore[method-assign]

    def wrap(module: Any, name: str, around: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        setattr(module, name, around(getattr(module, name)))

    def admit(inner: Callable[..., Any]) -> Callable[..., Any]:
        def admit(*args: Any, **kwargs: Any) -> Any:
            admission = inner(*args, **kwargs)
            if _at(KillPoint.AFTER_ADMIT) and not isinstance(admission, Rejected):
                die()
            return admission

        return admit

    def claim(inner: Callable[..., Any]) -> Callable[..., Any]:
        def claim(*args: Any, **kwargs: Any) -> Any:
            CURRENT["intent"] = args[0] if args else kwargs.get("action_intent_id")
            lease = inner(*args, **kwargs)
            if _at(KillPoint.AFTER_CLAIM) and not isinstance(lease, ClaimRefused):
                die()
            return lease

        return claim

    def checkpoint(inner: Callable[..., Any]) -> Callable[..., Any]:
        def checkpoint(*args: Any, **kwargs: Any) -> Any:
            result = inner(*args, **kwargs)
            if _at(KillPoint.AFTER_CHECKPOINT):
                die()
            CURRENT["armed"] = True
            return result

        return checkpoint

    def record_step_succeeded(inner: Callable[..., Any]) -> Callable[..., Any]:
        def record_step_succeeded(*args: Any, **kwargs: Any) -> Any:
            if _at(KillPoint.AFTER_COMMIT):
                die()
            return inner(*args, **kwargs)

        return record_step_succeeded

    def compensate_step(inner: Callable[..., Any]) -> Callable[..., Any]:
        def compensate_step(*args: Any, **kwargs: Any) -> Any:
            CURRENT["phase"] = "undo"  # undo calls are logged as such (an undo may follow an expiry)
            try:
                undone = inner(*args, **kwargs)
            finally:
                CURRENT["phase"] = "step"
            if _at(KillPoint.DURING_COMPENSATION):
                die()  # the provider undid it; the step's COMPENSATED is not recorded
            return undone

        return compensate_step

    def finish(inner: Callable[..., Any]) -> Callable[..., Any]:
        def finish(*args: Any, **kwargs: Any) -> Any:
            execution = inner(*args, **kwargs)
            if _at(KillPoint.DURING_FINISH):
                die()  # the transaction around this call never commits
            return execution

        return finish

    for name, around in (
        ("admit", admit),
        ("claim", claim),
        ("checkpoint", checkpoint),
        ("record_step_succeeded", record_step_succeeded),
        ("compensate_step", compensate_step),
    ):
        wrap(flow_module, name, around)
    wrap(executions, "finish", finish)


def _drop_connections() -> None:
    """Arm each :class:`DropIn` function to drop the connection under its first statement, when asked."""
    import sqlalchemy as sa

    from fulfill import executions
    from fulfill.db import get_engine

    def arming(name: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        def armed(*args: Any, **kwargs: Any) -> Any:
            if CURRENT["drop_in"] == name and not CURRENT["dropped"]:
                CURRENT["dropping"] = threading.get_ident()
            return inner(*args, **kwargs)

        return armed

    def drop(conn: sa.Connection, *args: Any) -> None:
        if CURRENT["dropping"] == threading.get_ident():  # not the heartbeat's statements
            CURRENT["dropping"] = None
            CURRENT["dropped"].append(CURRENT["drop_in"])
            assert conn.connection.dbapi_connection is not None
            conn.connection.dbapi_connection.close()

    for name in DropIn:
        setattr(executions, name, arming(name, getattr(executions, name)))
    sa.event.listen(get_engine(), "before_cursor_execute", drop)


def _execute(line: dict[str, Any], run: Callable[[str], Any]) -> dict[str, Any]:
    CURRENT.update(
        intent=line["action_intent_id"],
        kill_at=line.get("kill_at"),
        armed=False,
        phase="step",
        drop_in=line.get("drop_in"),
        dropped=[],
    )
    state = run(line["flow_run_id"])
    dropped = CURRENT["dropped"]
    CURRENT.update(intent=None, kill_at=None, armed=False, drop_in=None, dropped=[])
    return {"flow_run_id": line["flow_run_id"], "state": getattr(state, "type", None), "dropped": dropped}


#: Imported once by the fork server, so a replacement executor starts in milliseconds, not seconds.
PRELOAD = [
    "surfaces.scorecard_executor",
    "deployments.worker",
    "flows.execute_intent",
    "flows.maintenance",
    "flows.health",
    "prefect.flow_engine",
]


def _prepared() -> AbstractContextManager[Callable[[str], Any]]:
    """The kill points installed, then the warm worker's own way of running flow runs (``warm_runs``:
    one open Prefect client, no flow heartbeat, no suspension watch), so the scorecard tests that path."""
    from deployments.worker import warm_runs

    install(
        os.environ.get("FULFILL_SCORECARD_LOG"),
        json.loads(os.environ.get("FULFILL_SCORECARD_PROVIDERS", "[]")),
    )
    return warm_runs()


def _answer(line: dict[str, Any], run: Callable[[str], Any]) -> dict[str, Any]:
    try:
        return _execute(line, run)
    except Exception as exc:  # noqa: BLE001 — reported to the scorecard, which counts it
        return {"flow_run_id": line["flow_run_id"], "error": f"{type(exc).__name__}: {exc}"}


def serve(conn: Connection, env: dict[str, str]) -> None:
    """An executor forked by the scorecard's fork server: one flow run per message on ``conn``.

    The fork server keeps the environment of the run that started it (one per process), so each
    executor takes this run's environment (``env``) and re-reads fulfill's settings from it.
    """
    from fulfill.settings import reload_settings

    os.environ.update(env)
    reload_settings()
    with _prepared() as run:
        conn.send({"ready": os.getpid()})
        while (line := conn.recv()) is not None:
            conn.send(_answer(line, run))


def main() -> None:
    """Serve flow runs from stdin until it closes (or run the reconciler with ``--reconcile``)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--reconcile", type=float, default=None, help="watch and reconcile for this long")
    args = parser.parse_args()
    with _prepared() as run:
        if args.reconcile is not None:
            from flows.maintenance import reconcile

            reconcile(watch_seconds=args.reconcile, every_seconds=1.0)
            return
        print(json.dumps({"ready": os.getpid()}), flush=True)
        for raw in sys.stdin:
            if raw.strip():
                print(json.dumps(_answer(json.loads(raw), run)), flush=True)


if __name__ == "__main__":
    main()
