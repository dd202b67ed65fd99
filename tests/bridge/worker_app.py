"""The Celery app of the bridge's integration tests: the reference tasks plus three that fail on purpose.

`celery -A tests.bridge.worker_app worker ...`; the app is built from the environment on first access.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from celery import Celery

from streams.bridge.reference_tasks import create_app
from streams.bridge.tasks import BridgeTask

_app: Celery | None = None
_lock = threading.Lock()


def build() -> Celery:
    app = create_app()

    @app.task(base=BridgeTask, name="tests.always_fails")  # type: ignore[untyped-decorator]
    def always_fails(invoice_id: str) -> None:
        raise RuntimeError(f"always fails ({invoice_id})")

    @app.task(base=BridgeTask, name="tests.crash_worker")  # type: ignore[untyped-decorator]
    def crash_worker(invoice_id: str) -> None:
        os._exit(17)  # the pool process dies mid-task, like an OOM kill

    @app.task(base=BridgeTask, name="tests.too_slow")  # type: ignore[untyped-decorator]
    def too_slow(invoice_id: str) -> None:
        time.sleep(120)  # far past any soft time limit a test route sets

    return app


def __getattr__(name: str) -> Any:
    global _app  # noqa: PLW0603 - built lazily so importing reads no environment
    if name != "app":
        raise AttributeError(name)
    with _lock:
        if _app is None:
            _app = build()
        return _app
