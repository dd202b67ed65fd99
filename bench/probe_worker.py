"""`streams` (a worker) with timing probes, for bench/validation_tail.py: where a slow event's time went.

Records, with wall-clock start times, every garbage collection (generation, pause), every engine
transaction commit (send_offsets + commit_transaction) and every consumed slice the engine processed
(records, seconds), and appends them as JSON lines to $BENCH_PROBE_LOG once a second. The engine's
commit interval can be set with $BENCH_COMMIT_INTERVAL (seconds). Run as `python bench/probe_worker.py worker ...`.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import threading
import time
from typing import Any

try:  # the engine moved with the agent runtime of issue 13; older checkouts have it in streams.agents
    engine = importlib.import_module("streams.runtime.engine")
except ImportError:
    engine = importlib.import_module("streams.agents.engine")

LOG = os.environ["BENCH_PROBE_LOG"]
events: list[tuple[str, float, float, int]] = []  # (kind, wall start, seconds, detail)
_gc_started = [0.0, 0.0]


def on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started[0], _gc_started[1] = time.time(), time.perf_counter()
    else:
        events.append(("gc", _gc_started[0], time.perf_counter() - _gc_started[1], int(info["generation"])))


def timed(name: str, method: Any, detail: Any) -> Any:
    def wrapper(self: Any, *args: Any) -> Any:
        wall, started = time.time(), time.perf_counter()
        try:
            return method(self, *args)
        finally:
            events.append((name, wall, time.perf_counter() - started, detail(args)))

    return wrapper


def flush_forever() -> None:
    while True:
        time.sleep(1.0)
        taken = len(events)
        if taken:
            with open(LOG, "a") as out:  # noqa: PTH123 - a plain append
                out.writelines(json.dumps(event) + "\n" for event in events[:taken])
            del events[:taken]


def main() -> None:
    interval = os.environ.get("BENCH_COMMIT_INTERVAL")
    if interval:  # every engine of the worker, whatever its app asked for
        init = engine.TransactionalEngine.__init__

        def init_with_interval(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            self.config.commit_interval_s = float(interval)

        engine.TransactionalEngine.__init__ = init_with_interval
    gc.callbacks.append(on_gc)
    engine.TransactionalEngine._commit = timed("commit", engine.TransactionalEngine._commit, lambda args: 0)
    engine.TransactionalEngine._process = timed(
        "process", engine.TransactionalEngine._process, lambda args: len(args[0])
    )
    threading.Thread(target=flush_forever, name="probe-flush", daemon=True).start()
    from streams.cli import main as cli  # noqa: PLC0415 - after the probes are in place

    cli()


if __name__ == "__main__":
    main()
