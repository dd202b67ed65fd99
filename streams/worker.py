"""`streams worker` and `streams search`: host the built-in agents and users' apps on the one runtime.

A worker runs every agent of its apps in a thread each (one engine per agent, decision 0018) and serves
/metrics, /health and /search; scaling out is running more workers with the same apps.
"""

from __future__ import annotations

import importlib
import json
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

import click
import structlog

from streams.agents import DEFAULT_APP_ID
from streams.cli_options import OUTPUT_TABLE
from streams.errors import ConfigError, StreamsError

if TYPE_CHECKING:
    from collections.abc import Callable

    from streams.agents.indexing import SearchIndex
    from streams.catalog import Catalog
    from streams.observability import AgentMetrics
    from streams.runtime.app import App
    from streams.settings import Settings

BUILT_INS = ("validation", "audit", "indexing")
OPT_IN = ("archive",)  # run only when named: the archiver (streams.archive), e.g. --agents validation,archive
log = structlog.get_logger("streams.worker")


def load_app(reference: str) -> App:
    """The App named by `module:attribute` (the module imported from the working directory or sys.path)."""
    from streams.runtime.app import App  # noqa: PLC0415 - `streams worker --help` loads no runtime

    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"--app {reference!r}: write it as module:attribute, e.g. examples.velocity:app")
    if "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: the project's own modules are importable
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--app {reference!r}: cannot import {module_name}: {exc}") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise ConfigError(f"--app {reference!r}: {module_name}.{attribute} is {type(app).__name__}, not a streams.App")
    if not app.agents:
        raise ConfigError(f"--app {reference!r}: the app '{app.id}' has no agents (@app.agent)")
    return app


def built_in_apps(
    settings: Settings, catalog: Catalog, chosen: tuple[str, ...], app_id: str, metrics: AgentMetrics | None = None
) -> tuple[list[App], SearchIndex | None]:
    """The built-in agents' apps (counting in `metrics`, the worker's), and the search index."""
    unknown = set(chosen) - set(BUILT_INS) - set(OPT_IN)
    if unknown:
        raise ConfigError(f"unknown agent(s) {sorted(unknown)}; choose from {', '.join(BUILT_INS + OPT_IN)}")
    apps: list[App] = []
    index = None
    if "validation" in chosen:
        from streams.agents.validation import validation_app  # noqa: PLC0415 - loads the native judge

        apps.append(validation_app(settings, catalog, app_id, metrics))
    if "audit" in chosen:
        from streams.agents.audit import audit_app  # noqa: PLC0415

        apps.append(audit_app(settings, catalog, app_id, metrics=metrics))
    if "indexing" in chosen:
        from streams.agents.indexing import SearchIndex, index_path, indexing_app  # noqa: PLC0415

        index = SearchIndex(index_path(settings))
        apps.append(indexing_app(app_id, index, catalog))
    if "archive" in chosen:
        from streams.archive.agent import archive_app  # noqa: PLC0415

        apps.append(archive_app(settings, catalog, metrics=metrics))
    return apps, index


class Worker:
    """The engines of every app, a thread each, and the web server; `run` until stopped."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        apps: list[App],
        *,
        web_host: str,
        web_port: int,
        search: Callable[[str, str | None, int], list[dict[str, Any]]] | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        """`metrics`: the one registry every hosted agent counts in and /metrics serves (new if not given)."""
        from streams.observability import AgentMetrics  # noqa: PLC0415 - the worker's side only
        from streams.runtime.web import WorkerWeb  # noqa: PLC0415

        self.stop = threading.Event()
        self.metrics = metrics or AgentMetrics()
        self.engines = [engine for app in apps for engine in app.engines(settings, catalog, self.metrics)]
        self.threads = [
            threading.Thread(
                target=self._or_stop_worker, args=(engine.run,), name=f"agent-{engine.agent.name}", daemon=True
            )
            for engine in self.engines
        ]
        self.failed: list[str] = []
        self.web = WorkerWeb(web_host, web_port, health=self.health, search=search, metrics=self.metrics.registry)

    def health(self) -> dict[str, bool]:
        return {engine.agent.name: engine.running for engine in self.engines}

    def run(self) -> None:
        """Until SIGTERM or SIGINT: then every engine commits what it has and leaves its group (a drain)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        self.web.start()
        for thread in self.threads:
            thread.start()
        log.info("worker.started", agents=[t.name for t in self.threads], web_port=self.web.port)
        try:
            while not self.stop.wait(0.5):
                pass
        finally:
            self.stop.set()
            for thread in self.threads:
                thread.join(timeout=30)
            self.web.close()
            log.info("worker.stopped", failed=self.failed)
        if self.failed:
            raise StreamsError(f"worker stopped because {', '.join(self.failed)} failed; see the log above")

    def _or_stop_worker(self, run: Callable[[threading.Event], None]) -> None:
        """Run one loop; if it fails, the whole worker stops (a worker missing an agent must not look healthy)."""
        try:
            run(self.stop)
        except BaseException:  # a Rust panic is a BaseException too; a thread has nobody else to tell
            log.exception("worker.thread.failed", thread=threading.current_thread().name)
            self.failed.append(threading.current_thread().name)
            self.stop.set()


