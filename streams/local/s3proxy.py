"""S3Proxy for the local stack and the tests: an S3-compatible server on loopback with a filesystem backend.

Its single jar (org.gaul:s3proxy, Apache-2.0) comes from Maven Central, pinned by SHA-256, and runs on the
JDK the local stack already uses for Kafka.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from streams.errors import LocalStackError
from streams.local.binaries import find_java
from streams.local.kafka import CACHE_VARIABLE
from streams.local.maven import Artifact, download, repository
from streams.local.processes import LOOPBACK, is_running, log_tail, port_in_use, spawn_detached

__all__ = ["S3PROXY", "S3Endpoint", "create_bucket", "fetch_s3proxy", "start_s3proxy", "wait_for_s3proxy"]

S3PROXY = Artifact(
    "org.gaul",
    "s3proxy",
    "4.1.0",
    sha256="a4d025969aaf796616ed4b1e2491d87d455ce84bb28cb9db086b2e6aaa68b48d",
    size=54_955_934,
    classifier="jar-with-dependencies",
)  # SHA-1 0a0b89e9... checked against Maven Central's .sha1
READY_TIMEOUT_S = 60.0
IDENTITY, CREDENTIAL = "streams-local", "streams-local-secret"  # loopback only: not a secret
LOCAL_BUCKET = "streams-archive"  # what `streams dev up --archive s3` creates


@dataclass(frozen=True)
class S3Endpoint:
    """A running S3Proxy: where it answers and the keys it accepts (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)."""

    url: str
    access_key: str
    secret_key: str
    pid: int
    log_path: Path

    def environment(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "STREAMS_ARCHIVE_ENDPOINT_URL": self.url,
        }


def cache_dir() -> Path:
    root = os.environ.get(CACHE_VARIABLE)
    if root:
        return Path(root).expanduser() / f"s3proxy-{S3PROXY.version}"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "streams" / f"s3proxy-{S3PROXY.version}"


def fetch_s3proxy(directory: Path | None = None) -> Path:
    """The S3Proxy jar, downloaded and checked on first use only."""
    directory = directory or cache_dir()
    jar = directory / S3PROXY.file_name
    if jar.exists():
        return jar
    staging = directory.with_name(f"{directory.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        download(S3PROXY, repository(), staging)
        directory.mkdir(parents=True, exist_ok=True)
        (staging / S3PROXY.file_name).replace(jar)  # whole, or not at all
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return jar


def start_s3proxy(work_dir: Path, *, port: int, owner: Path) -> S3Endpoint:
    """Launch S3Proxy on 127.0.0.1:`port`, its buckets as directories under `work_dir`/data."""
    if port_in_use(port):
        raise LocalStackError(f"port {port} on {LOOPBACK} is already in use; choose another for S3Proxy")
    jar = fetch_s3proxy()
    data = work_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    url = f"http://{LOOPBACK}:{port}"
    properties = work_dir / "s3proxy.properties"
    properties.write_text(
        "\n".join(
            [
                f"s3proxy.endpoint={url}",
                "s3proxy.authorization=aws-v2-or-v4",
                f"s3proxy.identity={IDENTITY}",
                f"s3proxy.credential={CREDENTIAL}",
                "jclouds.provider=filesystem",
                f"jclouds.filesystem.basedir={data}",
            ]
        )
        + "\n"
    )
    log_path = work_dir / "s3proxy.log"
    command = [find_java().path, "-Xmx256m", "-jar", str(jar), "--properties", str(properties)]
    pid = spawn_detached(command, log_path=log_path, owner=owner)
    return S3Endpoint(url, IDENTITY, CREDENTIAL, pid, log_path)


def wait_for_s3proxy(endpoint: S3Endpoint, *, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Block until S3Proxy answers HTTP (an anonymous request is refused: that is an answer)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_running(endpoint.pid):
            raise LocalStackError(f"S3Proxy exited during startup; its log ends with:\n{log_tail(endpoint.log_path)}")
        try:
            urllib.request.urlopen(endpoint.url, timeout=1.0).close()  # noqa: S310 - our loopback http URL
            return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise LocalStackError(
        f"S3Proxy did not answer on {endpoint.url} within {timeout_s:.0f}s; "
        f"its log ends with:\n{log_tail(endpoint.log_path)}"
    )


def create_bucket(endpoint: S3Endpoint, bucket: str) -> None:
    """Create `bucket` (an existing one is fine) through s3fs, as the archive will use it."""
    import s3fs  # noqa: PLC0415 - the archive extra

    fs = s3fs.S3FileSystem(
        key=endpoint.access_key,
        secret=endpoint.secret_key,
        client_kwargs={"endpoint_url": endpoint.url},
        skip_instance_cache=True,
    )
    try:
        fs.call_s3("create_bucket", Bucket=bucket)
    except (OSError, ValueError) as exc:  # s3fs maps S3 errors to OSErrors
        if "BucketAlreadyOwnedByYou" not in repr(exc) and "BucketAlreadyExists" not in repr(exc):
            raise LocalStackError(f"cannot create the bucket {bucket!r} on {endpoint.url}: {exc}") from exc
