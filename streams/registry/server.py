"""The HTTP API: Confluent Schema Registry's REST paths, bodies and error codes, served by aiohttp.

`run_registry` starts the log, serves until SIGINT/SIGTERM, and reports the URL it listens on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.observability import RegistryMetrics
from streams.registry import errors
from streams.registry.errors import RegistryError
from streams.registry.service import AuditCheck, SchemaRegistry, no_audited_subjects, version_json
from streams.registry.store import SchemaLog
from streams.settings import KafkaConfig

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
REGISTRY = web.AppKey("registry", SchemaRegistry)
METRICS = web.AppKey("metrics", RegistryMetrics)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _reply(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, ensure_ascii=False), status=status, content_type=CONTENT_TYPE, charset="utf-8"
    )


def _error(status: int, code: int, message: str) -> web.Response:
    return _reply({"error_code": code, "message": message}, status)


@web.middleware
async def _measured(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request by its route pattern (`/subjects/{subject}/versions`, not each subject)."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    started = time.perf_counter()
    response = await handler(request)
    metrics = request.app[METRICS]
    metrics.seconds.labels(request.method, route).observe(time.perf_counter() - started)
    metrics.requests.labels(request.method, route, str(response.status)).inc()
    return response


async def metrics_page(request: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(request.app[METRICS].registry), content_type=CONTENT_TYPE_LATEST.split(";")[0]
    )


@web.middleware
async def _confluent_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RegistryError as exc:
        return _error(exc.status, exc.error_code, exc.message)
    except web.HTTPException as exc:
        return _error(exc.status, exc.status, f"HTTP {exc.status} {exc.reason}")
    except Exception:
        log.exception("registry request %s %s failed", request.method, request.path)
        return _error(500, 50001, "Internal server error (see the registry log)")


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").strip().lower() == "true"


def _int(request: web.Request, name: str) -> int:
    value = request.match_info[name]
    try:
        return int(value)
    except ValueError:
        raise errors.bad_request(f"'{value}' is not an integer {name}") from None


async def _body(request: web.Request) -> Any:
    text = await request.text()  # any content type: clients send several vnd.* variants
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise errors.bad_request(f"Request body is not JSON: {exc.msg} at line {exc.lineno}") from exc


def _subject(request: web.Request) -> str:
    return request.match_info["subject"]


async def root(request: web.Request) -> web.Response:
    del request
    return _reply({})


async def list_subjects(request: web.Request) -> web.Response:
    names = await request.app[REGISTRY].subjects(
        deleted=_flag(request, "deleted"),
        deleted_only=_flag(request, "deleted_only"),
        prefix=request.query.get("subjectPrefix"),
    )
    offset = int(request.query.get("offset", "0") or 0)
    limit = int(request.query.get("limit", "-1") or -1)
    return _reply(names[offset:] if limit < 0 else names[offset : offset + limit])


async def list_versions(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    found = await registry.versions(
        _subject(request), deleted=_flag(request, "deleted"), deleted_only=_flag(request, "deleted_only")
    )
    return _reply(found)


async def get_version(request: web.Request) -> web.Response:
    entry = await request.app[REGISTRY].version(
        _subject(request), request.match_info["version"], deleted=_flag(request, "deleted")
    )
    return _reply(version_json(entry))


async def get_version_schema(request: web.Request) -> web.Response:
    entry = await request.app[REGISTRY].version(
        _subject(request), request.match_info["version"], deleted=_flag(request, "deleted")
    )
    return web.Response(text=entry.schema, content_type=CONTENT_TYPE, charset="utf-8")


async def referenced_by(request: web.Request) -> web.Response:
    await request.app[REGISTRY].version(_subject(request), request.match_info["version"], deleted=True)
    return _reply([])  # references are not supported, so nothing refers to anything


async def register(request: web.Request) -> web.Response:
    schema_id = await request.app[REGISTRY].register(_subject(request), await _body(request))
    return _reply({"id": schema_id})


async def lookup(request: web.Request) -> web.Response:
    entry = await request.app[REGISTRY].lookup(
        _subject(request), await _body(request), deleted=_flag(request, "deleted")
    )
    return _reply(version_json(entry))


async def delete_subject(request: web.Request) -> web.Response:
    found = await request.app[REGISTRY].delete_subject(_subject(request), permanent=_flag(request, "permanent"))
    return _reply(found)


async def delete_version(request: web.Request) -> web.Response:
    number = await request.app[REGISTRY].delete_version(
        _subject(request), request.match_info["version"], permanent=_flag(request, "permanent")
    )
    return _reply(number)


async def get_schema(request: web.Request) -> web.Response:
    text = await request.app[REGISTRY].schema(_int(request, "id"))
    return _reply({"schema": text})


async def get_schema_text(request: web.Request) -> web.Response:
    text = await request.app[REGISTRY].schema(_int(request, "id"))
    return web.Response(text=text, content_type=CONTENT_TYPE, charset="utf-8")


async def schema_versions(request: web.Request) -> web.Response:
    found = await request.app[REGISTRY].schema_usages(_int(request, "id"), deleted=_flag(request, "deleted"))
    return _reply([{"subject": entry.subject, "version": entry.version} for entry in found])


async def schema_subjects(request: web.Request) -> web.Response:
    found = await request.app[REGISTRY].schema_usages(_int(request, "id"), deleted=_flag(request, "deleted"))
    return _reply(sorted({entry.subject for entry in found}))


async def schema_types(request: web.Request) -> web.Response:
    del request
    return _reply(["AVRO"])


async def contexts(request: web.Request) -> web.Response:
    del request
    return _reply(["."])


async def compatibility(request: web.Request) -> web.Response:
    compatible, messages = await request.app[REGISTRY].test_compatibility(
        _subject(request), request.match_info.get("version"), await _body(request)
    )
    body: dict[str, Any] = {"is_compatible": compatible}
    if _flag(request, "verbose"):
        body["messages"] = list(messages)
    return _reply(body)


async def get_config(request: web.Request) -> web.Response:
    level = await request.app[REGISTRY].get_config(
        request.match_info.get("subject"), default_to_global=_flag(request, "defaultToGlobal")
    )
    return _reply({"compatibilityLevel": level})


async def put_config(request: web.Request) -> web.Response:
    level = await request.app[REGISTRY].set_config(request.match_info.get("subject"), await _body(request))
    return _reply({"compatibility": level})


async def delete_config(request: web.Request) -> web.Response:
    level = await request.app[REGISTRY].delete_config(request.match_info.get("subject"))
    return _reply({"compatibilityLevel": level})


async def get_mode(request: web.Request) -> web.Response:
    mode = await request.app[REGISTRY].get_mode(
        request.match_info.get("subject"), default_to_global=_flag(request, "defaultToGlobal")
    )
    return _reply({"mode": mode})


async def put_mode(request: web.Request) -> web.Response:
    mode = await request.app[REGISTRY].set_mode(
        request.match_info.get("subject"), await _body(request), force=_flag(request, "force")
    )
    return _reply({"mode": mode})


async def delete_mode(request: web.Request) -> web.Response:
    mode = await request.app[REGISTRY].delete_mode(_subject(request))
    return _reply({"mode": mode})


def create_app(registry: SchemaRegistry, metrics: RegistryMetrics | None = None) -> web.Application:
    """The aiohttp application serving `registry` on Confluent's paths, counting in `metrics` (its own if none)."""
    app = web.Application(middlewares=[_measured, _confluent_errors])
    app[REGISTRY] = registry
    app[METRICS] = metrics or RegistryMetrics()
    subject, version = "/subjects/{subject}", "/subjects/{subject}/versions/{version}"
    app.router.add_routes(
        [
            web.get("/", root),
            web.get("/metrics", metrics_page),  # Prometheus: requests by route and status, latency
            web.get("/subjects", list_subjects),
            web.get(f"{subject}/versions", list_versions),
            web.post(f"{subject}/versions", register),
            web.get(version, get_version),
            web.delete(version, delete_version),
            web.get(f"{version}/schema", get_version_schema),
            web.get(f"{version}/referencedby", referenced_by),
            web.post(subject, lookup),
            web.delete(subject, delete_subject),
            web.get("/schemas/types", schema_types),
            web.get("/schemas/ids/{id}", get_schema),
            web.get("/schemas/ids/{id}/schema", get_schema_text),
            web.get("/schemas/ids/{id}/versions", schema_versions),
            web.get("/schemas/ids/{id}/subjects", schema_subjects),
            web.get("/contexts", contexts),
            web.post("/compatibility/subjects/{subject}/versions", compatibility),
            web.post("/compatibility/subjects/{subject}/versions/{version}", compatibility),
            web.get("/config", get_config),
            web.put("/config", put_config),
            web.delete("/config", delete_config),
            web.get("/config/{subject}", get_config),
            web.put("/config/{subject}", put_config),
            web.delete("/config/{subject}", delete_config),
            web.get("/mode", get_mode),
            web.put("/mode", put_mode),
            web.get("/mode/{subject}", get_mode),
            web.put("/mode/{subject}", put_mode),
            web.delete("/mode/{subject}", delete_mode),
        ]
    )
    return app


