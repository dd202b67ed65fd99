"""Re-driving the agents over events they already processed (a group reset by `streams replay`) changes nothing."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import httpx
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, TopicPartition

from streams.agents.indexing import SearchIndex
from streams.cli import main
from streams.demo.samples import invoice_chain, workflow_completed
from streams.local.processes import free_port
from streams.publish import Publisher
from tests.integration.worker_harness import catalog_stack, read_topic, start_worker, stop_worker, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from streams.settings import Settings

GROUP = "streams-worker-validation"  # the validation agent's group (on invoice.created)
INDEXING_GROUP = "streams-worker-indexing"  # the indexing agent's group (on workflow.completed, ...)
INVOICES = 40
WORKFLOWS = 10


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with catalog_stack(tmp_path_factory.mktemp("redrive")) as settings:
        yield settings


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers(), "group.id": "tests"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        consumer.close()


def committed(settings: Settings, topic: str, group: str = GROUP) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers(), "group.id": group})
    try:
        ends = end_offsets(settings, topic)
        return {
            tp.partition: tp.offset for tp in consumer.committed([TopicPartition(topic, p) for p in ends], timeout=10)
        }
    finally:
        consumer.close()


def caught_up(settings: Settings, topic: str, group: str = GROUP) -> bool:
    ends, done = end_offsets(settings, topic), committed(settings, topic, group)
    return all(done[p] == end for p, end in ends.items() if end > 0)


def outcomes(port: int) -> list[str]:
    """The worker's event counters, for a failure message."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError as exc:
        return [f"no /metrics: {exc!r}"]
    return [line for line in text.splitlines() if line.startswith("streams_agent_events_total")]


def side_effects(settings: Settings) -> dict[str, int]:
    index = SearchIndex(settings.data_dir / "search" / "index.sqlite")
    try:
        documents = index.count()
    finally:
        index.close()
    return {
        "invoice.cleared": len(read_topic(settings, "invoice.cleared")),
        "compliance.violation": len(read_topic(settings, "compliance.violation")),
        "audit.trail": len(read_topic(settings, "audit.trail")),
        "search documents": documents,
    }


# Both agents run on the one runtime and skip records below their state's marks (the indexing agent would also
# upsert them by event id).
@pytest.mark.timeout(400)
def test_redriving_the_agents_over_processed_events_creates_no_new_side_effects(
    stack: Settings, tmp_path: Path
) -> None:
    invoices = invoice_chain(INVOICES - 1, tenant="redrive")
    invoices.append({**invoices[0]})  # one duplicate UUID: a violation, so both outcome topics are in play
    with Publisher(stack, source="billing-api") as publisher:
        for invoice in invoices:
            publisher.publish("invoice.created", invoice)
        for n in range(WORKFLOWS):
            publisher.publish("workflow.completed", workflow_completed(n))

    expected = {
        "invoice.cleared": INVOICES - 1,
        "compliance.violation": 1,
        "audit.trail": INVOICES + (INVOICES - 1) + 1 + WORKFLOWS,  # every record of an audited topic
        "search documents": (INVOICES - 1) + 1 + WORKFLOWS,
    }
    port = free_port()
    worker = start_worker(stack, "validation,audit,indexing", port, tmp_path / "worker-1.log")
    try:
        wait_for(
            lambda: (
                caught_up(stack, "invoice.created")
                and caught_up(stack, "workflow.completed", INDEXING_GROUP)
                and side_effects(stack) == expected
            ),
            180,
            lambda: f"the first run to finish: {side_effects(stack)}",
        )
    finally:
        stop_worker(worker, signal.SIGTERM)
    before = side_effects(stack)

    runner = CliRunner()
    for topic, group in (("invoice.created", GROUP), ("workflow.completed", INDEXING_GROUP)):
        result = runner.invoke(
            main,
            ["replay", topic, "--group", group, "--reset"],
            env={"STREAMS_DATA_DIR": str(stack.data_dir), "STREAMS_CATALOG_PATH": str(stack.catalog_path)},
        )
        assert result.exit_code == 0, result.output
    assert all(offset == 0 for offset in committed(stack, "invoice.created").values())

    port = free_port()
    worker = start_worker(stack, "validation,audit,indexing", port, tmp_path / "worker-2.log")
    try:
        wait_for(
            lambda: caught_up(stack, "invoice.created") and caught_up(stack, "workflow.completed", INDEXING_GROUP),
            180,
            lambda: (
                f"the re-drive to commit everything again: {committed(stack, 'invoice.created')}; "
                f"{outcomes(port)}; worker log tail:\n{(tmp_path / 'worker-2.log').read_text()[-4000:]}"
            ),
        )
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        stop_worker(worker, signal.SIGTERM)
    assert f'streams_agent_events_total{{agent="validation",outcome="already-processed"}} {INVOICES}.0' in metrics
    assert side_effects(stack) == before
