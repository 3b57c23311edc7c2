"""What the bench scripts share: the percentile they report and how they describe the machine."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def machine(extra: str = "") -> str:
    """One line describing this machine and interpreter (``extra`` is appended, e.g. library versions)."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        total_kb = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
        memory = f", {total_kb // 1024:,} MiB of memory"
    return (
        f"{os.cpu_count()} cores ({model}){memory}, {platform.system()} {platform.release()}; "
        f"{platform.python_implementation()} {platform.python_version()}{extra}"
    )


def load_note(start: float, end: float) -> str:
    """The load average around the run, and a warning when the machine was not quiet."""
    cores = os.cpu_count() or 1
    note = f"Load average (1 min) {start:.2f} at the start, {end:.2f} at the end"
    if start > 0.3 * cores:
        return note + ": **the machine was busy; replace these figures by a run on a quiet one.**"
    return note + "."


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _admin(url: str) -> Engine:
    """An AUTOCOMMIT engine on the ``postgres`` database of ``url``'s server (to create and drop databases)."""
    import sqlalchemy as sa

    server = sa.make_url(url).set(drivername="postgresql+psycopg", database="postgres")
    return sa.create_engine(server, isolation_level="AUTOCOMMIT")


def ensure_database(url: str) -> str:
    """Create ``url``'s PostgreSQL database if it is missing; returns its URL with the psycopg driver."""
    import sqlalchemy as sa

    target = sa.make_url(url).set(drivername="postgresql+psycopg")
    admin = _admin(url)
    with admin.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database})
        if exists.first() is None:
            conn.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()
    return target.render_as_string(hide_password=False)


@contextlib.contextmanager
def fresh_prefect_database(data: Path) -> Iterator[None]:
    """A Prefect database of its own for one stack, so no earlier stack's scheduled runs are waiting in it.

    (A reused database holds every maintenance run scheduled since the last stack stopped; a new worker
    starts them all at once, one process each, and the machine is saturated for minutes.) With
    ``PREFECT_API_DATABASE_CONNECTION_URL`` set (PostgreSQL), a new database beside it, dropped after;
    else ``PREFECT_HOME`` in ``data`` (Prefect's SQLite database lives there).
    """
    import uuid

    import sqlalchemy as sa

    url = os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL", "")
    saved = {name: os.environ.get(name) for name in ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_HOME")}
    admin = None
    name = ""
    if url.startswith("postgresql"):
        base = sa.make_url(url)
        name = f"{base.database}_{uuid.uuid4().hex[:8]}"
        admin = _admin(url)
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = base.set(database=name).render_as_string(
            hide_password=False
        )
    else:
        os.environ["PREFECT_HOME"] = str(data / "prefect-home")
    try:
        yield
    finally:
        for variable, value in saved.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def publish(lines: list[str], write: Path | None) -> None:
    """Print a Markdown section, and write it to ``write`` when given (``bench/run_all.py`` collects it)."""
    text = "\n".join(lines)
    print(text)
    if write is not None:
        write.write_text(text + "\n", encoding="utf-8")


def machine_cpu() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks (``/proc/stat``'s first line):
    the busy share of an interval is the difference of two readings' busy over that of their totals."""
    values = [int(word) for word in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    total = sum(values[:8])  # user … steal (guest time is already in user)
    return total - idle, total


def cpu_seconds_by_group(groups: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each named process group, and by PostgreSQL's processes.

    ``groups`` maps a name to a process-group id (``fulfill up`` starts each child in its own group, so a
    worker's fork server and executors count with it). Read from ``/proc``, with each process's reaped
    children: a PostgreSQL backend that ended between two readings counts in its postmaster's (without
    them, backends that came and went were lost and the difference could even be negative). Take the
    difference of two readings around the work.
    """
    tick = os.sysconf("SC_CLK_TCK")
    names = {pgid: name for name, pgid in groups.items()}
    used = dict.fromkeys([*groups, "PostgreSQL"], 0.0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited meanwhile
            continue
        command, fields = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        seconds = sum(int(value) for value in fields[11:15]) / tick  # utime, stime, cutime, cstime
        name = names.get(int(fields[2]))  # pgrp
        if name is None and command.startswith("postgres"):
            name = "PostgreSQL"
        if name is not None:
            used[name] += seconds
    return used
