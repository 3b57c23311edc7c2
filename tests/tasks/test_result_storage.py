"""Task caching across workers: connector-step results persist to the configured storage block.

Prefect's own setting ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK`` names the block (a prefect-aws
``S3Bucket`` in production; unset = the local directory). Verified here with real processes: one
executes an intent and persists its step result to S3 (moto's server on loopback); a second process
(another "worker") asks for the same step and gets Prefect's cached result without running it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from prefect_aws import AwsCredentials
from prefect_aws.client_parameters import AwsClientParameters
from prefect_aws.s3 import S3Bucket

from fulfill import executions
from fulfill.db import transaction
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def s3_results(prefect_server: str) -> Iterator[tuple[str, str, Any]]:
    """A moto S3 server on loopback, a bucket, and an S3Bucket block saved on the test Prefect server."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    bucket = f"fulfill-results-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=bucket)
    block_name = f"results-{uuid.uuid4().hex[:8]}"
    S3Bucket(
        bucket_name=bucket,
        credentials=AwsCredentials(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
            aws_client_parameters=AwsClientParameters(endpoint_url=endpoint),
        ),
    ).save(block_name, overwrite=True)
    try:
        yield f"s3-bucket/{block_name}", bucket, s3
    finally:
        server.stop()


def _run(module: str, args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:]


def test_a_second_worker_gets_the_step_from_the_shared_result_storage(
    engine: Any,
    database_url: str,
    prefect_server: str,
    make_intent: Any,
    tmp_path: Path,
    s3_results: tuple[str, str, Any],
) -> None:
    block, bucket, s3 = s3_results
    intent = make_intent("internal.create_task", {"title": "Cached across workers"})
    intent_id = intent["action_intent_id"]
    (tmp_path / "intent.json").write_text(json.dumps(intent))
    (tmp_path / "barrier").mkdir()
    (tmp_path / "barrier" / "go").touch()
    env = {
        **os.environ,
        "FULFILL_DATABASE_URL": database_url,
        "FULFILL_DATA_DIR": str(tmp_path / "data"),
        "PREFECT_API_URL": prefect_server,
        "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": block,
        # Each worker has its own local disk: only the shared block can answer the second one.
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "worker-1"),
        "PYTHONPATH": str(REPO),
    }
    first = json.loads(
        _run("tests.flows.race_worker", [str(tmp_path / "intent.json"), str(tmp_path / "barrier"), "w1"], env)
    )
    assert first["status"] == "SUCCEEDED"

    with transaction(engine) as session:
        execution = executions.get(session, None, intent_id)
        (step,) = executions.steps_of(session, intent_id)
    stored = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    # The record of a cached task is stored under its cache key: the step's key + the execution fingerprint.
    (cache_key,) = [key for key in stored if key.startswith(f"{step.idempotency_key}:")]

    stale_lease = {
        "action_intent_id": intent_id,
        "tenant_id": execution.tenant_id,
        "owner": "another-worker/0",
        "attempt": execution.attempt,
        "generation": execution.generation,
    }
    probe_env = {**env, "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "worker-2")}
    args = json.dumps({"call": step.call_json, "lease": stale_lease, "cache_key": cache_key})
    second = json.loads(_run("tests.tasks.cache_probe", [args], probe_env))

    assert second == step.result_json, "the second worker got the first one's result from the cache"
    with transaction(engine) as session:
        assert executions.steps_of(session, intent_id)[0].attempts == step.attempts, "nothing ran again"
