"""Detached service processes of the local stack: spawning, probing, stopping, and log tails.

Each service runs as the leader of its own session so it outlives `streams dev up` and stops as a group.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from contextlib import closing, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from streams.errors import LocalStackError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# Set in every service's environment; `down` only signals processes that carry it with our data dir,
# so a pid recycled after a reboot is never mistaken for one of ours.
OWNER_VARIABLE = "STREAMS_LOCAL_STACK_DIR"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now (the kernel picks it)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int) -> bool:
    """True when something already accepts connections on 127.0.0.1:`port`."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


def spawn_detached(
    argv: Sequence[str],
    *,
    log_path: Path,
    owner: Path,
    environment: Mapping[str, str] | None = None,
    append: bool = False,
) -> int:
    """Start `argv` in a new session, stdout and stderr to a fresh `log_path` (or after its end, with
    `append`: a restarted node keeps the story of its crash); returns its pid.

    The child gets `environment` (default: ours) plus the owner marker.

    posix_spawn rather than Popen: a Popen dropped while its child runs warns, and these children
    are meant to outlive us.
    """
    executable = shutil.which(argv[0])
    if executable is None:
        raise LocalStackError(f"cannot start {argv[0]}: not found on PATH")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    mode = os.O_APPEND if append else os.O_TRUNC
    child_environment = {**(os.environ if environment is None else environment), OWNER_VARIABLE: str(owner)}
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | mode, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    try:
        return os.posix_spawn(executable, list(argv), child_environment, file_actions=file_actions, setsid=True)
    except OSError as exc:
        raise LocalStackError(f"cannot start {executable}: {exc.strerror}") from exc


def is_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (our own exited children are reaped here)."""
    with suppress(ChildProcessError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (macOS): existence is all we can tell
    return stat.rpartition(")")[2].split()[0] != "Z"


def owned_by(pid: int, owner: Path) -> bool:
    """True when `pid` is running and was started by the local stack for `owner` (its data dir)."""
    if not is_running(pid):
        return False
    try:
        environ = _environ(pid)
    except FileNotFoundError:
        return False
    except OSError:
        # No procfs: a session leader is the best evidence left that it is one of ours.
        with suppress(ProcessLookupError):
            return os.getpgid(pid) == pid
        return False
    return f"{OWNER_VARIABLE}={owner}".encode() in environ.split(b"\0")


def _environ(pid: int, *, settle_s: float = 1.0) -> bytes:
    """The raw /proc environ of `pid`.

    A child just started by posix_spawn can read as empty: the kernel lets the parent go on once the
    child's old memory is released, a moment before exec has laid out the new environment. So an empty
    read is retried for up to `settle_s`.
    """
    path = Path(f"/proc/{pid}/environ")
    deadline = time.monotonic() + settle_s
    environ = path.read_bytes()
    while not environ and time.monotonic() < deadline:
        time.sleep(0.01)
        environ = path.read_bytes()
    return environ


def stop_process_group(pid: int, *, timeout_s: float = 30.0) -> None:
    """SIGTERM the group `pid` leads, wait up to `timeout_s` for it to exit, then SIGKILL it."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not is_running(pid):
                return
            time.sleep(0.05)
    raise LocalStackError(f"process {pid} survived SIGKILL; stop it by hand (kill -9 {pid})")


def log_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file, indented for an error message ('' when there is none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(f"  {line}" for line in text.splitlines()[-lines:])
