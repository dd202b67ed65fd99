"""`streams worker` and `streams search`: run the agents on faust, query the search index.

A worker runs all agents or a chosen subset; scaling out is running more workers in the same group.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

import click
import faust
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.agents import DEFAULT_APP_ID
from streams.agents.engine import TransactionalEngine
from streams.agents.indexing import SearchIndex, index_path, register_indexing_agent
from streams.agents.validation import ValidationAgent
from streams.app import EventDecoder, agent_context, create_app, ensure_changelog_topics
from streams.catalog import load_catalog
from streams.errors import ConfigError
from streams.observability import CONSUMER_LAG, configure_logging
from streams.publish import EventEncoder
from streams.schemas.registry_client import RegistryClient

if TYPE_CHECKING:
    from collections.abc import Callable

    from streams.app import AgentContext
    from streams.catalog import Catalog
    from streams.settings import Settings

AGENTS = ("validation", "audit", "indexing")
log = structlog.get_logger("streams.worker")


def build_worker_app(settings: Settings, agents: tuple[str, ...], *, app_id: str = DEFAULT_APP_ID,
                     web_port: int = 6066, web_host: str = "127.0.0.1",
                     ) -> tuple[faust.App, AgentContext, SearchIndex | None]:
    """The faust app with the chosen agents registered, and the search index when indexing runs."""
    unknown = set(agents) - set(AGENTS)
    if unknown:
        raise ConfigError(f"unknown agent(s) {sorted(unknown)}; choose from {', '.join(AGENTS)}")
    catalog = load_catalog(settings.catalog_path, settings.profile)
    app = create_app(settings, catalog, app_id=app_id, web_port=web_port, web_host=web_host)
    ctx = agent_context(app, settings, catalog)
    index = None
    if "indexing" in agents:
        index = SearchIndex(index_path(ctx))
        register_indexing_agent(ctx, index)
    _register_pages(app, index)
    _register_lag(app)
    replication = max((spec.replication_factor for spec in catalog.topics), default=1)
    ensure_changelog_topics(app, settings.kafka_config(settings.bootstrap_servers()), replication)
    return app, ctx, index


def _register_lag(app: faust.App) -> None:
    """Every few seconds: records between each assigned partition's end and the group's commit (or read position)."""

    async def report_lag() -> None:
        monitor = app.monitor
        for tp in app.consumer.assignment():
            end = monitor.tp_end_offsets.get(tp)
            done = monitor.tp_committed_offsets.get(tp, monitor.tp_read_offsets.get(tp))
            if end is not None and done is not None:
                CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(max(0, end - done))

    app.timer(interval=5.0)(report_lag)


def _register_pages(app: faust.App, index: SearchIndex | None) -> None:
    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        del request
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/search")
    async def search(web: Any, request: Any) -> Any:
        if index is None:
            return web.json({"error": "the indexing agent does not run on this worker"}, status=404)
        query = request.query.get("q", "")
        try:
            hits = index.search(query, tenant=request.query.get("tenant"), limit=int(request.query.get("limit", 20)))
        except ValueError as exc:
            return web.json({"error": str(exc)}, status=400)
        return web.json({"query": query, "hits": hits})


@click.command()
@click.option("--agents", default=",".join(AGENTS), show_default=True,
              help="Comma-separated agents to run on this worker.")
@click.option("--app-id", default=DEFAULT_APP_ID, show_default=True,
              help="Consumer group and state namespace; workers with the same id share the work.")
@click.option("--web-port", default=6066, show_default=True, help="Port of /metrics and /search.")
@click.option("--web-host", default="127.0.0.1", show_default=True,
              help="Interface of the web server (0.0.0.0 in a container, so Prometheus can scrape it).")
@click.option("--log-level", default="INFO", show_default=True)
@click.pass_obj
def worker(settings: Settings, agents: str, app_id: str, web_port: int, web_host: str, log_level: str) -> None:
    """Run the stream agents (faust) until interrupted.

    \b
    Example:
      streams worker
      streams worker --agents validation,audit --web-port 6067
    """
    chosen = tuple(name.strip() for name in agents.split(",") if name.strip())
    configure_logging(log_level)
    app, ctx, index = build_worker_app(settings, chosen, app_id=app_id, web_port=web_port, web_host=web_host)
    stop = threading.Event()
    threads = []
    if "validation" in chosen:
        engine = validation_engine(settings, ctx.catalog, app_id)
        threads.append(threading.Thread(target=_or_stop_worker, args=(engine.run, stop), name="validation",
                                        daemon=True))
    if "audit" in chosen:
        from streams.agents.audit import AuditChainWriter  # noqa: PLC0415 - only when the audit agent runs

        writer = AuditChainWriter(settings, ctx.catalog, app_id=app_id)
        threads.append(threading.Thread(target=_or_stop_worker, args=(writer.run, stop), name="audit-chain",
                                        daemon=True))
    for thread in threads:
        thread.start()
    try:
        faust.Worker(app, loglevel=log_level.lower(), quiet=True).execute_from_commandline()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        if index is not None:
            index.close()


def validation_engine(settings: Settings, catalog: Catalog, app_id: str) -> TransactionalEngine:
    """The validation agent on the transactional engine, in the group `<app id>-validation` (with a registry
    client, decoder and encoder of its own: it runs in a thread beside faust's loop)."""
    registry = RegistryClient(settings.registry_url())
    agent = ValidationAgent(catalog, EventDecoder(registry, max_record_bytes=settings.agent_max_record_bytes),
                            EventEncoder(catalog, registry, source=app_id))
    return TransactionalEngine(settings.kafka_config(settings.bootstrap_servers()), agent,
                               group=f"{app_id}-{agent.name}", data_dir=settings.data_dir,
                               replication=catalog.topic(agent.source).replication_factor)


def _or_stop_worker(run: Callable[[threading.Event], None], stop: threading.Event) -> None:
    """Run a worker thread's loop; if it fails, the whole worker stops (a worker missing an agent must not
    look healthy)."""
    try:
        run(stop)
    except BaseException:  # a Rust panic is a BaseException too; a thread has nobody else to tell
        log.exception("worker.thread.failed", thread=threading.current_thread().name)
        os.kill(os.getpid(), signal.SIGTERM)


@click.command()
@click.argument("query")
@click.option("--tenant", default=None, help="Only documents of this tenant.")
@click.option("--limit", default=20, show_default=True)
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def search(settings: Settings, query: str, tenant: str | None, limit: int, output: str) -> None:
    """Search the events the indexing agent indexed (SQLite FTS5 syntax).

    \b
    Example:
      streams search "payment run" --tenant acme
    """
    path = settings.data_dir / "search" / "index.sqlite"
    if not path.exists():
        raise ConfigError(f"no search index at {path}; run `streams worker` with the indexing agent first")
    index = SearchIndex(path)
    try:
        try:
            hits = index.search(query, tenant=tenant, limit=limit)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    finally:
        index.close()
    if output == "json":
        click.echo(json.dumps(hits, indent=2))
        return
    for hit in hits:
        click.echo(f"{hit['topic']:22s} {hit['tenant'] or '-':10s} {hit['title']}")
    click.echo(f"{len(hits)} hit(s)")
