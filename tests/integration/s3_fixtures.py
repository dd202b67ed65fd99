"""A real S3-compatible server for the archive's tests: S3Proxy (filesystem backend) on loopback, one per
session, started the way the local stack starts Kafka (jar from Maven Central, the stack's JDK)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from streams.local.processes import free_port, stop_process_group
from streams.local.s3proxy import S3Endpoint, create_bucket, start_s3proxy, wait_for_s3proxy

if TYPE_CHECKING:
    from collections.abc import Iterator

BUCKET = "streams-archive"


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    work_dir = tmp_path_factory.mktemp("s3proxy")
    endpoint = start_s3proxy(work_dir, port=free_port(), owner=work_dir)
    try:
        wait_for_s3proxy(endpoint)
        create_bucket(endpoint, BUCKET)
        yield endpoint
    finally:
        stop_process_group(endpoint.pid)
