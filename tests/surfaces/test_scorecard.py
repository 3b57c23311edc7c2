"""``fulfill scorecard`` at CI size: real executor processes SIGKILLed at recovery points, provider
faults, kill switches, expiring approvals and duplicate deliveries, on PostgreSQL.

The verdicts come from the emulators' stores, the database and the request log; this test checks
that the run really injected what it claims (crashes at several points, both detection modes) and
that nothing was duplicated, lost or called late.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from surfaces.cli import app
from surfaces.scorecard import KINDS, ScorecardConfig, run_scorecard
from surfaces.scorecard_executor import DropIn, KillPoint


@pytest.fixture
def scorecard_env(
    postgres_database: str, prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The scorecard sets these for its executors; monkeypatch puts them back afterwards."""
    monkeypatch.setenv("FULFILL_DATABASE_URL", postgres_database)
    monkeypatch.setenv("FULFILL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    monkeypatch.setenv("PREFECT_LOCAL_STORAGE_PATH", str(tmp_path / "results"))
    for name in (
        "FULFILL_APPROVAL_KEYS",
        "FULFILL_WEBHOOK_SECRETS",
        "FULFILL_ALLOW_LOOPBACK_PROVIDERS",
        "FULFILL_SCORECARD_LOG",
        "FULFILL_SCORECARD_PROVIDERS",
    ):
        monkeypatch.setenv(name, "placeholder")
    monkeypatch.setenv("FULFILL_LATE_COMMIT_SECONDS", "5")
    monkeypatch.delenv("FULFILL_EMERGENCY_STOP", raising=False)
    return tmp_path / "data"


def test_a_small_scorecard_finds_nothing_duplicated_lost_or_late(scorecard_env: Path) -> None:
    card = run_scorecard(
        ScorecardConfig(
            intents=len(KINDS) * 2,
            crashes=10,
            drops=4,
            races=2,
            executors=2,
            seed=7,
            time_limit=600,
            data_dir=scorecard_env,
        ),
        emit=lambda _: None,
    )
    crashes = sum(card.crashes.values())
    assert crashes >= 6, card.crashes  # a planned point an execution never reaches kills nobody
    assert len(card.crashes) >= 4, f"crashes spread over the recovery points: {card.crashes}"
    assert card.crashes_host_lost and card.crashes_worker_noticed
    assert set(card.crashes) <= {str(p) for p in KillPoint}
    assert sum(card.connection_drops.values()) >= 2, card.connection_drops  # inside claim … finish
    assert set(card.connection_drops) <= {str(p) for p in DropIn}
    assert card.races == 2 and card.races_overlapping == []
    assert card.provider_duplicates == []
    assert card.succeeded_without_effect == []
    assert card.lost_intents == [], (card.reconciler_problems, card.executor_errors)
    assert card.calls_after_expiry == []
    assert card.calls_after_kill_switch == []
    assert card.outcome_signal_mismatches == []
    assert card.flow_runs_per_intent_max == 1
    assert card.ledger_ok and card.ledger_chains >= 2
    # Not a speed goal (those are the scorecard's own output, docs/reliability.md): a bound far above the
    # 15 s lease that only a return to minutes-long leases or a stalled reconciler would cross.
    assert card.recovery_max is not None and card.recovery_max < 120, card.recovery_by_point
    assert card.takeover_p99 is not None and card.takeover_p99 < 120
    assert card.ok
    assert card.statuses.get("SUCCEEDED", 0) >= len(KINDS), card.statuses


def test_the_cli_prints_the_scorecard_and_writes_it_to_the_docs(scorecard_env: Path, tmp_path: Path) -> None:
    docs = tmp_path / "reliability.md"
    result = CliRunner().invoke(
        app,
        ["scorecard", "--intents", "6", "--crashes", "2", "--seed", "3", "--json", "--write", str(docs)],
    )
    assert result.exit_code == 0, result.output
    card: dict[str, Any] = json.loads(result.stdout)
    assert card["ok"] is True and card["intents"] == 6
    written = docs.read_text()
    assert "fulfill scorecard --intents 6 --crashes 2" in written
    assert "| provider-side duplicates | 0 | 0 |" in written
    assert "Verdict: **pass**" in written
