"""The console's ASGI application: routes, sessions, role and CSRF checks, metrics, and the `user.action` trail.

Pages render on the server (Jinja2); htmx swaps partials. Kafka calls run in Starlette's thread pool.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from confluent_kafka import KafkaException
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from streams.console import audit_views, cluster_views, kafka_views
from streams.console.auth import allowed, authenticate, csrf_matches, new_csrf_token
from streams.console.evidence_jobs import EvidenceJobs, verify_upload
from streams.console.kafka_views import ConsoleInputError
from streams.errors import ConfigError, StreamsError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, MutableMapping

    from starlette.requests import Request
    from starlette.types import ASGIApp, Receive, Scope, Send

    from streams.console.settings import ConsoleSettings, User
    from streams.settings import Settings

log = structlog.get_logger("streams.console")
HERE = Path(__file__).parent
VIOLATIONS_TTL_S = 30.0  # today's violations are re-counted at most this often (a read of the day's records)
NAV = [
    ("/", "Overview"),
    ("/topics", "Topics"),
    ("/groups", "Consumer groups"),
    ("/messages", "Messages"),
    ("/dlq", "Dead letters"),
    ("/tasks", "Tasks"),
    ("/audit", "Audit"),
    ("/evidence", "Evidence"),
]


class LoginRequiredError(Exception):
    """No valid session: the page redirects to /login."""


class Metrics:
    """The console's own Prometheus metrics, in a registry of their own (served at /metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "streams_console_requests_total",
            "Console HTTP requests, by page, method and status.",
            ["page", "method", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "streams_console_request_seconds",
            "Console request time on the server, by page.",
            ["page"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5, 10),
        )
        self.actions = Counter(
            "streams_console_actions_total",
            "Console actions, by action and outcome.",
            ["action", "outcome"],
            registry=self.registry,
        )
        self.logins = Counter(
            "streams_console_logins_total", "Login attempts, by outcome.", ["outcome"], registry=self.registry
        )
        self.rows = Counter(
            "streams_console_message_rows_total", "Records rendered on message pages.", registry=self.registry
        )


