"""Metrics are per instance: nothing registers at import, and the worker's page serves the registry it is given."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from streams.observability import AgentMetrics, RegistryMetrics
from streams.runtime.web import WorkerWeb

ROOT = Path(__file__).resolve().parents[1]
# Every module that defines or uses metrics, imported in a fresh interpreter; then the default registry's names.
PROBE = """
import importlib, json
from prometheus_client import REGISTRY
for name in ("streams.observability", "streams.runtime.engine", "streams.runtime.runner", "streams.runtime.app",
             "streams.agents.audit", "streams.agents.validation", "streams.registry.server", "streams.worker",
             "streams.bridge.bridge", "streams.webhooks.runner", "streams.outbox.relay", "streams.records"):
    importlib.import_module(name)
print(json.dumps(sorted(n for n in REGISTRY._names_to_collectors if n.startswith("streams_"))))
"""


def test_importing_the_package_registers_no_metric() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_two_instances_count_apart() -> None:
    first, second = AgentMetrics(), AgentMetrics()
    first.events.labels(agent="a", outcome="processed").inc(3)
    assert first.registry.get_sample_value("streams_agent_events_total", {"agent": "a", "outcome": "processed"}) == 3
    assert (
        second.registry.get_sample_value("streams_agent_events_total", {"agent": "a", "outcome": "processed"}) is None
    )
    registry = RegistryMetrics()
    registry.requests.labels("GET", "/subjects", "200").inc()
    assert (
        registry.registry.get_sample_value(
            "streams_registry_requests_total", {"method": "GET", "route": "/subjects", "status": "200"}
        )
        == 1
    )


def test_the_worker_page_serves_every_agent_metric_of_its_registry() -> None:
    metrics = AgentMetrics()
    metrics.events.labels(agent="validation", outcome="cleared").inc(2)
    metrics.audit_entries.labels("audit.trail").inc(5)
    metrics.audit_leader.labels("audit.trail").set(1)
    metrics.dlq.labels(agent="velocity", topic="user.action").inc()
    web = WorkerWeb("127.0.0.1", 0, health=lambda: {"validation": True}, search=None, metrics=metrics.registry)
    web.start()
    try:
        page = httpx.get(f"http://127.0.0.1:{web.port}/metrics", timeout=5).text
    finally:
        web.close()
    assert 'streams_agent_events_total{agent="validation",outcome="cleared"} 2.0' in page
    assert 'streams_audit_entries_total{chain="audit.trail"} 5.0' in page
    assert 'streams_audit_leader{chain="audit.trail"} 1.0' in page
    assert 'streams_agent_dlq_total{agent="velocity",topic="user.action"} 1.0' in page
    assert "process_cpu_seconds_total" in page  # the process collectors the default registry had
