"""A separate executor process for the race test: waits for the start signal, then runs the flow."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> None:
    intent_path, barrier, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    from flows.execute_intent import execute_intent  # import (slow) before the barrier

    raw = json.loads(intent_path.read_text())
    (barrier / f"{name}.ready").touch()
    deadline = time.monotonic() + 120
    while not (barrier / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("no start signal")
        time.sleep(0.001)
    result = execute_intent(raw)
    sys.stdout.write("RESULT " + result.model_dump_json() + "\n")


if __name__ == "__main__":
    main()
