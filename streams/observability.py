"""Logging (structlog, JSON lines) and the Prometheus metrics of the agents and the registry server.

Metric names follow `streams_<subsystem>_<what>_<unit>`; each metrics class registers in a registry of its own
when it is created (the bridge, webhooks and outbox have theirs beside their code); `configure_logging` is
called by entry points only.
"""

from __future__ import annotations

import logging
import sys

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)


class AgentMetrics:
    """The agents' metrics in a registry of their own: one per worker (every app it hosts shares it, and its
    /metrics serves it), or per App/test when run alone. Nothing is registered at import (decision 0024)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or _process_registry()
        r = self.registry
        self.events = Counter(
            "streams_agent_events_total", "Events handled, by agent and outcome.", ["agent", "outcome"], registry=r
        )
        self.processing = Histogram(
            "streams_agent_processing_seconds",
            "Time to handle one event, by agent (batch agents: the batch's mean).",
            ["agent"],
            registry=r,
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.end_to_end = Histogram(
            "streams_agent_end_to_end_seconds",
            "From the source record's timestamp to the agent's outputs sent, by agent.",
            ["agent"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )
        self.commit = Histogram(
            "streams_agent_commit_seconds",
            "Time to commit one transaction (state writes, offsets, commit), by agent.",
            ["agent"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
        )
        self.dlq = Counter(
            "streams_agent_dlq_total", "Records parked in a dead-letter topic.", ["agent", "topic"], registry=r
        )
        self.violations = Counter(
            "streams_validation_violations_total", "Rule violations found, by rule code.", ["rule"], registry=r
        )
        self.lag = Gauge(
            "streams_agent_consumer_lag_records",
            "Records behind the end of each partition, by agent.",
            ["agent", "topic", "partition"],
            registry=r,
        )
        # The audit chain writer's (commit time: streams_agent_commit_seconds{agent="audit"}, as every agent's).
        self.audit_entries = Counter(
            "streams_audit_entries_total", "Audit chain entries committed.", ["chain"], registry=r
        )
        self.audit_leader = Gauge(
            "streams_audit_leader", "1 while this process is the audit chain writer.", ["chain"], registry=r
        )
        self.audit_elections = Counter(
            "streams_audit_elections_total", "Times this process became the chain writer.", ["chain"], registry=r
        )


class RegistryMetrics:
    """The schema registry server's metrics, in its own registry (one per server)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or _process_registry()
        self.requests = Counter(
            "streams_registry_requests_total",
            "Schema registry requests, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "streams_registry_request_seconds",
            "Time to answer a schema registry request, by method and route.",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
        )


def _process_registry() -> CollectorRegistry:
    """A fresh registry with the process, platform and GC collectors the default one has (the pages that served
    the default registry keep serving them)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for our loggers and for the libraries' stdlib logging."""
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*processors, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *processors],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