@dataclass(frozen=True)
class RegistryOptions:
    """What `streams registry serve` (and `python -m streams.registry`) was asked to run."""

    kafka_config: KafkaConfig
    host: str = "127.0.0.1"
    port: int = 8081
    topic: str = "_schemas"
    catalog: Path | None = None
    profile: str = "local"
    default_compatibility: str = "BACKWARD_TRANSITIVE"


def audit_check_from_catalog(path: Path | None, profile: str) -> AuditCheck:
    """Which subjects belong to `audit: true` topics (TopicNameStrategy: `<topic>-key`, `<topic>-value`)."""
    if path is None:
        return no_audited_subjects
    from streams.catalog import load_catalog  # noqa: PLC0415 - only needed when a catalog is given

    audited = frozenset(spec.name for spec in load_catalog(path, profile).topics if spec.audit)

    def audited_topic(subject: str) -> str | None:
        for suffix in ("-value", "-key"):
            if subject.endswith(suffix) and subject.removesuffix(suffix) in audited:
                return subject.removesuffix(suffix)
        return None

    return audited_topic


async def run_registry(options: RegistryOptions, on_ready: Callable[[str], None]) -> None:
    """Serve until SIGINT or SIGTERM; `on_ready` gets the URL once requests can be answered."""
    audited = audit_check_from_catalog(options.catalog, options.profile)
    store = SchemaLog(options.kafka_config, options.topic)
    registry = SchemaRegistry(store, default_compatibility=options.default_compatibility, audited_topic=audited)
    await asyncio.to_thread(store.start)
    runner = web.AppRunner(create_app(registry), access_log=None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows event loops
            loop.add_signal_handler(signum, stop.set)
    try:
        await runner.setup()
        await web.TCPSite(runner, options.host, options.port).start()
        host, port = runner.addresses[0][:2]
        on_ready(f"http://{host}:{port}")
        await stop.wait()
    finally:
        await runner.cleanup()
        await asyncio.to_thread(store.stop)