@click.command()
@click.option(
    "--agents",
    default=None,
    help=f"Comma-separated built-in agents ({', '.join(BUILT_INS)}; and {', '.join(OPT_IN)} when named); "
    "the first three unless --app is given.",
)
@click.option(
    "--app",
    "app_refs",
    multiple=True,
    metavar="MODULE:ATTR",
    help="A streams.App to host (repeatable), e.g. examples.velocity:app.",
)
@click.option(
    "--app-id",
    default=DEFAULT_APP_ID,
    show_default=True,
    help="The built-ins' id: consumer groups <id>-<agent>; workers with the same id share the work.",
)
@click.option("--web-port", default=6066, show_default=True, help="Port of /metrics, /health and /search.")
@click.option(
    "--web-host",
    default="127.0.0.1",
    show_default=True,
    help="Interface of the web server (0.0.0.0 in a container, so Prometheus can scrape it).",
)
@click.option("--log-level", default="INFO", show_default=True)
@click.pass_obj
def worker(
    settings: Settings,
    agents: str | None,
    app_refs: tuple[str, ...],
    app_id: str,
    web_port: int,
    web_host: str,
    log_level: str,
) -> None:
    """Run stream agents until SIGTERM: the built-ins, and the apps given with --app.

    \b
    Example:
      streams worker
      streams worker --agents validation,audit --web-port 6067
      streams worker --app examples.velocity:app
    """
    chosen = tuple(
        name.strip() for name in (agents or ("" if app_refs else ",".join(BUILT_INS))).split(",") if name.strip()
    )
    from streams.catalog import load_catalog  # noqa: PLC0415 - `streams worker --help` loads none of these
    from streams.observability import AgentMetrics, configure_logging  # noqa: PLC0415

    configure_logging(log_level)
    settings.bootstrap_servers()  # an unreachable cluster is one line before anything else is tried
    catalog = load_catalog(settings.catalog_path, settings.profile)
    apps = [load_app(reference) for reference in app_refs]
    metrics = AgentMetrics()  # one registry for every agent of this process: /metrics serves it
    built_ins, index = built_in_apps(settings, catalog, chosen, app_id, metrics)
    search = None
    if index is not None:
        search = lambda words, tenant, limit: index.search(words, tenant=tenant, limit=limit)  # noqa: E731
    try:
        Worker(
            settings, catalog, [*built_ins, *apps], web_host=web_host, web_port=web_port, search=search, metrics=metrics
        ).run()
    finally:
        if index is not None:
            index.close()


@click.command()
@click.argument("query")
@click.option("--tenant", default=None, help="Only documents of this tenant.")
@click.option("--limit", default=20, show_default=True)
@click.option("--fts", is_flag=True, help="QUERY is FTS5 syntax (prefix*, OR, NEAR) instead of plain words.")
@OUTPUT_TABLE
@click.pass_obj
def search(settings: Settings, query: str, tenant: str | None, limit: int, fts: bool, output: str) -> None:
    """Search the events the indexing agent indexed: plain words, each matched as written.

    \b
    Example:
      streams search "payment run" --tenant acme
      streams search KSA-ICV
      streams search 'invoice AND pay*' --fts
    """
    from streams.agents.indexing import SearchIndex, index_path  # noqa: PLC0415 - keep `--help` fast

    path = index_path(settings)
    if not path.exists():
        raise ConfigError(f"no search index at {path}; run `streams worker` with the indexing agent first")
    index = SearchIndex(path)
    try:
        try:
            hits = index.search(query, tenant=tenant, limit=limit, fts=fts)
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