class MetricsMiddleware:
    """Counts and times every request by its first path segment (bounded label values)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        page = "/" + scope["path"].strip("/").split("/", 1)[0]
        page = (
            page
            if page in {p for p, _ in NAV} | {"/login", "/logout", "/metrics", "/static", "/health", "/messages.jsonl"}
            else "other"
        )
        started, status = time.perf_counter(), [500]

        async def sending(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.seconds.labels(page).observe(time.perf_counter() - started)
            self.metrics.requests.labels(page, scope["method"], str(status[0])).inc()


class Console:
    """The console's connections and state: catalog, Kafka clients, registry, publisher, jobs, history."""

    def __init__(self, settings: Settings, console: ConsoleSettings) -> None:
        from confluent_kafka.admin import AdminClient  # noqa: PLC0415

        from streams.bridge.routes import load_bridge  # noqa: PLC0415
        from streams.catalog import load_catalog  # noqa: PLC0415
        from streams.records import EventDecoder  # noqa: PLC0415
        from streams.schemas.registry_client import RegistryClient  # noqa: PLC0415

        self.settings, self.console = settings, console
        self.users = console.user_map()
        if not self.users:
            raise ConfigError(
                "STREAMS_CONSOLE_USERS is not set, so nobody could log in; set it to a JSON object"
                ' like {"ana": {"role": "auditor", "password_hash": "..."}} (hashes from'
                " `streams console --hash-password`)"
            )
        self.secret = console.secret_key()
        self.catalog = load_catalog(settings.catalog_path, settings.profile)
        self.bridge = load_bridge(self.catalog)
        self.kafka = settings.kafka_config(settings.bootstrap_servers())
        self.registry = RegistryClient(settings.registry_url())
        self.decoder = EventDecoder(self.registry)
        self.admin = AdminClient(self.kafka)
        self.history = cluster_views.History()
        self.metrics = Metrics()
        root = console.evidence_dir or settings.data_dir / "console" / "evidence"
        self.jobs = EvidenceJobs(settings, root, console.evidence_sign_key)
        self.last_verification: dict[str, Any] | None = None
        self.violations: tuple[float, dict[str, int]] = (0.0, {})
        self._consumer: Any = None
        self._publisher: Any = None
        self.lock = threading.Lock()  # one browse at a time on the shared consumer (assign is per consumer)

    def consumer(self) -> Any:
        if self._consumer is None:
            self._consumer = kafka_views.reader(self.kafka)
        return self._consumer

    def record_action(self, user: User, action: str, resource: str, request: Request) -> None:
        """Write `user.action` before the action runs: an action the trail cannot record is not done."""
        from datetime import UTC, datetime  # noqa: PLC0415

        from streams.publish import Publisher  # noqa: PLC0415

        with self.lock:
            if self._publisher is None:
                self._publisher = Publisher(
                    self.settings, catalog=self.catalog, registry=self.registry, source="streams-console"
                )
            publisher = self._publisher
        try:
            publisher.publish(
                "user.action",
                {
                    "user_id": user.name,
                    "tenant_id": "console",
                    "action": action,
                    "resource": resource[:1000],
                    "ip_address": request.client.host if request.client else None,
                    "user_agent": request.headers.get("user-agent", "")[:300] or None,
                    "occurred_at": datetime.now(UTC),
                },
                tenant="console",
            ).result(timeout=30)
        except StreamsError as exc:
            self.metrics.actions.labels(action, "unrecorded").inc()
            raise StreamsError(f"the action was not done: its user.action event could not be written ({exc})") from exc

    def health(self) -> dict[str, Any]:
        import httpx  # noqa: PLC0415

        checks: dict[str, Any] = {}
        try:
            brokers = self.admin.list_topics(timeout=3).brokers
            checks["brokers"] = {"ok": bool(brokers), "detail": f"{len(brokers)} broker(s)"}
        except Exception as exc:  # noqa: BLE001 - shown on the page
            checks["brokers"] = {"ok": False, "detail": type(exc).__name__}
        try:
            checks["registry"] = {
                "ok": True,
                "detail": f"{len(self.registry.versions('invoice.created-value'))} invoice.created version(s)",
            }
        except Exception as exc:  # noqa: BLE001
            checks["registry"] = {"ok": False, "detail": type(exc).__name__}
        try:
            redis_url = self.settings.redis()
        except StreamsError:
            checks["redis"] = {"ok": False, "detail": "not configured"}
        else:
            from streams.bridge.enqueue import RedisQueues  # noqa: PLC0415

            client = RedisQueues(redis_url, {}, timeout_s=2, ledger=False)
            checks["redis"] = {"ok": client.ping(), "detail": "ping"}
            client.close()
        agents: dict[str, float] = {}
        for url in self.console.workers():
            try:
                answer = httpx.get(f"{url}/health", timeout=2)
                checks[f"worker {url}"] = {"ok": answer.status_code == 200, "detail": answer.text[:200]}
                for agent, total in cluster_views.agent_totals(httpx.get(f"{url}/metrics", timeout=2).text).items():
                    agents[agent] = agents.get(agent, 0.0) + total  # replicas of one agent add up
            except httpx.HTTPError as exc:
                checks[f"worker {url}"] = {"ok": False, "detail": type(exc).__name__}
        checks.update(
            cluster_views.process_checks(
                cluster_views.scrape(self.console.bridges(), cluster_views.bridge_summary),
                cluster_views.scrape(self.console.relays(), cluster_views.relay_summary),
            )
        )
        checks["_agents"] = agents  # overview() takes it out: events/s per agent, not a health check
        return checks

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
        if self._consumer is not None:
            self._consumer.close()
        self.registry.close()


