"""The public stream-processing API: an App with agents, tables and windows, run by `streams worker --app`.

Faust's shape (`App`, `@app.agent`, `app.table(...).tumbling(...)`, `await app.send(...)`) on the one
exactly-once runtime of streams.runtime.engine (docs/decisions/0018).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from streams.observability import AgentMetrics
from streams.runtime.contract import EngineConfig, Guarantee
from streams.runtime.tables import SCOPE, Table, WindowedTable

if TYPE_CHECKING:
    from pydantic import BaseModel

    from streams.catalog import Catalog
    from streams.records import SourceRecord
    from streams.runtime.engine import TransactionalEngine
    from streams.runtime.runner import AgentRunner
    from streams.settings import Settings

AgentKind = Literal["stream", "handler", "batch"]
GUARANTEES: tuple[Guarantee, ...] = ("exactly_once", "at_least_once")


@dataclass(frozen=True)
class AgentDef:
    """One agent as its app declares it."""

    name: str
    topics: tuple[str, ...]
    fn: Callable[..., Any]
    kind: AgentKind
    typed: bool  # events as the generated pydantic models (else the decoded dicts)
    single_writer: bool = False  # one elected instance reads every partition (batch agents)


class App:
    """A stream-processing application: its agents, its tables and how they run.

    `id` prefixes every consumer group (`<id>-<agent>`), changelog and transactional id of the app, so workers
    started with the same app share its partitions. Settings and the catalog come from the environment
    (STREAMS_*), as everywhere else, unless given.

    Example:
        app = App("velocity")
        per_minute = app.table("actions-per-minute", default=int).tumbling(60, expires=3600)

        @app.agent("user.action")
        async def velocity(stream):
            async for event in stream:
                per_minute[event.user_id] += 1
    """

    def __init__(
        self,
        id: str,
        *,
        settings: Settings | None = None,
        catalog: Catalog | None = None,
        processing_guarantee: Guarantee = "exactly_once",
        commit_interval: float = 0.025,
        max_open_records: int | None = None,
        max_attempts: int = 3,
        retry_backoff: float = 0.2,
        source: str | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        if processing_guarantee not in GUARANTEES:
            raise ValueError(
                f"processing_guarantee must be one of {', '.join(GUARANTEES)}; got {processing_guarantee!r}"
            )
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if max_open_records is not None and max_open_records < 1:
            raise ValueError("max_open_records must be at least 1")
        self.id = id
        self.settings, self.catalog = settings, catalog
        self.processing_guarantee: Guarantee = processing_guarantee
        self.commit_interval = commit_interval
        # While behind, a transaction commits after this many records (or EngineConfig.backlog_commit_s);
        # None keeps the engine's default. An agent without outputs (the archiver) takes larger ones.
        self.max_open_records = EngineConfig.max_open_records if max_open_records is None else max_open_records
        self.max_attempts, self.retry_backoff = max_attempts, retry_backoff
        self.source = source or id  # ce_source of what the app sends
        # Its own registry unless the host (the worker) shares one between its apps, so /metrics serves them all.
        self.metrics = metrics or AgentMetrics()
        self.agents: list[AgentDef] = []
        self.tables: dict[str, Table] = {}
        self.commit_hooks: list[Callable[[], None]] = []
        self._runners: list[AgentRunner] = []

    # ---------------------------------------------------------------- declaring

    def table(self, name: str, *, default: Callable[[], Any] | None = None) -> Table:
        """A changelog-backed table; `.tumbling(size)` or `.hopping(size, step)` on it gives a windowed one.

        Windowed tables must be assigned back (`t = app.table(...).tumbling(60)`); the app keeps the last
        table declared under a name.
        """
        table = _AppTable(self, name, default)
        self.tables[name] = table
        return table

    def agent(
        self,
        topics: str | Sequence[str],
        *,
        name: str | None = None,
        typed: bool = True,
        batch: bool = False,
        single_writer: bool = False,
    ) -> Callable[[Any], Any]:
        """Register an agent on catalog topics (several topics must be co-partitioned: same key, same count).

        - `async def f(stream)`: iterate `async for event in stream`, Faust style;
        - `def f(event)`: a plain handler returning its outputs: None, or an iterable of `(topic, payload)`
          pairs or event models (the catalog names their topic);
        - `batch=True`: `def f(records, state, out)` gets raw confluent-kafka messages, the partition's state
          dict and the engine's Output: the low-level form for native fast paths (the validation agent). An
          object with such a `handle` method may be registered instead; its optional engine hooks (`seed`,
          `committed`, `aborted`, `leadership`, `full`: streams.runtime.engine and .single) are used too.
        `typed=False` hands the decoded dicts instead of the generated models. `single_writer=True` (batch
        agents): one elected instance of the app reads every partition of the topics, in one state, for an
        output that needs one total order (the audit chain; streams.runtime.single).
        """
        wanted = (topics,) if isinstance(topics, str) else tuple(topics)
        if not wanted:
            raise ValueError("an agent needs at least one topic")

        if single_writer and not batch:
            raise ValueError("single_writer=True is an option of batch agents (batch=True)")

        def register(fn: Any) -> Any:
            kind: AgentKind = "batch" if batch else "stream" if inspect.iscoroutinefunction(fn) else "handler"
            agent_name = name or str(getattr(fn, "__name__", None) or type(fn).__name__.lower())
            if any(existing.name == agent_name for existing in self.agents):
                raise ValueError(f"app '{self.id}' already has an agent named '{agent_name}'")
            self.agents.append(AgentDef(agent_name, wanted, fn, kind, typed, single_writer))
            return fn

        return register

    def before_commit(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Call `fn` in the agent's thread just before each of its transactions commits: the place to flush
        side effects outside Kafka (at-least-once; make them idempotent, e.g. keyed by event id)."""
        self.commit_hooks.append(fn)
        return fn

    # ---------------------------------------------------------------- inside an agent

    async def send(self, topic: str | BaseModel, payload: Any = None, *, key: str | bytes | None = None) -> None:
        """Send an event (schema-checked, keyed by the catalog) with the handled event's outcome."""
        self.send_nowait(topic, payload, key=key)

    def send_nowait(self, topic: str | BaseModel, payload: Any = None, *, key: str | bytes | None = None) -> None:
        """`send` for plain handlers and window callbacks."""
        runner = _current_runner()
        runner.queue(topic, payload, key)

    def current_event(self) -> SourceRecord:
        """Where the event being handled came from: topic, partition, offset, timestamp, key, headers."""
        return _current_runner().current_record()

    # ---------------------------------------------------------------- running (the worker's side)

    def engines(
        self, settings: Settings, catalog: Catalog, metrics: AgentMetrics | None = None
    ) -> list[TransactionalEngine]:
        """One engine per agent, ready to run in a thread each, counting in `metrics` (default: the app's)."""
        from streams.runtime.engine import TransactionalEngine  # noqa: PLC0415 - the worker's side only
        from streams.runtime.runner import AgentRunner, Resources  # noqa: PLC0415
        from streams.runtime.single import SingleWriterEngine  # noqa: PLC0415

        settings = self.settings or settings
        catalog = self.catalog or catalog
        metrics = metrics or self.metrics
        # A refused login or TLS handshake: one line before any engine starts, not librdkafka retrying forever.
        settings.check_kafka_login(settings.bootstrap_servers())
        resources = Resources.open(settings, catalog, source=self.source)
        engines: list[TransactionalEngine] = []
        for agent in self.agents:
            for topic in agent.topics:
                catalog.topic(topic)  # CatalogError naming the topic if it is not declared
            runner = AgentRunner(self, agent, resources, metrics)
            self._runners.append(runner)
            group = f"{self.id}-{agent.name}"
            config = EngineConfig(
                commit_interval_s=self.commit_interval,
                max_open_records=self.max_open_records,
                guarantee=self.processing_guarantee,
                transaction_timeout_ms=60_000,
            )
            replication = max(catalog.topic(topic).replication_factor for topic in agent.topics)
            kafka = settings.kafka_config(settings.bootstrap_servers())
            if agent.single_writer:
                engines.append(
                    SingleWriterEngine(
                        kafka,
                        runner,
                        group=group,
                        election_group=f"{group}-leader",
                        leader_topic=f"{group}-leader",
                        transactional_id=group,
                        data_dir=settings.data_dir,
                        replication=replication,
                        config=config,
                        log_name=agent.name,
                        metrics=metrics,
                    )
                )
            else:
                engines.append(
                    TransactionalEngine(
                        kafka,
                        runner,
                        group=group,
                        data_dir=settings.data_dir,
                        replication=replication,
                        config=config,
                        metrics=metrics,
                    )
                )
        return engines

    def windowed_tables(self) -> list[WindowedTable]:
        return [table for table in self.tables.values() if isinstance(table, WindowedTable)]


class _AppTable(Table):
    """A table that registers its windowed form with the app, under the same name."""

    def __init__(self, app: App, name: str, default: Callable[[], Any] | None) -> None:
        super().__init__(name, default)
        self._app = app

    def tumbling(
        self,
        size: float,
        *,
        expires: float | None = None,
        grace: float = 0.0,
        on_window_close: Callable[..., Any] | None = None,
    ) -> WindowedTable:
        table = super().tumbling(size, expires=expires, grace=grace, on_window_close=on_window_close)
        self._app.tables[self.name] = table
        return table

    def hopping(
        self,
        size: float,
        step: float,
        *,
        expires: float | None = None,
        grace: float = 0.0,
        on_window_close: Callable[..., Any] | None = None,
    ) -> WindowedTable:
        table = super().hopping(size, step, expires=expires, grace=grace, on_window_close=on_window_close)
        self._app.tables[self.name] = table
        return table


def _current_runner() -> AgentRunner:
    runner = getattr(SCOPE, "runner", None)
    if runner is None:
        raise RuntimeError("send() and current_event() work only inside an agent, while it handles an event")
    return runner  # type: ignore[no-any-return]
