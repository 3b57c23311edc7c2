"""Benchmark: CPU spent refusing the worst forged intents we can build (goal: < 50 ms each).

    .venv/bin/python bench/bench_forgery.py [--repeat 3]

A forger does not hold an approval key, so everything fulfill does with a forged intent happens
before (or is) the signature check: size limits, the structure count, ``json.loads``, the bounded
document walk, the envelope, the JCS canonical form and the Ed25519 verification — and, in the order
admission used before the signature moved up, the action's full parameter model. Each case is
refused; the bench prints the process CPU time per refusal (median of ``--repeat`` runs) for both
orders, and the stage and reason it was refused with. No database, no network: the cost is the
parsing and checking alone. Speed goals live here, never in timed tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fulfill.approval import ApprovalInvalid, TrustedKeys, b64url_encode  # noqa: E402
from fulfill.intent import (  # noqa: E402
    MAX_BRIEF_BYTES,
    MAX_INTENT_BYTES,
    IntentInvalid,
    check_envelope,
    load_intent_document,
    parse_intent,
)

REPO = Path(__file__).resolve().parents[1]
VECTORS = REPO / "tests" / "vectors"
GOAL_MS = 50.0
FORGED_SIGNATURE = b64url_encode(bytes(range(64)))  # canonical, 64 bytes, signed by nobody


def _base(action_type: str, parameters: dict[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((VECTORS / "valid-crm-create-task.json").read_text())
    document["action_type"] = action_type
    document["parameters"] = parameters
    document["approval"]["key_id"] = "phase3-test-1"  # a trusted key id: the forger knows it
    document["approval"]["signature"] = FORGED_SIGNATURE
    return document


def _meeting(**overrides: Any) -> dict[str, Any]:
    parameters: dict[str, Any] = {
        "title": "Renewal call",
        "start": "2026-12-01T10:00:00Z",
        "end": "2026-12-01T10:30:00Z",
        "organizer": "jordan@acme.example",
        "attendees": ["sam@acme.example"],
    }
    return _base("calendar.draft_meeting", parameters | overrides)


def _text(document: dict[str, Any], *, ascii_only: bool = False) -> str:
    return json.dumps(document, ensure_ascii=ascii_only)


def _fill(template: str, parameters_json: str) -> str:
    return template.replace('"parameters": {}', f'"parameters": {parameters_json}')


def cases() -> dict[str, str]:
    """Name → raw JSON text of a forged intent (each at most MAX_INTENT_BYTES)."""
    brief = _base("internal.attach_brief", {"title": "Brief", "content": ""})
    shell = _text(_base("internal.attach_brief", {}))
    room = MAX_INTENT_BYTES - len(shell) - 200
    found: dict[str, str] = {
        # The original attack: one 100 KB attendee the old email regex backtracked on.
        "attendee 100 KB (backtracking bait)": _text(_meeting(attendees=["a@" + "a." * 50_000 + " "])),
        "attendee at its 320-char limit": _text(_meeting(attendees=["a@" + "a." * 158 + " "])),
        "50 attendees of 320 chars": _text(_meeting(attendees=["a@" + "b." * 158 + "c"] * 50)),
        "990 attendees (string-count limit)": _text(_meeting(attendees=["x@y.z"] * 990)),
        "every field at its limit, calendar": _text(
            _meeting(
                title="t" * 1024,
                organizer="o" * 1024,
                description="d" * 8000,
                location="l" * 1024,
                attendees=["a@" + "b." * 158 + "c"] * 50,
            )
        ),
        # The heaviest path that reaches the signature: a valid 1 MiB brief.
        "brief 1 MiB ASCII (valid schema)": _text(
            brief | {"parameters": {"title": "B", "content": "x" * MAX_BRIEF_BYTES}}
        ),
        "brief 1 MiB of emoji (4-byte)": _text(
            brief | {"parameters": {"title": "B", "content": "\U0001f600" * (MAX_BRIEF_BYTES // 4)}}
        ),
        "brief 1 MiB of control chars (6x escaped)": _text(
            brief | {"parameters": {"title": "B", "content": "\x01" * MAX_BRIEF_BYTES}}
        ),
        "update_field two 128K-char 4-byte values": _text(
            _base(
                "crm.update_field",
                {
                    "object": "Account",
                    "record_id": "001",
                    "field": "Notes__c",
                    "value": "\U0001f600" * 131072,
                    "previous_value": "\U0001f600" * 131072,
                },
            ),
            ascii_only=True,
        ),
        "log_note body 100000 chars": _text(_base("internal.log_note", {"body": "n" * 100_000})),
        # Max-size bodies (7 MiB of text) in every shape we could think of.
        "7 MiB one string": _fill(shell, json.dumps({"title": "B", "content": "x" * room})),
        "7 MiB of escaped quotes": _fill(shell, '{"title": "B", "content": "' + '\\"' * (room // 2) + '"}'),
        "7 MiB of escaped backslashes": _fill(
            shell, '{"title": "B", "content": "' + "\\\\" * (room // 2) + '"}'
        ),
        "7 MiB of \\u0001 escapes": _fill(
            shell, '{"title": "B", "content": "' + "\\u0001" * (room // 6) + '"}'
        ),
        "7 MiB of ints": _fill(shell, '{"x": [' + ",".join(["0"] * (room // 2)) + "]}"),
        "7 MiB of empty strings": _fill(shell, '{"x": [' + ",".join(['""'] * (room // 3)) + "]}"),
        "7 MiB of empty objects": _fill(shell, '{"x": [' + ",".join(["{}"] * (room // 3)) + "]}"),
        "7 MiB of nesting": _fill(shell, '{"x": ' + "[" * (room // 2) + "]" * (room // 2) + "}"),
        "7 MiB of commas inside a string": _fill(
            shell, '{"title": "B", "content": "' + ",[{" * (room // 3) + '"}'
        ),
        "1000 strings of 7 KB": _fill(
            shell, '{"x": [' + ",".join(['"' + "s" * (room // 1000 - 4) + '"'] * 990) + "]}"
        ),
        "depth 31 within the limit": _fill(shell, '{"x": ' + "[" * 30 + "]" * 30 + "}"),
        "999 commas of ints": _fill(shell, '{"x": [' + ",".join(["123456789"] * 990) + "]}"),
        "huge integer (4000 digits)": _fill(shell, '{"x": ' + "9" * 4000 + "}"),
    }
    for name, text in found.items():
        assert len(text.encode()) <= MAX_INTENT_BYTES, (name, len(text.encode()))
    return found


def _signature_first(text: str, keys: TrustedKeys) -> str:
    """The cheap structural parse, then the signature, then the parameters' model."""
    document = load_intent_document(text)
    check_envelope(document)
    keys.verify(document)
    parse_intent(document)
    return "accepted"


