"""Two processes execute the same intent at the same moment: one effect, one ACTION_EXECUTED.

Real OS processes, each running the real flow against the shared Prefect test server and the
shared database (PostgreSQL and SQLite); no mocks. The claim's row lock decides the winner.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from fulfill import ledger
from fulfill.db import transaction
from fulfill.tables import InternalTask
from tests.conftest import REPO, VECTORS


@pytest.mark.parametrize("round_", range(2))
def test_two_processes_same_intent_one_effect(
    engine: Any,
    database_url: str,
    prefect_server: str,
    make_intent: Any,
    tenant: str,
    tmp_path: Path,
    round_: int,
) -> None:
    intent = make_intent("internal.create_task", {"title": f"Race {round_}"})
    intent_file = tmp_path / "intent.json"
    intent_file.write_text(json.dumps(intent))
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {
        **os.environ,
        "FULFILL_DATABASE_URL": database_url,
        "FULFILL_APPROVAL_KEYS": str(VECTORS / "keys.json"),
        "FULFILL_DATA_DIR": str(tmp_path / "data"),
        "PREFECT_API_URL": prefect_server,
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
        "PYTHONPATH": str(REPO),
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.flows.race_worker", str(intent_file), str(barrier), name],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    deadline = time.monotonic() + 120
    while not all((barrier / f"{n}.ready").exists() for n in ("a", "b")):
        assert time.monotonic() < deadline, "workers did not start"
        assert all(w.poll() is None for w in workers), [w.communicate() for w in workers]
        time.sleep(0.01)
    (barrier / "go").touch()
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err[-3000:]
        line = next(line for line in out.splitlines() if line.startswith("RESULT "))
        results.append(json.loads(line.removeprefix("RESULT ")))

    assert sorted(r["executed"] for r in results) == [False, True], results
    loser = next(r for r in results if not r["executed"])
    assert loser["reason"] in {"BUSY", "ALREADY_FINISHED"}
    with transaction(engine) as session:
        rows = session.exec(
            select(InternalTask).where(InternalTask.action_intent_id == intent["action_intent_id"])
        )
        assert len(list(rows)) == 1, "exactly one effect"
        events = [
            e.event_type for e in ledger.entries_for_intent(session, tenant, intent["action_intent_id"])
        ]
        assert events.count("ACTION_EXECUTED") == 1
        assert events.count("EXECUTION_STARTED") == 1
        assert events.count("INTENT_RECEIVED") == 1
        assert all(report.ok for report in ledger.verify_chains(session, [tenant]))
