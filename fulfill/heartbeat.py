"""The lease heartbeat: a live executor renews its lease while it works, so only a dead one loses it.

A lease lasts :data:`~fulfill.executions.DEFAULT_LEASE_SECONDS` (15 s). While a block of leased work
runs — the steps of an attempt, an undo — :func:`keep_alive` renews it every
:data:`~fulfill.executions.HEARTBEAT_SECONDS` on a daemon thread, each renewal in its own short
transaction, also while the work waits on a slow provider call. An executor that dies (SIGKILL, host
lost) stops beating; its lease runs out within 15 s and the reconciler takes the execution over.

The thread stops by itself once the lease is lost (cancelled and settled, finished, taken over). A
failed renewal (the database briefly unreachable) is logged and tried again at the next beat, never
raised: the work itself finds out at its next fenced write whether it still owns the execution.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Engine

from fulfill import executions
from fulfill.db import get_engine, transaction
from fulfill.executions import DEFAULT_LEASE_SECONDS, HEARTBEAT_SECONDS, Lease

log = logging.getLogger(__name__)

#: How long leaving :func:`keep_alive` waits for a renewal already under way (a stopped heartbeat
#: otherwise ends at once). A renewal stuck on an unreachable database is left behind (daemon thread):
#: it changes nothing once the work has finished, since a finished lease cannot be renewed.
JOIN_SECONDS = 5.0


class Heartbeat:
    """Renews one lease every ``every`` seconds on a daemon thread, from :meth:`start` until :meth:`stop`
    or until the lease is lost.

    Attributes:
        beats: Renewals that succeeded so far.
        lost: Set once a renewal found the lease lost (the thread has stopped then).
    """

    def __init__(
        self,
        lease: Lease,
        *,
        every: float = HEARTBEAT_SECONDS,
        lease_seconds: int = DEFAULT_LEASE_SECONDS,
        engine: Engine | None = None,
    ) -> None:
        if every <= 0:
            raise ValueError(f"every: must be more than 0 seconds, not {every}")
        if lease_seconds <= every:
            raise ValueError(f"lease_seconds: must be longer than every ({every} s), not {lease_seconds}")
        self.lease = lease
        self.every = every
        self.lease_seconds = lease_seconds
        self.beats = 0
        self.lost = threading.Event()
        self._engine = engine
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"lease-heartbeat {lease.action_intent_id}", daemon=True
        )

    def start(self) -> None:
        """Start beating (the engine is resolved here, in the caller's thread and settings)."""
        self._engine = self._engine or get_engine()
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and wait for the thread: at once, unless a renewal is under way."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(JOIN_SECONDS)
            if self._thread.is_alive():
                log.warning(
                    "lease heartbeat of %s still busy %.0f s after stop; left behind",
                    self.lease.action_intent_id,
                    JOIN_SECONDS,
                )

    def beat(self) -> bool:
        """One renewal, in its own transaction. ``False`` once the lease is lost; an error counts as alive."""
        try:
            with transaction(self._engine) as session:
                alive = executions.heartbeat(session, self.lease, lease_seconds=self.lease_seconds)
        except Exception:  # never raised: a missed beat is survivable, the next one retries
            log.warning(
                "lease heartbeat of %s failed; retrying in %.1f s",
                self.lease.action_intent_id,
                self.every,
                exc_info=True,
            )
            return True
        if alive:
            self.beats += 1
        else:
            self.lost.set()
            log.info(
                "lease of %s (attempt %d) is no longer held; heartbeat stops",
                self.lease.action_intent_id,
                self.lease.attempt,
            )
        return alive

    def _run(self) -> None:
        while not self._stopping.wait(self.every):
            if not self.beat():
                return


@contextmanager
def keep_alive(
    lease: Lease,
    *,
    every: float = HEARTBEAT_SECONDS,
    lease_seconds: int = DEFAULT_LEASE_SECONDS,
    engine: Engine | None = None,
) -> Iterator[Heartbeat]:
    """Keep ``lease`` renewed while the block runs; the heartbeat stops (and is joined) when it ends.

    Args:
        lease: The lease the block works under.
        every: Seconds between renewals.
        lease_seconds: How far each renewal extends the lease (longer than ``every``).
        engine: The database (default: ``get_engine()``).
    """
    heartbeat = Heartbeat(lease, every=every, lease_seconds=lease_seconds, engine=engine)
    heartbeat.start()
    try:
        yield heartbeat
    finally:
        heartbeat.stop()
