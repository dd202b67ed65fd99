"""Prometheus metrics of one webhook runner, on a registry of its own (nothing registers at import).

Names follow `streams_webhooks_<what>_<unit>`; `serve` exposes them on /metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["WebhookMetrics"]


class WebhookMetrics:
    """Counters and gauges the runner updates; one instance per runner."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records = Counter(
            "streams_webhooks_records_total",
            "Records consumed, by outcome (routed, filtered, dead_lettered).",
            ["topic", "outcome"],
            registry=r,
        )
        self.deliveries = Counter(
            "streams_webhooks_deliveries_total",
            "Deliveries finished, by outcome (delivered, dead_lettered).",
            ["route", "outcome"],
            registry=r,
        )
        self.attempts = Counter(
            "streams_webhooks_attempts_total",
            "HTTP attempts, by result (2xx, 4xx, 5xx, 429, timeout, connect, ...).",
            ["route", "result"],
            registry=r,
        )
        self.attempt_seconds = Histogram(
            "streams_webhooks_attempt_seconds",
            "Duration of one HTTP attempt.",
            ["route"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )
        self.dead_letters = Counter(
            "streams_webhooks_dead_letters_total", "Records parked in <topic>.dlq.", ["topic", "reason"], registry=r
        )
        self.in_flight = Gauge(
            "streams_webhooks_inflight_records", "Records consumed and not yet committable.", registry=r
        )
        self.circuit_open = Gauge(
            "streams_webhooks_circuit_open", "1 while an endpoint's breaker is open.", ["route"], registry=r
        )
        self.paused = Gauge(
            "streams_webhooks_paused_partitions", "Partitions paused (in-flight bound, registry).", registry=r
        )
        self.lag = Gauge(
            "streams_webhooks_consumer_lag_messages",
            "High watermark minus committed offset.",
            ["topic", "partition"],
            registry=r,
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve /metrics on `host`:`port` from a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)
