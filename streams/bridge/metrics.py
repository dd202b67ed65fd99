"""Prometheus metrics of one bridge process, on a registry of its own (nothing registers at import).

Names follow `streams_bridge_<what>_<unit>`; `serve` exposes them on /metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["BridgeMetrics"]


class BridgeMetrics:
    """Counters and gauges the bridge loop updates; one instance per bridge."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.published = Counter(
            "streams_bridge_tasks_published_total",
            "Task messages sent to Redis (a retry after an outage counts again).",
            ["queue"],
            registry=r,
        )
        self.confirmed = Counter(
            "streams_bridge_tasks_confirmed_total",
            "Task messages Redis confirmed (they count toward committed offsets).",
            ["queue", "route"],
            registry=r,
        )
        self.failed = Counter(
            "streams_bridge_tasks_failed_total",
            "Task pushes that Redis did not confirm (retried after backoff).",
            ["queue"],
            registry=r,
        )
        self.redelivered = Counter(
            "streams_bridge_tasks_redelivered_total",
            "Confirmed tasks pushed again because a broker or worker lost them.",
            registry=r,
        )
        self.dead_letters = Counter(
            "streams_bridge_dead_letters_total",
            "Records parked in <topic>.dlq (undecodable or unroutable).",
            ["topic", "error"],
            registry=r,
        )
        self.records = Counter(
            "streams_bridge_records_total", "Records consumed, by outcome.", ["topic", "outcome"], registry=r
        )
        self.in_flight = Gauge(
            "streams_bridge_inflight_tasks", "Tasks consumed from Kafka and not yet confirmed by Redis.", registry=r
        )
        self.in_flight_records = Gauge(
            "streams_bridge_inflight_records", "Records consumed and not yet committable.", registry=r
        )
        self.paused = Gauge(
            "streams_bridge_paused_partitions", "Partitions paused by backpressure or outage.", registry=r
        )
        self.lag = Gauge(
            "streams_bridge_consumer_lag_messages",
            "High watermark minus committed offset.",
            ["topic", "partition"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "streams_bridge_queue_depth_tasks", "Ready tasks in a Celery queue.", ["queue"], registry=r
        )
        self.redis_up = Gauge(
            "streams_bridge_redis_up", "1 while Redis confirms pushes, 0 during an outage.", registry=r
        )
        self.push_seconds = Histogram(
            "streams_bridge_push_seconds",
            "Duration of one batch push to Redis.",
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve /metrics on `host`:`port` from a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)
