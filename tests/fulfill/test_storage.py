"""Object storage for briefs: local directory and S3 (prefect-aws S3Bucket block, moto)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from prefect_aws import AwsCredentials
from prefect_aws.s3 import S3Bucket

from fulfill.storage import LocalObjectStore, S3ObjectStore


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        boto3.client("s3", region_name="eu-west-1").create_bucket(
            Bucket="briefs", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        yield


def s3_bucket_block() -> S3Bucket:
    return S3Bucket(
        bucket_name="briefs", bucket_folder="fulfill", credentials=AwsCredentials(region_name="eu-west-1")
    )


def _stores(tmp_path: Path) -> list[Any]:
    return [LocalObjectStore(tmp_path / "objects"), S3ObjectStore.from_block(s3_bucket_block())]


@pytest.mark.usefixtures("aws")
def test_put_is_idempotent_get_and_delete(tmp_path: Path) -> None:
    for store in _stores(tmp_path):
        store.put("briefs/t/ai_1/x.md", b"one", "text/markdown")
        store.put("briefs/t/ai_1/x.md", b"one", "text/markdown")
        assert store.get("briefs/t/ai_1/x.md") == b"one"
        store.delete("briefs/t/ai_1/x.md")
        store.delete("briefs/t/ai_1/x.md")
        assert store.get("briefs/t/ai_1/x.md") is None


@pytest.mark.usefixtures("aws")
def test_s3_store_writes_under_the_block_folder() -> None:
    S3ObjectStore.from_block(s3_bucket_block()).put("a/b.md", b"x", "text/markdown")
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="briefs")["Contents"]]
    assert keys == ["fulfill/a/b.md"]


def test_local_store_refuses_keys_that_escape_its_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="escapes"):
        LocalObjectStore(tmp_path).put("../outside.md", b"x", "text/markdown")


@pytest.mark.usefixtures("aws", "prefect_server")
def test_attach_brief_through_the_flow_lands_in_s3(engine: Any, make_intent: Any, tenant: str) -> None:
    from flows.execute_intent import execute_intent
    from fulfill.db import transaction
    from fulfill.tenants import configure

    s3_bucket_block().save(f"briefs-{tenant}", overwrite=True)
    with transaction(engine) as session:
        configure(session, tenant, actor="test", storage_block=f"briefs-{tenant}")
    intent = make_intent("internal.attach_brief", {"title": "S3 brief", "content": "# In S3"})
    result = execute_intent(intent)
    assert result.status == "SUCCEEDED"
    stored = result.external_refs[0]
    assert stored["url"].startswith("s3://briefs/fulfill/briefs/")
    body = boto3.client("s3").get_object(Bucket="briefs", Key=f"fulfill/{stored['id']}")["Body"].read()
    assert body == b"# In S3"
