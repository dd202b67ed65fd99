"""The demo's bridge step: `streams bridge` and a Celery worker turn the run's outcomes into effects.

Runs both as child processes until every cleared invoice has its PDF and every ERROR violation its
notification, then stops them and reports what was written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streams.demo.worker import child_env
from streams.errors import StreamsError

if TYPE_CHECKING:
    from pathlib import Path

    from streams.settings import Settings

CELERY_QUEUES = "interactive,default,batch"


@dataclass(frozen=True)
class BridgeReport:
    pdfs: int
    notifications: int
    sample_pdf: Path | None


def _effects(data_dir: Path, tenants: set[str]) -> BridgeReport:
    invoices = data_dir / "bridge" / "invoices"
    pdfs = sorted(path for tenant in tenants for path in (invoices / tenant).glob("*.pdf"))
    notifications = 0
    for path in (data_dir / "bridge" / "compliance").glob("*.json"):
        try:
            if json.loads(path.read_text())["tenant_id"] in tenants:
                notifications += 1
        except (OSError, ValueError, KeyError):  # written atomically, so only a foreign file lands here
            continue
    return BridgeReport(len(pdfs), notifications, pdfs[0] if pdfs else None)


def run_bridge_until(
    settings: Settings, tenants: set[str], pdfs: int, notifications: int, *, timeout: float
) -> BridgeReport:
    """Start the bridge and a Celery worker, wait for the expected effects of `tenants`, stop both."""
    data_dir = settings.data_dir.resolve()
    env = child_env(settings)
    commands = {
        "bridge": [sys.executable, "-m", "streams.cli", "bridge"],
        "celery": [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "streams.bridge.reference_tasks",
            "worker",
            "-Q",
            CELERY_QUEUES,
            "--concurrency",
            "2",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ],
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in commands.items():
            with (data_dir / f"demo-{name}.log").open("ab") as log:
                processes[name] = subprocess.Popen(  # noqa: S603
                    command,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        deadline = time.monotonic() + timeout
        report = _effects(data_dir, tenants)
        while report.pdfs < pdfs or report.notifications < notifications:
            stopped = [name for name, process in processes.items() if process.poll() is not None]
            if stopped or time.monotonic() > deadline:
                raise StreamsError(
                    f"{report.pdfs} of {pdfs} PDFs and {report.notifications} of {notifications} "
                    f"notifications after {timeout:.0f}s"
                    + (f"; {stopped[0]} exited" if stopped else "")
                    + f"; see {data_dir}/demo-bridge.log and demo-celery.log"
                )
            time.sleep(0.5)
            report = _effects(data_dir, tenants)
        return report
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            process.wait(timeout=60)
