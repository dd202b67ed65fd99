"""A single-writer agent: one elected instance reads every partition of its sources into one state.

For an agent whose output needs one total order (the audit hash chain): the instances of the app elect a
writer through a consumer group on a one-partition leader topic; the writer takes a fixed transactional id
(which fences any earlier writer), assigns itself every source partition at the offsets committed with its
last transaction, and runs the engine's loop over one state (changelog partition 0). Losing the election,
or being fenced, steps it down; it takes over again when elected (docs/decisions/0022).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic

from streams.errors import StreamsError
from streams.gc_tuning import throughput_gc
from streams.runtime.contract import MARK_KEY
from streams.runtime.engine import FETCH_QUEUE_BACKOFF_MS, TransactionalEngine

if TYPE_CHECKING:
    import threading

    from streams.observability import AgentMetrics
    from streams.runtime.contract import BatchAgent, EngineConfig
    from streams.settings import KafkaConfig

log = structlog.get_logger("streams.runtime.single")

SLOT = 0  # the one state (and changelog partition) every source partition's records use


class SingleWriterEngine(TransactionalEngine):
    """Runs one BatchAgent as the single elected writer of its app (see the module docstring).

    `group` holds the committed source offsets and names the changelog; `election_group` and `leader_topic`
    elect the writer; every instance of one agent must use the same names, or they would not fence each other.
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        agent: BatchAgent,
        *,
        group: str,
        election_group: str,
        leader_topic: str,
        transactional_id: str,
        data_dir: Any,
        replication: int = 1,
        config: EngineConfig | None = None,
        refresh_interval_s: float = 30.0,
        retry_backoff_s: float = 2.0,
        session_timeout_ms: int = 6000,
        log_name: str = "agent",
        metrics: AgentMetrics | None = None,
    ) -> None:
        super().__init__(
            kafka,
            agent,
            group=group,
            data_dir=data_dir,
            replication=replication,
            config=config,
            transactional_id=transactional_id,
            metrics=metrics,
        )
        self.election_group, self.leader_topic = election_group, leader_topic
        self.refresh_interval_s, self.retry_backoff_s = refresh_interval_s, retry_backoff_s
        self.election_timeout_ms = session_timeout_ms
        self.log_name = log_name  # the events say "<log name>.leader.elected" and so on
        self.elections = 0  # times this instance became the writer
        self._assigned = False  # the group gave us the leader partition
        self._was_fenced = False
        self._sources: set[tuple[str, int]] = set()
        self._refresh_at = 0.0
        self._seed = getattr(agent, "seed", None)
        # leadership(True, state) on election (returns fields for the log line), (False, None) on stepping down
        self._leadership: Any = getattr(agent, "leadership", None)

    @property
    def leading(self) -> bool:
        return self._producer is not None

    def _event(self, what: str) -> str:
        return f"{self.log_name}.{what}"

    # ------------------------------------------------------------------ the election loop

    def run(self, stop: threading.Event) -> None:
        """Write whenever elected, until `stop` is set; StreamsError at once if the topics are missing."""
        self._prepare()
        election = Consumer(
            {
                **self.kafka,
                "group.id": self.election_group,
                "enable.auto.commit": False,
                "session.timeout.ms": self.election_timeout_ms,
                "heartbeat.interval.ms": max(500, self.election_timeout_ms // 4),
            }
        )
        election.subscribe([self.leader_topic], on_assign=self._elected, on_revoke=self._deposed, on_lost=self._deposed)
        log.info(
            self._event("writer.started"),
            agent=self.agent.name,
            group=self.election_group,
            sources=list(self.agent.sources),
        )
        self.running = True
        retry_at = 0.0
        try:
            with throughput_gc():
                while not stop.is_set():
                    election.poll(0 if self.leading else 0.2)  # heartbeats and (re)assignments of the election
                    if not self._assigned:
                        self._step_down("revoked")
                        continue
                    if time.monotonic() < retry_at:
                        stop.wait(0.05)
                        continue
                    try:
                        self._lead_one_step()
                    except (KafkaException, StreamsError) as exc:
                        log.warning(self._event("writer.error"), agent=self.agent.name, error=str(exc))
                        self._step_down("error")
                        retry_at = time.monotonic() + self.retry_backoff_s
        finally:
            self.running = False
            self._step_down("stopped")
            election.close()

    def _lead_one_step(self) -> None:
        if not self.leading:
            self._take_over()
        if time.monotonic() >= self._refresh_at:  # partitions added to a source topic
            self._assign_sources()
        consumer = self._consumer
        assert consumer is not None  # noqa: S101 - _take_over made it
        self._step(consumer)
        if self._was_fenced:
            raise StreamsError(f"another writer took the transactional id '{self.transactional_id}'")

    def _internal_topics(self, _source_partitions: int) -> list[NewTopic]:
        """One state, so a one-partition changelog; and the leader topic the election runs on."""
        return [
            NewTopic(
                self.changelog,
                num_partitions=1,
                replication_factor=self.replication,
                config={"cleanup.policy": "compact"},
            ),
            NewTopic(self.leader_topic, num_partitions=1, replication_factor=self.replication),
        ]

    def _elected(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            self._assigned = True

    def _deposed(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            self._assigned = False

    # ------------------------------------------------------------------ taking over and stepping down

    def _take_over(self) -> None:
        """Fence every earlier writer, restore the one state (seeded by the agent if it is empty), and read
        every source partition from the offsets the last transaction committed."""
        self._was_fenced = False
        self._producer = self._new_producer()  # init_transactions: an earlier writer's open transaction aborts
        self._consumer = Consumer(
            {
                **self.kafka,
                "group.id": self.group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
                "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
            }
        )  # assigned, never subscribed: this group has no members, only the writer's committed offsets
        try:
            self.state.clear()
            self._restore([SLOT])
            state = self.state[SLOT]
            if not state and self._seed is not None:
                entries, positions = self._seed()
                for key, value in entries.items():
                    state[key] = value
                for (topic, partition), offset in positions.items():
                    if topic in self.topic_ids:
                        state[self._mark_name(topic, partition)] = (offset, self.topic_ids[topic])
            self._sources.clear()
            self._assign_sources()
        except BaseException:
            self._step_down("failed to take over")
            raise
        self.elections += 1
        described = self._leadership(True, self.state[SLOT]) if self._leadership is not None else None
        log.info(
            self._event("leader.elected"),
            agent=self.agent.name,
            transactional_id=self.transactional_id,
            sources=len(self._sources),
            elections=self.elections,
            **(described or {}),
        )

    def _assign_sources(self) -> None:
        """Every partition of every source that is not assigned yet, at its committed offset."""
        consumer = self._consumer
        assert consumer is not None  # noqa: S101 - _take_over made it
        found: list[tuple[str, int]] = []
        for topic in self.agent.sources:
            metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if metadata is None or metadata.error is not None:
                log.warning(self._event("source.missing"), topic=topic)
                continue
            found.extend((topic, p) for p in metadata.partitions if (topic, p) not in self._sources)
        if found:
            committed = consumer.committed([TopicPartition(t, p) for t, p in found], timeout=30)
            consumer.incremental_assign(
                [
                    TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                    for tp in committed
                ]
            )
            self._sources.update(found)
        self._refresh_at = time.monotonic() + self.refresh_interval_s

    def _step_down(self, reason: str) -> None:
        """Stop writing: commit what is open if we still may, else abort; let go of the sources and the state."""
        if self._producer is None:
            return
        if not self._was_fenced:
            self._finish_transaction()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()
        self._close_producer()
        self.state.clear()
        self._sources.clear()
        if self._leadership is not None:
            self._leadership(False, None)
        log.info(self._event("leader.stepped_down"), agent=self.agent.name, reason=reason)

    # ------------------------------------------------------------------ the engine's hooks

    def _slot(self, _partition: int) -> int:
        return SLOT

    def _mark_name(self, topic: str, partition: int) -> str:
        return f"{MARK_KEY}:{topic}:{partition}"

    def _fenced(self) -> None:
        """Fenced: step down (the loop does it) rather than fence the new writer back."""
        self._was_fenced = True

    def _rewind(self, partitions: list[int]) -> None:
        """The state from the changelog, and every source partition back to its committed offset."""
        consumer = self._consumer
        if consumer is None or not partitions or self._was_fenced:
            return
        self._restore([SLOT])
        committed = consumer.committed([TopicPartition(t, p) for t, p in sorted(self._sources)], timeout=30)
        for tp in committed:
            consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING))

    def _source_partitions(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in sorted(self._sources)]