def _model_first(text: str, keys: TrustedKeys) -> str:
    """The full model, then the signature (admission's order before the signature moved up)."""
    document = load_intent_document(text)
    parse_intent(document)
    keys.verify(document)
    return "accepted"


def _refusal(pipeline: Callable[[str, TrustedKeys], str], text: str, keys: TrustedKeys) -> tuple[float, str]:
    started = time.process_time()
    try:
        outcome = pipeline(text, keys)
    except IntentInvalid as exc:
        outcome = f"VALIDATION_FAILED {exc.field}: {exc.message}"
    except ApprovalInvalid as exc:
        outcome = f"APPROVAL_INVALID: {exc.reason}"
    return (time.process_time() - started) * 1000, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    keys = TrustedKeys.from_setting(str(VECTORS / "keys.json"))
    worst = 0.0
    print(f"{'case':44} {'sig-first ms':>12} {'model-first ms':>14}  refused as")
    for name, text in cases().items():
        timings: dict[str, list[float]] = {"signature": [], "model": []}
        outcome = ""
        for _ in range(args.repeat):
            ms, outcome = _refusal(_signature_first, text, keys)
            timings["signature"].append(ms)
            ms_model, _ = _refusal(_model_first, text, keys)
            timings["model"].append(ms_model)
        first, model = statistics.median(timings["signature"]), statistics.median(timings["model"])
        worst = max(worst, first, model)
        assert outcome != "accepted", f"{name}: a forged intent was accepted"
        print(f"{name:44} {first:12.1f} {model:14.1f}  {outcome[:90]}")
    verdict = "meets" if worst < GOAL_MS else "MISSES"
    print(f"\nworst refusal: {worst:.1f} ms of CPU ({verdict} the {GOAL_MS:.0f} ms goal)")


if __name__ == "__main__":
    main()
