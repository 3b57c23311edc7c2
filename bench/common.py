"""What the bench scripts share: the percentile they report and how they describe the machine."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import socket
from collections.abc import Sequence
from pathlib import Path


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
