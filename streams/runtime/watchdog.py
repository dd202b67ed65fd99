"""A watchdog for the engine's transaction commit: librdkafka calls that block past their own timeout are first
nudged with a metadata request, then, if still blocked, the process exits for its supervisor to restart it.

Why: librdkafka 2.x can block `send_offsets_to_transaction` for good when the group coordinator's broker died
(its coordinator request ignores the timeout, confluentinc/librdkafka#5456, and a dead coordinator's broker
thread is gone, so nothing re-runs the lookup, #5511). The broker-fault test saw an agent wait there for
minutes after a kill -9 of a broker (decision 0028). A blocked C call cannot be interrupted from Python.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

import structlog
from confluent_kafka import KafkaException

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from confluent_kafka import Producer

log = structlog.get_logger("streams.runtime.watchdog")

EXIT_STUCK = 75  # EX_TEMPFAIL: try again (a restart) later
NUDGE_AFTER_S = 35.0  # past send_offsets_to_transaction's own 30 s
EXIT_AFTER_S = 150.0  # past both calls' timeouts (30 s each) with room for a slow coordinator move
NUDGE_EVERY_S = 5.0


class CommitWatchdog:
    """Watches one engine's commit calls from a thread of its own (started on first use).

    Past `nudge_after_s` in a call it asks the producer for metadata every few seconds: a broker that came back
    is connected to again, and that broker state change makes librdkafka look the coordinator up again. Past
    `exit_after_s` it logs why and ends the process (`on_stuck`, default os._exit): the engine's transaction is
    still open and uncommitted, so a restarted worker's producer aborts it and redoes the batch, exactly once
    in effect, as after a kill -9.
    """

    def __init__(
        self,
        agent: str,
        *,
        nudge_after_s: float = NUDGE_AFTER_S,
        exit_after_s: float = EXIT_AFTER_S,
        on_stuck: Callable[[int], object] = os._exit,
    ) -> None:
        self.agent = agent
        self.nudge_after_s, self.exit_after_s = nudge_after_s, exit_after_s
        self._exit = on_stuck
        self._call: str | None = None
        self._client: Producer | None = None
        self._since = 0.0
        self._nudged_at = 0.0
        self._thread: threading.Thread | None = None

    @contextmanager
    def watching(self, call: str, client: Producer) -> Iterator[None]:
        """Watch `call` (a name for the log) on `client` while the block runs."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"watchdog-{self.agent}", daemon=True)
            self._thread.start()
        self._client, self._since, self._nudged_at = client, time.monotonic(), 0.0
        self._call = call
        try:
            yield
        finally:
            if self._nudged_at:
                log.warning("engine.call.resumed", agent=self.agent, call=call, seconds=round(self.overdue(), 1))
            self._call = None

    def overdue(self) -> float:
        return time.monotonic() - self._since

    def check(self) -> None:
        """One look: nudge or give up if the watched call is overdue (the thread calls it every second)."""
        call, client = self._call, self._client
        if call is None or client is None:
            return
        overdue = self.overdue()
        if overdue >= self.exit_after_s:
            log.error(
                "engine.call.stuck",
                agent=self.agent,
                call=call,
                seconds=round(overdue, 1),
                cause="librdkafka blocks past the call's timeout after the coordinator's broker died"
                " (confluentinc/librdkafka#5456, #5511)",
                action="exiting: restart the worker; its producer aborts the open transaction and the batch is redone",
            )
            self._exit(EXIT_STUCK)
        elif overdue >= self.nudge_after_s and time.monotonic() - self._nudged_at >= NUDGE_EVERY_S:
            if not self._nudged_at:
                log.warning("engine.call.overdue", agent=self.agent, call=call, seconds=round(overdue, 1))
            self._nudged_at = time.monotonic()
            with suppress(KafkaException, RuntimeError):
                client.list_topics(timeout=5)

    def _run(self) -> None:
        while True:
            time.sleep(1.0)
            self.check()
