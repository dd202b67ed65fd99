"""Transactional ids per host: the lowest free slot, held by a file lock for as long as the process lives, so
a worker restarted after kill -9 takes its predecessor's id and aborts what it left open (decision 0016).
"""

from __future__ import annotations

import fcntl
import os
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path


def claim_transactional_id(data_dir: Path, group: str) -> tuple[Any, str]:
    """(open lock file, `<group>-<host>-<slot>`) for the lowest slot no live process on this host holds."""
    directory = data_dir / "agents"
    directory.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname() or "host"
    slot = 0
    while True:
        handle = (directory / f"{group}.{slot}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            slot += 1
            continue
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return handle, f"{group}-{host}-{slot}"
