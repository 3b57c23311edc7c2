"""py-spy flame graphs of the stack's processes while they work, and where a process's samples went.

``record`` attaches ``py-spy record`` to each named process and its subprocesses (the warm worker's fork
server and executors) while ``work`` runs, sampling only threads that hold the GIL (Python at work, not
waiting), and writes an interactive SVG flame graph per process, plus its collapsed stacks (py-spy's
``raw`` format) for ``shares``. py-spy needs to read the processes' memory: root, or
``kernel.yama.ptrace_scope`` 0; where it cannot, ``record`` says why and the bench goes on without them.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

#: Samples per second: enough for shares of a few per cent over a repetition, little load on 2 cores.
RATE = 50


def py_spy() -> str | None:
    """The py-spy beside this interpreter (the dev group installs it), else one on ``PATH``."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pids: dict[str, int], out_dir: Path, work: Callable[[], object]) -> dict[str, Path] | str:
    """Run ``work`` with py-spy sampling each process of ``pids``; returns each name's SVG flame graph
    (``<name>.svg``, with ``<name>.collapsed``: its collapsed stacks), or why there are none."""
    spy = py_spy()
    if spy is None:
        work()
        return "py-spy is not installed"
    out_dir.mkdir(parents=True, exist_ok=True)
    spies: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    for name, pid in pids.items():
        for form, suffix in (("flamegraph", ".svg"), ("raw", ".collapsed")):
            path = out_dir / f"{name}{suffix}"
            path.unlink(missing_ok=True)  # a graph of an earlier run is never taken for this one's
            command = [
                spy,
                "record",
                "--pid",
                str(pid),
                "--subprocesses",
                "--nonblocking",
                "--function",
                "--gil",
            ]
            command += ["--rate", str(RATE), "--format", form, "--output", str(path)]
            spies.append(
                (name, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT), path)
            )
    try:
        work()
    finally:
        for _, process, _ in spies:
            process.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        outputs = {
            path: process.communicate(timeout=60)[0].decode(errors="replace") for _, process, path in spies
        }
    missing = [
        f"{path.name}: {output.strip()[-200:]}" for path, output in outputs.items() if not path.exists()
    ]
    if missing:
        return "py-spy wrote nothing (" + "; ".join(missing) + ")"
    return {name: path for name, _, path in spies if path.suffix == ".svg"}


#: A frame of py-spy's collapsed stacks: ``function (file)`` (``--function``: no line numbers).
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*)\)$")


#: Where a sample that no API route or service claims was, by its innermost frame's file (first match).
_LAYERS = (
    (("sqlalchemy/", "asyncpg/", "greenlet"), "SQLAlchemy and asyncpg, not under a route in the sample"),
    (("prefect/server/events/",), "Prefect's event stream and its messaging"),
    (("uvicorn/", "starlette/", "fastapi/", "h11/", "anyio/"), "HTTP: uvicorn, starlette, FastAPI"),
    (("pydantic",), "pydantic, not under a route in the sample"),
    (("docket/", "redis/", "fakeredis/"), "docket: the background tasks' queue (in memory) and their runs"),
    (("asyncio/", "selectors.py", "socket.py"), "the event loop (asyncio) and its sockets"),
)


def _what(stack: str) -> str:
    """What Prefect's server was doing in one sample: the API route (its handler in ``prefect/server/api``),
    else the background service (``prefect/server/services`` or the events' services), else the layer of
    the innermost frame (:data:`_LAYERS`): SQLAlchemy's async work runs in greenlets, whose samples py-spy
    shows without the request that started them."""
    innermost = ""
    service: str | None = None
    for frame in stack.split(";"):
        match = _FRAME.match(frame)
        if match is None:
            continue
        file, function = match["file"], match["function"]
        innermost = file
        if "prefect/server/api/" in file and not file.endswith("/server.py"):
            return f"API `{function}`"
        if service is None and (
            "prefect/server/services/" in file or "prefect/server/events/services/" in file
        ):
            service = f"service `{Path(file).stem}`"
    if service is not None:
        return service
    for prefixes, layer in _LAYERS:
        if any(prefix in innermost for prefix in prefixes):
            return layer
    return "other: threads, the rest of Prefect and its libraries"


def shares(raw: Path, top: int = 12) -> tuple[int, list[tuple[str, float]]]:
    """The samples of a collapsed-stacks file, and the largest shares of them by what the server was doing
    (:func:`_what`), the rest summed as one last line."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[_what(stack)] += int(count)
    total = sum(counts.values())
    if not total:
        return 0, []
    ranked = counts.most_common()
    rows = [(what, count / total) for what, count in ranked[:top]]
    if rest := sum(count for _, count in ranked[top:]):
        rows.append((f"{len(ranked) - top} more", rest / total))
    return total, rows
