"""Every issue-13 figure in one command: P1, P2, P3, P5 and P6, written into docs/benchmarks.md.

    ./run fulfill --help >/dev/null        # make sure .venv/ exists
    .venv/bin/python bench/run_all.py [--postgres postgresql://postgres@127.0.0.1:5432] [--quick]

Runs each bench script in turn, as its own process, on a quiet machine (it refuses to start when the
1-minute load average is above 1.0 per core, unless ``--anyway``; each section also reports the load
around its own run). Prefect's server runs on PostgreSQL (a fresh database per stack, beside
``bench_prefect`` on ``--postgres``), as the goals are stated; the ledger on SQLite, and also on
PostgreSQL where the section says so. Then it replaces everything below the marker line in
``docs/benchmarks.md`` (``--doc``) with the sections, each with the exact command it ran: the
hand-written part above the marker (the machine, the status API, what the figures mean) is kept.
``--quick`` runs fewer repetitions, for trying the bench itself; its figures are not for the docs.
Takes 15–40 minutes on the 2-core machines, by their CPU (P3 about half: six stacks, each with its bare baseline).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ensure_database

HERE = Path(__file__).resolve().parent
MARKER = "<!-- Everything below is written by bench/run_all.py; edit the scripts, not this part. -->"


def _sections(postgres: str, quick: bool) -> list[tuple[str, list[str]]]:
    """(name, arguments) of each bench script (``--write FILE`` is added)."""
    runs, repeats = ("8", "1") if quick else ("30", "3")
    return [
        (
            "P1",
            [
                "bench_inprocess.py",
                "--runs",
                runs,
                "--prefect-database-url",
                f"{postgres.replace('postgresql://', 'postgresql+asyncpg://')}/bench_p1_prefect",
                "--profile",
                str(HERE.parent / "docs" / "profiles"),
            ],
        ),
        (
            "P2",
            [
                "bench_intake.py",
                "--sequential",
                "8" if quick else "20",
                "--burst",
                "10",
                "--burst",
                "10" if quick else "100",
                "--repeats",
                repeats,
            ],
        ),
        (
            "P3",
            [
                "bench_throughput.py",
                "--intents",
                "10" if quick else "40",
                "--repeats",
                repeats,
                "--limits",
                "1,2,4",
                "--postgres-url",
                f"{postgres}/bench_p3_ledger",
                "--flame",
                str(HERE.parent / "docs" / "profiles"),
            ],
        ),
        (
            "P5",
            [
                "bench_ledger.py",
                "--repeat",
                "2" if quick else "5",
                "--postgres-url",
                f"{postgres}/fulfill_bench_ledger",
            ],
        ),
        ("P6", ["bench_memory.py", "--repeat", "2" if quick else "5"]),
    ]


#: Before a section: wait (at most this long) for the previous one's load to fade, so that each section
#: starts on a machine as quiet as it can be and its "busy" note means someone else was busy.
SETTLE_SECONDS = 150


def _settle(cores: int) -> None:
    """Wait until the 1-minute load average is below 0.3 per core (as ``common.load_note`` expects)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while os.getloadavg()[0] > 0.3 * cores and time.monotonic() < deadline:
        time.sleep(5)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--postgres", default="postgresql://postgres@127.0.0.1:5432", help="server URL, no database"
    )
    parser.add_argument("--doc", type=Path, default=HERE.parent / "docs" / "benchmarks.md")
    parser.add_argument(
        "--only",
        action="append",
        help="run only this section (P1, P2, P3, P5, P6; repeatable); prints, writes nothing",
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions; not for the docs")
    parser.add_argument("--anyway", action="store_true", help="run even on a busy machine")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    if os.getloadavg()[0] > cores and not args.anyway:
        sys.exit(
            f"the machine is busy (load {os.getloadavg()[0]:.1f} on {cores} cores); wait, or pass --anyway"
        )
    postgres = args.postgres.rstrip("/")
    ensure_database(f"{postgres}/bench_prefect")
    environment = {
        **os.environ,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"{postgres.replace('postgresql://', 'postgresql+asyncpg://')}/bench_prefect",
    }
    scratch = Path(tempfile.mkdtemp(prefix="fulfill-bench-all-"))
    written: list[str] = []
    for name, arguments in _sections(postgres, args.quick):
        if args.only and name not in args.only:
            continue
        _settle(cores)
        output = scratch / f"{name}.md"
        command = [sys.executable, str(HERE / arguments[0]), *arguments[1:], "--write", str(output)]
        print(f"{name}: {' '.join(arguments)}", flush=True)
        started = time.monotonic()
        subprocess.run(command, env=environment, check=True, cwd=HERE.parent)
        print(f"{name}: {time.monotonic() - started:.0f} s", flush=True)
        written.append(output.read_text(encoding="utf-8").strip())
    if args.quick or args.only:  # the docs take a whole run only
        print("\n\n".join(written))
        return
    text = args.doc.read_text(encoding="utf-8")
    kept = text.split(MARKER, 1)[0].rstrip() + "\n\n" if MARKER in text else text.rstrip() + "\n\n"
    args.doc.write_text(kept + MARKER + "\n\n" + "\n\n".join(written) + "\n", encoding="utf-8")
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
