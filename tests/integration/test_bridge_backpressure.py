"""Backpressure: with no Celery worker, the queue fills to its bound and no further; the bridge stays in its group.

When a worker comes back, every event still becomes exactly one effect.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka.admin import AdminClient

from tests.bridge.harness import (
    BridgeWorld,
    cleared_event,
    committed_total,
    make_world,
    running,
    wait_for,
)
from tests.integration.registry_fixtures import registry_url  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Callable

BOUND = 60
EVENTS = 400
ROUTES = f"""\
queues:
  default: {{{{bound: {BOUND}}}}}
routes:
  pdf:
    topic: "{{cleared}}"
    task: streams.generate_invoice_pdf
    queue: default
    args: {{{{invoice_id: invoice_id, invoice_number: invoice_number, tenant_id: tenant_id,
           seller_vat_number: seller_vat_number, tax_inclusive_total: tax_inclusive_total,
           vat_total: vat_total, currency: currency}}}}
"""


def members(world: BridgeWorld) -> list[tuple[str, int]]:
    """(group state, assigned partitions) per member of the bridge's group, from the broker."""
    admin = AdminClient({"bootstrap.servers": world.bootstrap})
    description = admin.describe_consumer_groups([world.group])[world.group].result(timeout=10)
    return [(description.state.name, len(m.assignment.topic_partitions)) for m in description.members]


@pytest.mark.timeout(240)
def test_queue_depth_stays_at_the_bound_while_workers_are_gone_and_nothing_is_lost(
    tmp_path: Path,
    unique_name: Callable[[str], str],
    kafka_bootstrap: str,
    registry_url: str,  # noqa: F811
) -> None:
    with running(make_world(tmp_path, unique_name, kafka_bootstrap, registry_url, ROUTES)) as world:
        invoices = [cleared_event(i) for i in range(EVENTS)]
        with world.publisher() as publisher:
            for event in invoices:
                publisher.publish(world.cleared, event)
        bridge = world.bridge("--batch-size", "25").start()

        wait_for(lambda: world.redis.depth("default") >= BOUND, 60, f"the queue to fill to {BOUND}")
        depths = []
        deadline = time.monotonic() + 12  # longer than the session time-out (10 s): membership must hold
        while time.monotonic() < deadline:
            depths.append(world.redis.depth("default"))
            time.sleep(0.02)
        assert max(depths) == BOUND
        assert bridge.alive()
        assert members(world) == [("STABLE", 3)]
        committed = committed_total(world.bootstrap, world.group, [world.cleared])
        assert committed <= BOUND  # only what Redis holds was committed
        assert committed >= BOUND - 25

        world.worker(concurrency=2, prefetch=4).start()
        wait_for(lambda: len(world.pdfs()) == EVENTS, 120, f"{EVENTS} PDFs", 0.5)
        wait_for(
            lambda: committed_total(world.bootstrap, world.group, [world.cleared]) == EVENTS,
            30,
            "every offset committed",
        )
        assert {p.stem for p in world.pdfs()} == {e["invoice_id"] for e in invoices}
        assert world.redis.depth("default") == 0
        assert members(world) == [("STABLE", 3)]
