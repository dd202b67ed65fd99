"""The worker's one web server: `/metrics` (Prometheus), `/health` (every agent running) and `/search`.

A small threaded HTTP server beside the engines' threads; nothing here touches Kafka.
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from collections.abc import Callable

    from prometheus_client import CollectorRegistry


class WorkerWeb:
    """Serves the worker's pages until `close`; `health()` names each agent and whether it runs."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        health: Callable[[], dict[str, bool]],
        search: Callable[[str, str | None, int], list[dict[str, Any]]] | None,
        metrics: CollectorRegistry,
    ) -> None:
        handler = _handler(health, search, metrics)
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="worker-web", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(
    health: Callable[[], dict[str, bool]],
    search: Callable[[str, str | None, int], list[dict[str, Any]]] | None,
    metrics: CollectorRegistry,
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {name: values[-1] for name, values in parse_qs(url.query).items()}
            if url.path == "/metrics":
                self._send(HTTPStatus.OK, generate_latest(metrics), CONTENT_TYPE_LATEST)
            elif url.path == "/health":
                agents = health()
                ok = bool(agents) and all(agents.values())
                self._json(
                    HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE,
                    {"status": "ok" if ok else "unavailable", "agents": agents},
                )
            elif url.path == "/search":
                self._search(query)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {url.path}; try /metrics, /health, /search"})

        def _search(self, query: dict[str, str]) -> None:
            if search is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": "the indexing agent does not run on this worker"})
                return
            words = query.get("q", "")
            try:
                hits = search(words, query.get("tenant"), int(query.get("limit", "20")))
            except ValueError as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                return
            self._json(HTTPStatus.OK, {"query": words, "hits": hits})

        def _json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args  # requests are not worth a log line each (Prometheus scrapes every few seconds)

    return Handler