def create_app(settings: Settings, console_settings: ConsoleSettings) -> Starlette:  # noqa: PLR0915 - a closure per route
    """The console as an ASGI app (uvicorn serves it in `streams console`; tests serve it the same way)."""
    console = Console(settings, console_settings)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["nav"] = NAV
    templates.env.filters["iso_ms"] = _iso_ms

    def user_of(request: Request) -> User:
        session = request.session.get("user")
        user = console.users.get(session["name"]) if isinstance(session, dict) else None
        if user is None or not isinstance(session, dict) or user.role != session.get("role"):
            raise LoginRequiredError
        return user

    def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        request.session.setdefault("csrf", new_csrf_token())
        try:
            user: User | None = user_of(request)
        except LoginRequiredError:
            user = None
        return templates.TemplateResponse(
            request,
            name,
            {
                "user": user,
                "csrf": request.session["csrf"],
                "can": lambda action: user is not None and allowed(user.role, action),
                "path": request.url.path,
                **context,
            },
            status_code=status,
        )

    async def posted(request: Request, action: str | None) -> tuple[User, dict[str, Any]]:
        """The logged-in user and the form of a POST, after the CSRF and role checks (403 otherwise)."""
        user = user_of(request)
        form = await request.form()
        data: dict[str, Any] = dict(form)
        given = data.get("csrf") or request.headers.get("x-csrf-token")
        if not csrf_matches(request.session.get("csrf"), given if isinstance(given, str) else None):
            console.metrics.actions.labels(action or "post", "csrf_refused").inc()
            raise HTTPException(403, "refused: the form's CSRF token is missing or wrong (reload the page)")
        if action is not None and not allowed(user.role, action):
            console.metrics.actions.labels(action, "forbidden").inc()
            raise HTTPException(403, f"refused: role {user.role} may not {action.replace('_', ' ')}")
        return user, data

    # Login ---------------------------------------------------------------------------------------------------
    async def login_page(request: Request) -> Response:
        return render(request, "login.html", {"next": request.query_params.get("next", "/")})

    async def login(request: Request) -> Response:
        form = dict(await request.form())
        if not csrf_matches(request.session.get("csrf"), str(form.get("csrf") or "")):
            raise HTTPException(403, "refused: the form's CSRF token is missing or wrong (reload the page)")
        user = await run_in_threadpool(
            authenticate, console.users, str(form.get("username", "")), str(form.get("password", ""))
        )
        if user is None:
            console.metrics.logins.labels("refused").inc()
            return render(request, "login.html", {"error": "wrong user name or password", "next": "/"}, 401)
        await run_in_threadpool(console.record_action, user, "console.login", "session", request)
        console.metrics.logins.labels("ok").inc()
        request.session.clear()  # a new session: no fixation of one made before the login
        request.session.update({"user": {"name": user.name, "role": user.role}, "csrf": new_csrf_token()})
        target = str(form.get("next") or "/")
        return RedirectResponse(target if target.startswith("/") and not target.startswith("//") else "/", 303)

    async def logout(request: Request) -> Response:
        user, _ = await posted(request, None)
        await run_in_threadpool(console.record_action, user, "console.logout", "session", request)
        request.session.clear()
        return RedirectResponse("/login", 303)

    # Overview, topics, groups, tasks ---------------------------------------------------------------------------
    def overview_data() -> dict[str, Any]:
        health = console.health()
        if time.monotonic() - console.violations[0] > VIOLATIONS_TTL_S:
            with console.lock:
                counted = cluster_views.violations_today(console.kafka, console.consumer(), console.decoder)
            console.violations = (time.monotonic(), counted)
        with console.lock:
            return cluster_views.overview(
                console.catalog, console.consumer(), console.admin, console.history, health, console.violations[1]
            )

    async def overview(request: Request) -> Response:
        user_of(request)
        return render(request, "overview.html", {"data": await run_in_threadpool(overview_data)})

    async def overview_panel(request: Request) -> Response:
        user_of(request)
        return render(request, "_overview_panel.html", {"data": await run_in_threadpool(overview_data)})

    async def topics(request: Request) -> Response:
        user_of(request)
        data = await run_in_threadpool(cluster_views.topics_page, console.catalog, console.kafka, console.admin)
        return render(request, "topics.html", {"data": data})

    async def schema(request: Request) -> Response:
        user_of(request)
        spec = kafka_views.catalog_topic(console.catalog, request.path_params["topic"])
        a, b = (_int(request.query_params.get(name)) for name in ("a", "b"))
        data = await run_in_threadpool(cluster_views.schema_page, console.registry, spec.name, a, b)
        return render(request, "schema.html", {"spec": spec, "data": data})

    def groups_data() -> list[dict[str, Any]]:
        with console.lock:
            return cluster_views.consumer_groups(console.admin, console.consumer(), console.history, time.time())

    async def groups(request: Request) -> Response:
        user_of(request)
        template = "_groups_panel.html" if request.headers.get("hx-request") else "groups.html"
        return render(request, template, {"groups": await run_in_threadpool(groups_data)})

    async def tasks(request: Request) -> Response:
        user_of(request)
        try:
            redis_url: str | None = console.settings.redis()
        except StreamsError:
            redis_url = None
        queues = {name: spec.bound for name, spec in console.bridge.queues.items()}
        bridges = await run_in_threadpool(cluster_views.scrape, console.console.bridges(), cluster_views.bridge_summary)
        data = await run_in_threadpool(
            cluster_views.tasks_page,
            redis_url,
            queues,
            console.kafka,
            console.decoder,
            console.bridge.failed_topic,
            bridges,
        )
        return render(request, "tasks.html", {"data": data})

    def task_position(form: dict[str, Any]) -> tuple[str, int, int, str]:
        failed_topic = console.bridge.failed_topic
        if failed_topic is None:
            raise ConsoleInputError("the catalog's bridge section names no failed_topic", 404)
        partition, offset = _int(str(form.get("partition", ""))), _int(str(form.get("offset", "")))
        if partition is None or offset is None:
            raise ConsoleInputError("a failed task is named by the partition and offset of its task.failed record")
        try:
            redis_url = console.settings.redis()
        except StreamsError as exc:
            raise ConsoleInputError(f"re-driving a task needs Redis (the effects ledger): {exc}", 409) from None
        return failed_topic, partition, offset, redis_url

    async def task_preview(request: Request) -> Response:
        _, form = await posted(request, "redrive")
        failed_topic, partition, offset, redis_url = task_position(form)
        found = await run_in_threadpool(
            cluster_views.failed_task, console.kafka, console.decoder, failed_topic, partition, offset, redis_url
        )
        return render(request, "_task_preview.html", {"task": found})

    async def task_redrive(request: Request) -> Response:
        user, form = await posted(request, "redrive")
        failed_topic, partition, offset, redis_url = task_position(form)
        found = await run_in_threadpool(
            cluster_views.failed_task, console.kafka, console.decoder, failed_topic, partition, offset, redis_url
        )
        if found["state"] != "failed" or found["source"] is None:
            raise ConsoleInputError(
                f"task {found['failed'].get('task_id')} cannot be re-driven: its effect is "
                f"{found['state'] or 'not marked'} and its source record is "
                f"{'there' if found['source'] is not None else 'gone'}",
                409,
            )
        what = f"{found['failed'].get('task_name')} event {found['failed'].get('event_id')}"
        await run_in_threadpool(console.record_action, user, "console.task.redrive", what, request)

        if not await run_in_threadpool(cluster_views.redrive_task, console.kafka, redis_url, found):
            raise ConsoleInputError("the task's effect is no longer marked failed (re-driven already?)", 409)
        console.metrics.actions.labels("console.task.redrive", "ok").inc()
        return render(request, "_task_done.html", {"task": found})

    # Messages ------------------------------------------------------------------------------------------------
    def browse(params: dict[str, str], unmasked: bool) -> tuple[kafka_views.BrowseQuery, kafka_views.BrowseResult]:
        query = kafka_views.parse_browse(params, console.catalog, console.console.bench_rows)
        spec = console.catalog.topic(query.topic)
        with console.lock:
            found = kafka_views.browse(
                console.consumer(), console.admin, console.decoder, spec, query, unmasked=unmasked
            )
        return query, found

    async def messages(request: Request) -> Response:
        user = user_of(request)
        params = dict(request.query_params)
        context: dict[str, Any] = {"params": params, "topics": [s.name for s in console.catalog.topics]}
        if not params.get("topic"):
            return render(request, "messages.html", context)
        started = time.perf_counter()
        unmasked = allowed(user.role, "unmasked_pii")
        query, result = await run_in_threadpool(browse, params, unmasked)
        console.metrics.rows.inc(len(result.rows))
        context |= {
            "query": query,
            "result": result,
            "unmasked": unmasked,
            "pii": console.catalog.topic(query.topic).pii_fields,
        }
        response = render(request, "messages.html", context | {"read_ms": (time.perf_counter() - started) * 1000})
        total_ms = (time.perf_counter() - started) * 1000
        response.headers["Server-Timing"] = f"app;dur={total_ms:.1f}"
        return response

    async def messages_jsonl(request: Request) -> Response:
        import json  # noqa: PLC0415

        user = user_of(request)
        params = dict(request.query_params)
        unmasked = allowed(user.role, "unmasked_pii")
        query, result = await run_in_threadpool(browse, params, unmasked)
        await run_in_threadpool(
            console.record_action,
            user,
            "console.messages.download",
            f"{query.topic} {len(result.rows)} record(s){' unmasked' if unmasked else ''}",
            request,
        )
        lines = (json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in result.rows)
        return StreamingResponse(
            lines,
            media_type="application/x-ndjson",
            headers={"Content-Disposition": f'attachment; filename="{query.topic}.jsonl"'},
        )

    # Dead letters --------------------------------------------------------------------------------------------
    def dlq_topics() -> list[str]:
        return [s.dead_letter_of for s in console.catalog.topics if s.dead_letter_of is not None]

    async def dlq(request: Request) -> Response:
        user_of(request)
        topic = request.query_params.get("topic") or ""
        context: dict[str, Any] = {"topic": topic, "topics": dlq_topics()}
        if topic:
            kafka_views.catalog_topic(console.catalog, topic)
            if topic not in dlq_topics():
                raise ConsoleInputError(f"topic {topic!r} has no dead-letter topic in the catalog", 404)
            context["letters"] = await run_in_threadpool(kafka_views.dead_letters, console.kafka, topic)
        return render(request, "dlq.html", context)

    async def dlq_preview(request: Request) -> Response:
        _, form = await posted(request, "redrive")
        topic = str(form.get("topic", ""))
        if topic not in dlq_topics():
            raise ConsoleInputError(f"topic {topic!r} has no dead-letter topic in the catalog", 404)
        wanted = kafka_views.parse_dlq_filter(form)
        selected, waiting = await run_in_threadpool(kafka_views.select_pending, console.kafka, topic, wanted)
        from streams.dlq import describe  # noqa: PLC0415

        return render(
            request,
            "_dlq_preview.html",
            {
                "topic": topic,
                "filter": wanted,
                "form": form,
                "selected": [describe(m) for m in selected],
                "pending": len(waiting),
            },
        )

    async def dlq_redrive(request: Request) -> Response:
        from streams.dlq import redrive_records  # noqa: PLC0415

        user, form = await posted(request, "redrive")
        topic = str(form.get("topic", ""))
        if topic not in dlq_topics():
            raise ConsoleInputError(f"topic {topic!r} has no dead-letter topic in the catalog", 404)
        wanted = kafka_views.parse_dlq_filter(form)
        expected = _int(str(form.get("expected", "")))
        selected, waiting = await run_in_threadpool(kafka_views.select_pending, console.kafka, topic, wanted)
        if expected is None or expected != len(selected):
            raise ConsoleInputError(
                f"the dry run showed {expected} record(s) but {len(selected)} match now; run"
                " the dry run again before redriving",
                409,
            )
        await run_in_threadpool(
            console.record_action,
            user,
            "console.dlq.redrive",
            f"{topic}.dlq {wanted.describe()} {len(selected)} record(s)",
            request,
        )
        done = await run_in_threadpool(lambda: redrive_records(console.kafka, topic, selected, pending_records=waiting))
        console.metrics.actions.labels("console.dlq.redrive", "ok").inc()
        return render(request, "_dlq_done.html", {"topic": topic, "count": len(selected), "done": done})

    # Audit ---------------------------------------------------------------------------------------------------
    async def audit(request: Request) -> Response:
        user_of(request)
        invoice_id = (request.query_params.get("invoice_id") or "").strip()
        story = None
        if invoice_id:
            story = await run_in_threadpool(
                audit_views.invoice_story, console.kafka, console.decoder, invoice_id, console.settings.data_dir
            )
        return render(
            request, "audit.html", {"report": console.last_verification, "invoice_id": invoice_id, "story": story}
        )

    async def audit_verify(request: Request) -> Response:
        user, _ = await posted(request, "audit_verify")
        await run_in_threadpool(console.record_action, user, "console.audit.verify", audit_views.CHAIN_TOPIC, request)
        console.last_verification = await run_in_threadpool(audit_views.verify_chain, console.kafka, console.registry)
        console.metrics.actions.labels("console.audit.verify", "ok").inc()
        return render(request, "_audit_report.html", {"report": console.last_verification})

    # Evidence ------------------------------------------------------------------------------------------------
    async def evidence(request: Request) -> Response:
        user_of(request)
        jobs = sorted(console.jobs.jobs.values(), key=lambda j: j.started, reverse=True)
        return render(
            request,
            "evidence.html",
            {
                "jobs": jobs,
                "topics": [s.name for s in console.catalog.topics if s.dead_letter_of is None],
                "signing": console.jobs.sign_key is not None,
            },
        )

    async def evidence_build(request: Request) -> Response:
        user, form = await posted(request, "evidence")
        spec = kafka_views.catalog_topic(console.catalog, str(form.get("topic", "")).strip())
        await run_in_threadpool(
            console.record_action,
            user,
            "console.evidence.build",
            f"{spec.name} from={form.get('from') or '-'} to={form.get('to') or '-'} "
            f"tenant={form.get('tenant') or '-'} key={form.get('key') or '-'}",
            request,
        )
        job = console.jobs.start(user.name, {k: str(v) for k, v in form.items()})
        return render(request, "_evidence_job.html", {"job": job})

    async def evidence_job(request: Request) -> Response:
        user_of(request)
        return render(request, "_evidence_job.html", {"job": console.jobs.get(request.path_params["job"])})

    async def evidence_download(request: Request) -> Response:
        user = user_of(request)
        if not allowed(user.role, "evidence"):
            raise HTTPException(403, f"refused: role {user.role} may not download evidence")
        job = console.jobs.get(request.path_params["job"])
        if job.status != "done":
            raise ConsoleInputError(f"evidence build {job.id} is {job.status}, not done", 409)
        await run_in_threadpool(console.record_action, user, "console.evidence.download", job.id, request)
        return FileResponse(job.archive(), filename=f"evidence-{job.id}.zip", media_type="application/zip")

    async def evidence_verify(request: Request) -> Response:
        user, form = await posted(request, "evidence")
        bundle, key = form.get("bundle"), form.get("public_key")
        archive = await bundle.read() if isinstance(bundle, UploadFile) else b""
        pem = await key.read() if isinstance(key, UploadFile) else b""
        await run_in_threadpool(
            console.record_action, user, "console.evidence.verify", getattr(bundle, "filename", None) or "-", request
        )
        with tempfile.TemporaryDirectory(prefix="streams-console-") as workdir:
            report = await run_in_threadpool(verify_upload, archive, pem or None, Path(workdir))
            result = report.to_json()
        return render(request, "_evidence_verify.html", {"report": result, "ok": report.ok}, 200 if report.ok else 422)

    # Plumbing ------------------------------------------------------------------------------------------------
    async def metrics(_: Request) -> Response:
        return Response(generate_latest(console.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def health(_: Request) -> Response:
        return JSONResponse({"ok": True})

    async def login_required(request: Request, _: Exception) -> Response:
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": "/login"})
        return RedirectResponse(f"/login?next={request.url.path}", 303)

    async def refused(request: Request, exc: Exception) -> Response:
        status = exc.status if isinstance(exc, ConsoleInputError) else getattr(exc, "status_code", 500)
        message = str(exc) if isinstance(exc, ConsoleInputError) else getattr(exc, "detail", str(exc))
        name = "_error.html" if request.headers.get("hx-request") else "error.html"
        return render(request, name, {"status": status, "message": message}, status)

    async def failed(request: Request, exc: Exception) -> Response:
        name = "_error.html" if request.headers.get("hx-request") else "error.html"
        return render(request, name, {"status": 502, "message": str(exc)}, 502)

    async def crashed(_: Request, exc: Exception) -> Response:
        # Outside the session middleware: a plain page, the error logged, no traceback shown.
        log.error("console request failed", error=f"{type(exc).__name__}: {exc}")
        return HTMLResponse(
            "<h1>500</h1><p id='error'>The console failed on this request; nothing was changed."
            " The error is in the console's log.</p>",
            500,
        )

    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", overview),
        Route("/overview/panel", overview_panel),
        Route("/topics", topics),
        Route("/topics/{topic}/schema", schema),
        Route("/groups", groups),
        Route("/tasks", tasks),
        Route("/tasks/preview", task_preview, methods=["POST"]),
        Route("/tasks/redrive", task_redrive, methods=["POST"]),
        Route("/messages", messages),
        Route("/messages.jsonl", messages_jsonl),
        Route("/dlq", dlq),
        Route("/dlq/preview", dlq_preview, methods=["POST"]),
        Route("/dlq/redrive", dlq_redrive, methods=["POST"]),
        Route("/audit", audit),
        Route("/audit/verify", audit_verify, methods=["POST"]),
        Route("/evidence", evidence),
        Route("/evidence/build", evidence_build, methods=["POST"]),
        Route("/evidence/jobs/{job}", evidence_job),
        Route("/evidence/jobs/{job}/download", evidence_download),
        Route("/evidence/verify", evidence_verify, methods=["POST"]),
        Route("/metrics", metrics),
        Route("/health", health),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [
        Middleware(MetricsMiddleware, metrics=console.metrics),
        Middleware(
            SessionMiddleware,
            secret_key=console.secret,
            session_cookie="streams_console",
            max_age=console_settings.session_max_age_s,
            same_site="strict",
            https_only=console_settings.secure_cookies,
        ),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        console.close()

    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            LoginRequiredError: login_required,
            ConsoleInputError: refused,
            HTTPException: refused,
            StreamsError: failed,
            KafkaException: failed,
            Exception: crashed,
        },
    )
    app.state.console = console
    return app


def _iso_ms(ms: float | None) -> str:
    """Epoch milliseconds as `2026-12-07T21:55:44.935Z` (Kafka timestamps)."""
    from datetime import UTC, datetime  # noqa: PLC0415

    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.strip().isdigit() else None
