"""A task past its route's soft time limit fails like any other: retried, then parked in task.failed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from streams.bridge.celery_wire import task_id_for
from tests.bridge.harness import cleared_event, make_world, running, wait_for
from tests.integration.registry_fixtures import registry_url  # noqa: F401
from tests.integration.test_bridge_failures import decode_all, settled

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

ROUTES = """\
routes:
  slow:
    topic: "{cleared}"
    task: tests.too_slow
    queue: default
    soft_time_limit: 1s
    time_limit: 20s
    retry: {{max_attempts: 2, backoff: 200ms, max_backoff: 1s, max_redeliveries: 2}}
    args: {{invoice_id: invoice_id}}
"""


@pytest.mark.timeout(180)
def test_a_task_past_its_soft_time_limit_is_retried_then_parked(
    tmp_path: Path,
    unique_name: Callable[[str], str],
    kafka_bootstrap: str,
    registry_url: str,  # noqa: F811
) -> None:
    with running(make_world(tmp_path, unique_name, kafka_bootstrap, registry_url, ROUTES)) as world:
        with world.publisher() as publisher:
            event_id = publisher.publish(world.cleared, cleared_event(0)).result().event_id
        world.worker(concurrency=1, prefetch=1).start()
        world.bridge().start()

        def parked() -> list[dict[str, Any]] | None:
            rows = decode_all(world, 1)
            return rows or None

        [row] = wait_for(parked, 120, "a task.failed event for the slow task")
        assert row["task_id"] == task_id_for(event_id, "tests.too_slow")
        assert (row["reason"], row["attempts"], row["error_class"]) == ("retries_exhausted", 2, "SoftTimeLimitExceeded")
        assert row["route"] == "slow"
        wait_for(lambda: settled(world), 30, "empty queues and no reserved tasks")
        log = "".join(proc.output() for proc in world.processes if proc.name == "worker")
        assert log.count("Soft time limit (1.0s) exceeded for tests.too_slow") == 2
        assert "Hard time limit" not in log
