"""The Kafka broker's jars from Maven Central over HTTP: the pinned list, the download, the checksums.

No Maven: deploy/local/kafka-jars.lock names every jar with its SHA-256; a jar whose digest differs is refused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from streams.errors import LocalStackError

if TYPE_CHECKING:
    from collections.abc import Callable

LOCK_PATH = Path(__file__).resolve().parents[2] / "deploy" / "local" / "kafka-jars.lock"
REPOSITORY_VARIABLE = "STREAMS_MAVEN_REPOSITORY"
DEFAULT_REPOSITORY = "https://repo1.maven.org/maven2"
COMPLETE_MARKER = ".complete"
BROKER_ARTIFACT = "org.apache.kafka:kafka_2.13"
DOWNLOAD_THREADS = 8
TIMEOUT_S = 60.0
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Artifact:
    """One pinned jar: its coordinates, SHA-256 and size."""

    group: str
    artifact: str
    version: str
    sha256: str
    size: int
    classifier: str = ""  # e.g. "jar-with-dependencies": <artifact>-<version>-<classifier>.jar

    @property
    def file_name(self) -> str:
        return f"{self.artifact}-{self.version}{'-' + self.classifier if self.classifier else ''}.jar"

    def url(self, repository: str) -> str:
        path = f"{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.file_name}"
        return f"{repository.rstrip('/')}/{path}"


def read_lock(path: Path = LOCK_PATH) -> list[Artifact]:
    """The pinned jars; LocalStackError naming the file and line when one is malformed."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise LocalStackError(f"cannot read the Kafka jar list {path}: {exc.strerror}") from exc
    artifacts = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()  # noqa: PLW2901 - the stripped line is the only one used
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        coordinates = fields[0].split(":") if fields else []
        if len(fields) != 3 or len(coordinates) != 3 or len(fields[1]) != 64 or not fields[2].isdigit():
            raise LocalStackError(f"{path}:{number}: expected `group:artifact:version sha256 size`, got {line!r}")
        group, artifact, version = coordinates
        artifacts.append(Artifact(group, artifact, version, sha256=fields[1].lower(), size=int(fields[2])))
    if not any(f"{a.group}:{a.artifact}" == BROKER_ARTIFACT for a in artifacts):
        raise LocalStackError(f"{path} does not pin {BROKER_ARTIFACT}, the broker itself; regenerate it")
    return artifacts


def kafka_version(path: Path = LOCK_PATH) -> str:
    """The Kafka version the jar list pins (the version of its kafka_2.13 jar)."""
    return next(a.version for a in read_lock(path) if f"{a.group}:{a.artifact}" == BROKER_ARTIFACT)


def repository() -> str:
    """Maven Central, or the mirror STREAMS_MAVEN_REPOSITORY names (a corporate proxy, say)."""
    return os.environ.get(REPOSITORY_VARIABLE) or DEFAULT_REPOSITORY


def jars_cached(jar_dir: Path) -> bool:
    """True when a completed copy (marker written last) still holds the broker jar."""
    return (jar_dir / COMPLETE_MARKER).exists() and any(jar_dir.glob("kafka_2.13-*.jar"))


def fetch_jars(jar_dir: Path, *, lock: Path = LOCK_PATH, note: Callable[[str], None] | None = None) -> Path:
    """`jar_dir` holding every pinned jar, downloaded and checked on first use only."""
    if jars_cached(jar_dir):
        return jar_dir
    artifacts = read_lock(lock)
    source = repository()
    if note is not None:
        megabytes = sum(a.size for a in artifacts) / 1e6
        note(f"downloading the Kafka broker's {len(artifacts)} jars ({megabytes:.0f} MB) from {source}"
             f" into {jar_dir} (first run only)")  # fmt: skip
    # Fill a private directory and rename it into place, so an interrupted or concurrent download never
    # leaves a half-filled cache that looks complete.
    staging = jar_dir.with_name(f"{jar_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
            list(pool.map(lambda artifact: download(artifact, source, staging), artifacts))
        (staging / COMPLETE_MARKER).write_text("\n".join(a.file_name for a in artifacts) + "\n")
        if jars_cached(jar_dir):  # another `up` finished first; its copy is as good
            return jar_dir
        shutil.rmtree(jar_dir, ignore_errors=True)  # an incomplete or damaged earlier copy
        staging.rename(jar_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return jar_dir


def download(artifact: Artifact, source: str, directory: Path) -> None:
    """`artifact` from `source` into `directory`, refused (LocalStackError) unless its SHA-256 is the pinned one."""
    url = artifact.url(source)
    digest = hashlib.sha256()
    target = directory / artifact.file_name
    try:
        # S310: the scheme is the repository's, https by default; a file:// mirror is allowed on purpose.
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, target.open("wb") as out:  # noqa: S310
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise LocalStackError(
            f"cannot download {url}: {reason}; check the network (or HTTPS_PROXY), or point"
            f" {REPOSITORY_VARIABLE} at a Maven mirror"
        ) from exc
    if digest.hexdigest() != artifact.sha256:
        raise LocalStackError(
            f"{url} has SHA-256 {digest.hexdigest()}, not the pinned {artifact.sha256}: refused;"
            f" if {REPOSITORY_VARIABLE} names a mirror, it serves a different file"
        )
