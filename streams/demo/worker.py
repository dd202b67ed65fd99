"""The demo's worker step: run `streams worker` on the demo batch and report what happened.

Runs the worker as a child process until every invoice has an outcome, then stops it and reads back.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.agents import DEFAULT_APP_ID
from streams.agents.audit_chain import ChainDecoder, read_chain
from streams.agents.audit_verify import verify_entries
from streams.agents.indexing import AGENT as INDEXING
from streams.agents.indexing import TOPICS as INDEXED
from streams.agents.indexing import SearchIndex
from streams.errors import StreamsError
from streams.kafka_util import read_all
from streams.local.processes import free_port
from streams.records import EventDecoder
from streams.schemas.registry_client import RegistryClient

if TYPE_CHECKING:
    from streams.catalog import Catalog
    from streams.settings import KafkaConfig, Settings


@dataclass
class WorkerReport:
    judged: int = 0
    cleared: int = 0
    violating: int = 0
    violations: dict[str, int] = field(default_factory=dict)
    errors: int = 0  # violations of severity ERROR: each is a compliance notification
    dead_letters: int = 0
    chain_entries: int = 0
    verify: str = "not run"
    search_hits: list[dict[str, Any]] = field(default_factory=list)

    def minus(self, earlier: WorkerReport) -> WorkerReport:
        """What happened since `earlier` (outcome counts only)."""
        rules = collections.Counter(self.violations)
        rules.subtract(earlier.violations)
        return WorkerReport(
            self.judged - earlier.judged,
            self.cleared - earlier.cleared,
            self.violating - earlier.violating,
            {k: v for k, v in rules.items() if v > 0},
            self.errors - earlier.errors,
            self.dead_letters - earlier.dead_letters,
        )


def _records(settings: Settings, topic: str) -> list[Any]:
    return read_all(settings.kafka_config(settings.bootstrap_servers()), topic)


def _outcomes(settings: Settings, decoder: EventDecoder) -> WorkerReport:
    report = WorkerReport()
    cleared = {dict(m.headers())["ce_id"] for m in _records(settings, "invoice.cleared")}
    by_invoice: dict[str, set[str]] = collections.defaultdict(set)
    rules: collections.Counter[str] = collections.Counter()
    seen: set[bytes] = set()  # a redelivered outcome has the same id: count it once
    for message in _records(settings, "compliance.violation"):
        event_id = dict(message.headers())["ce_id"]
        if event_id in seen:
            continue
        seen.add(event_id)
        record = decoder.decode(message.value())[1]
        rules[record["rule_code"]] += 1
        report.errors += record["severity"] == "ERROR"
        by_invoice[record["source_event"]["event_id"]].add(record["rule_code"])
    report.cleared, report.violating, report.violations = len(cleared), len(by_invoice), dict(rules)
    report.dead_letters = len(_records(settings, "invoice.created.dlq"))
    report.judged = report.cleared + report.violating + report.dead_letters
    return report


def child_env(settings: Settings) -> dict[str, str]:
    """The environment for the demo's child processes: the same data dir (and so the same stack) and catalog."""
    return {
        **os.environ,
        "STREAMS_DATA_DIR": str(settings.data_dir.resolve()),
        "STREAMS_CATALOG_PATH": str(settings.catalog_path.resolve()),
    }


def _caught_up(kafka: KafkaConfig, group: str, topics: tuple[str, ...]) -> bool:
    """Whether `group` has committed every partition of `topics` up to its end."""
    admin = AdminClient(kafka)
    request = ConsumerGroupTopicPartitions(group)
    committed = {
        (tp.topic, tp.partition): tp.offset
        for tp in admin.list_consumer_group_offsets([request], request_timeout=10)[group].result().topic_partitions
    }
    consumer = Consumer({**kafka, "group.id": "streams-demo-probe"})
    try:
        for topic in topics:
            for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                if high > 0 and committed.get((topic, partition), -1) < high - 1:  # a commit marker may end it
                    return False
    finally:
        consumer.close()
    return True


def run_worker_until(settings: Settings, catalog: Catalog, invoices: int, *, timeout: float) -> WorkerReport:
    """Start a worker, wait until `invoices` have an outcome and the chain caught up, stop it, report."""
    env = child_env(settings)
    with (settings.data_dir / "demo-worker.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "streams.cli", "worker", "--web-port", str(free_port())],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    audited = [spec.name for spec in catalog.topics if spec.audit]
    with RegistryClient(settings.registry_url()) as registry:
        decoder = EventDecoder(registry)
        try:
            deadline = time.monotonic() + timeout
            baseline = _outcomes(settings, decoder)  # what earlier demo runs left in the topics
            report = _outcomes(settings, decoder).minus(baseline)
            while report.judged < invoices:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise StreamsError(
                        f"the worker judged {report.judged} of {invoices} invoices; see "
                        f"{settings.data_dir / 'demo-worker.log'}"
                    )
                time.sleep(1)
                report = _outcomes(settings, decoder).minus(baseline)
            sources = sum(len(_records(settings, name)) for name in audited)
            while len(_records(settings, "audit.trail")) < sources and time.monotonic() < deadline:
                time.sleep(1)
            kafka = settings.kafka_config(settings.bootstrap_servers())
            while not _caught_up(kafka, f"{DEFAULT_APP_ID}-{INDEXING}", INDEXED) and time.monotonic() < deadline:
                time.sleep(1)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
    kafka = settings.kafka_config(settings.bootstrap_servers())
    with RegistryClient(settings.registry_url()) as registry:
        chain = [entry for _, entry in read_chain(kafka, ChainDecoder(registry), "audit.trail")]
    result = verify_entries(chain, "audit.trail", kafka)
    report.chain_entries = len(chain)
    report.verify = "intact, every source record re-read" if result.ok else f"BROKEN: {result.to_json()}"
    index = SearchIndex(settings.data_dir / "search" / "index.sqlite")
    try:
        report.search_hits = index.search("cleared", limit=2)
    finally:
        index.close()
    return report
