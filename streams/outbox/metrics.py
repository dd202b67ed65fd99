"""Prometheus metrics of one outbox relay, on a registry of its own (nothing registers at import).

Names follow `streams_outbox_<what>_<unit>`; `serve` exposes them on /metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["OutboxMetrics"]


class OutboxMetrics:
    """What the relay loop reports; one instance per relay."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.pending = Gauge(
            "streams_outbox_pending_rows", "Committed rows not yet published (parked excluded).", registry=r
        )
        self.oldest_age = Gauge(
            "streams_outbox_oldest_pending_seconds", "Age of the oldest pending row (0 when none).", registry=r
        )
        self.parked = Gauge("streams_outbox_parked_rows", "Rows the relay could not publish and set aside.", registry=r)
        self.parked_total = Counter(
            "streams_outbox_parked_total", "Rows parked by this relay, by reason.", ["reason"], registry=r
        )
        self.relayed = Counter(
            "streams_outbox_relayed_total",
            "Rows the brokers acknowledged (acks=all) and the relay then deleted.",
            ["topic"],
            registry=r,
        )
        self.latency = Histogram(
            "streams_outbox_commit_to_kafka_seconds",
            "From outbox.add to the brokers' acknowledgement.",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0),
        )
        self.database_up = Gauge(
            "streams_outbox_database_up", "1 while the relay reaches its database, else 0.", registry=r
        )
        self.paused_total = Counter(
            "streams_outbox_pauses_total",
            "Times the relay paused because the database or Kafka went away.",
            ["cause"],
            registry=r,
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve /metrics on `host`:`port` from a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)
