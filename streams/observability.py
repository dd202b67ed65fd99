"""Logging (structlog, JSON lines) and the Prometheus metrics every component reports.

Metric names follow `streams_<subsystem>_<what>_<unit>`; `configure_logging` is called by entry points only.
"""

from __future__ import annotations

import logging
import sys

import structlog
from prometheus_client import Counter, Gauge, Histogram

EVENTS_TOTAL = Counter("streams_agent_events_total", "Events handled, by agent and outcome.", ["agent", "outcome"])
PROCESSING_SECONDS = Histogram(
    "streams_agent_processing_seconds", "Time to handle one event, by agent (batch agents: the batch's mean).",
    ["agent"],
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
END_TO_END_SECONDS = Histogram(
    "streams_agent_end_to_end_seconds", "From the source record's timestamp to the agent's outputs sent, by agent.",
    ["agent"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
COMMIT_SECONDS = Histogram(
    "streams_agent_commit_seconds", "Time to commit one transaction (state writes, offsets, commit), by agent.",
    ["agent"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)
DLQ_TOTAL = Counter("streams_agent_dlq_total", "Records parked in a dead-letter topic.", ["agent", "topic"])
VIOLATIONS_TOTAL = Counter("streams_validation_violations_total", "Rule violations found, by rule code.", ["rule"])
CONSUMER_LAG = Gauge("streams_agent_consumer_lag_records", "Records behind the end of each partition, by agent.",
                     ["agent", "topic", "partition"])
REGISTRY_REQUESTS = Counter("streams_registry_requests_total", "Schema registry requests, by method, route and status.",
                            ["method", "route", "status"])
REGISTRY_SECONDS = Histogram(
    "streams_registry_request_seconds", "Time to answer a schema registry request, by method and route.",
    ["method", "route"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)


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
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.JSONRenderer()],
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *processors],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
