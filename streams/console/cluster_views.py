"""The console's cluster pages: overview (health, rates, lag, DLQs, violations), topics, consumer groups, tasks.

Read-only views over the admin API, the registry, Redis and the workers' own /health and /metrics.
"""

from __future__ import annotations

import difflib
import json
import time
from collections import defaultdict, deque
from datetime import UTC, datetime
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from streams.kafka_util import read_partitions

if TYPE_CHECKING:
    from collections.abc import Callable

    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient

    from streams.catalog import Catalog
    from streams.records import EventDecoder
    from streams.schemas.registry_client import RegistryClient
    from streams.settings import KafkaConfig

HISTORY = 60  # samples kept per series for the sparklines and lag charts (one per refresh)


class History:
    """Samples of end offsets and lags in memory, so rates and charts need no store of their own."""

    def __init__(self) -> None:
        self.offsets: dict[str, deque[tuple[float, int]]] = defaultdict(lambda: deque(maxlen=HISTORY))
        self.lag: dict[str, deque[tuple[float, int]]] = defaultdict(lambda: deque(maxlen=HISTORY))

    def rate(self, name: str) -> list[float]:
        """Events per second between consecutive samples of `name`'s end offsets."""
        samples = list(self.offsets[name])
        return [round((b[1] - a[1]) / (b[0] - a[0]), 2) if b[0] > a[0] else 0.0 for a, b in pairwise(samples)]


def agent_totals(metrics_text: str) -> dict[str, float]:
    """Events handled per agent (every outcome) from a worker's /metrics text (streams_agent_events_total)."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    totals: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "streams_agent_events":  # the parser drops the counter's _total suffix
            for sample in family.samples:
                if sample.name == "streams_agent_events_total":
                    totals[sample.labels.get("agent", "?")] += sample.value
    return dict(totals)


def bridge_summary(metrics_text: str) -> dict[str, Any]:
    """A bridge's /metrics (streams/bridge/metrics.py): paused partitions, Redis, redeliveries, and per queue the
    tasks pushed, the pushes Redis did not confirm (each retried after backoff) and the depth it last saw."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    out: dict[str, Any] = {"paused": 0, "redis_up": None, "redelivered": 0, "queues": {}}
    per_queue = {
        "streams_bridge_tasks_published_total": "pushed",
        "streams_bridge_tasks_confirmed_total": "confirmed",  # one series per route: summed per queue
        "streams_bridge_tasks_failed_total": "retries",
        "streams_bridge_queue_depth_tasks": "depth",
    }
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "streams_bridge_paused_partitions":
                out["paused"] = int(sample.value)
            elif sample.name == "streams_bridge_redis_up":
                out["redis_up"] = sample.value == 1
            elif sample.name == "streams_bridge_tasks_redelivered_total":
                out["redelivered"] = int(sample.value)
            elif sample.name in per_queue and "queue" in sample.labels:
                queue = out["queues"].setdefault(sample.labels["queue"], {})
                key = per_queue[sample.name]
                queue[key] = queue.get(key, 0) + int(sample.value)
    return out


def relay_summary(metrics_text: str) -> dict[str, Any]:
    """An outbox relay's /metrics (streams/outbox/metrics.py): pending and parked rows, database, rows relayed."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    out: dict[str, Any] = {"pending": 0, "parked": 0, "database_up": None, "relayed": 0, "pauses": 0}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "streams_outbox_pending_rows":
                out["pending"] = int(sample.value)
            elif sample.name == "streams_outbox_parked_rows":
                out["parked"] = int(sample.value)
            elif sample.name == "streams_outbox_database_up":
                out["database_up"] = sample.value == 1
            elif sample.name == "streams_outbox_relayed_total":
                out["relayed"] += int(sample.value)
            elif sample.name == "streams_outbox_pauses_total":
                out["pauses"] += int(sample.value)
    return out


def scrape(urls: list[str], summarize: Callable[[str], dict[str, Any]]) -> list[dict[str, Any]]:
    """GET each URL's /metrics and summarize it; a process that does not answer (or answers garbage) is down."""
    import httpx  # noqa: PLC0415

    out = []
    for url in urls:
        try:
            answer = httpx.get(f"{url}/metrics", timeout=2)
            answer.raise_for_status()
            out.append({"url": url, "ok": True, "detail": "", **summarize(answer.text)})
        except (httpx.HTTPError, ValueError) as exc:  # the text parser raises ValueError on a non-metrics page
            out.append({"url": url, "ok": False, "detail": type(exc).__name__})
    return out


def process_checks(bridges: list[dict[str, Any]], relays: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Health cards for bridges and relays: up when /metrics answers and their Redis / database is reachable."""
    checks: dict[str, dict[str, Any]] = {}
    for b in bridges:
        if not b["ok"]:
            checks[f"bridge {b['url']}"] = {"ok": False, "detail": b["detail"]}
            continue
        redis = "Redis down" if b["redis_up"] is False else "Redis up"
        checks[f"bridge {b['url']}"] = {
            "ok": b["redis_up"] is not False,
            "detail": f"{redis}, {b['paused']} paused partition(s), {b['redelivered']} redelivered",
        }
    for r in relays:
        if not r["ok"]:
            checks[f"relay {r['url']}"] = {"ok": False, "detail": r["detail"]}
            continue
        database = "database down" if r["database_up"] is False else "database up"
        checks[f"relay {r['url']}"] = {
            "ok": r["database_up"] is not False,
            "detail": f"{database}, {r['pending']} pending, {r['parked']} parked row(s), {r['relayed']} relayed",
        }
    return checks


def end_offsets(consumer: Consumer, topic: str, partitions: int) -> dict[int, tuple[int, int]]:
    from confluent_kafka import TopicPartition  # noqa: PLC0415

    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5) for p in range(partitions)}


def overview(
    catalog: Catalog,
    consumer: Consumer,
    admin: AdminClient,
    history: History,
    health: dict[str, Any],
    violations: dict[str, int],
) -> dict[str, Any]:
    """What the overview shows: health, events/s per topic (with a series), lag per group, DLQ counts, violations."""
    now = time.time()
    topics, dead = [], []
    for spec in catalog.topics:
        try:
            marks = end_offsets(consumer, spec.name, spec.partitions)
        except Exception:  # noqa: BLE001 - a topic not yet applied shows as missing, the page still renders
            topics.append({"name": spec.name, "missing": True, "rate": 0.0, "series": [], "records": 0})
            continue
        total = sum(high for _, high in marks.values())
        if spec.dead_letter_of is not None:
            dead.append({"topic": spec.dead_letter_of, "count": sum(high - low for low, high in marks.values())})
            continue
        history.offsets[spec.name].append((now, total))
        series = history.rate(spec.name)
        topics.append(
            {
                "name": spec.name,
                "missing": False,
                "rate": series[-1] if series else 0.0,
                "series": series,
                "records": sum(high - low for low, high in marks.values()),
            }
        )
    groups = consumer_groups(admin, consumer, history, now)
    agents = []
    for name, total in sorted(health.pop("_agents", {}).items()):
        history.offsets[f"agent:{name}"].append((now, int(total)))
        series = history.rate(f"agent:{name}")
        agents.append({"name": name, "events": int(total), "rate": series[-1] if series else 0.0, "series": series})
    return {
        "health": health,
        "topics": topics,
        "agents": agents,
        "dead_letters": dead,
        "groups": groups,
        "total_lag": sum(g["lag"] for g in groups),
        "violations": violations,
    }


def consumer_groups(admin: AdminClient, consumer: Consumer, history: History, now: float) -> list[dict[str, Any]]:
    """Every consumer group with its state, members and lag per partition (and a lag series per group)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition  # noqa: PLC0415

    listed = admin.list_consumer_groups(request_timeout=5).result()
    names = sorted(g.group_id for g in listed.valid if not g.group_id.startswith(("streams-console", "streams-reader")))
    described = admin.describe_consumer_groups(names, request_timeout=5) if names else {}
    out = []
    for name in names:
        offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(name)], request_timeout=5)
        committed = offsets[name].result().topic_partitions or []
        partitions = []
        for tp in committed:
            if tp.offset < 0:
                continue
            high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=5)[1]
            partitions.append(
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "committed": tp.offset,
                    "end": high,
                    "lag": max(high - tp.offset, 0),
                }
            )
        description = described[name].result() if name in described else None
        members = (
            []
            if description is None
            else [
                {
                    "id": m.member_id,
                    "client": m.client_id,
                    "host": m.host,
                    "assignment": sorted(f"{tp.topic}[{tp.partition}]" for tp in (m.assignment.topic_partitions or [])),
                }
                for m in description.members
            ]
        )
        lag = sum(p["lag"] for p in partitions)
        history.lag[name].append((now, lag))
        out.append(
            {
                "name": name,
                "state": str(getattr(description, "state", "")).rsplit(".", 1)[-1],
                "members": members,
                "partitions": sorted(partitions, key=lambda p: (p["topic"], p["partition"])),
                "lag": lag,
                "series": [v for _, v in history.lag[name]],
            }
        )
    return out


def violations_today(
    kafka: KafkaConfig, consumer: Consumer, decoder: EventDecoder, topic: str = "compliance.violation"
) -> dict[str, int]:
    """Violations by rule code since midnight UTC (read from the topic, by record timestamps)."""
    from confluent_kafka import TopicPartition  # noqa: PLC0415

    from streams.kafka_util import read_range  # noqa: PLC0415

    midnight = int(datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)
    try:
        meta = consumer.list_topics(topic, timeout=5).topics[topic]
        starts = consumer.offsets_for_times([TopicPartition(topic, p, midnight) for p in meta.partitions], timeout=5)
    except Exception:  # noqa: BLE001 - no violations topic yet: nothing to count
        return {}
    counts: dict[str, int] = defaultdict(int)
    for tp in starts:
        if tp.offset < 0:
            continue
        high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=5)[1]
        for message in read_range(kafka, topic, tp.partition, tp.offset, high):
            try:
                counts[str(decoder.decode(message.value())[1].get("rule_code"))] += 1
            except Exception:  # noqa: BLE001, S112 - an undecodable record is the DLQ page's business
                continue
    return dict(sorted(counts.items()))


def topics_page(catalog: Catalog, kafka: KafkaConfig, admin: AdminClient) -> dict[str, Any]:
    """The catalog beside the cluster: partitions, retention, drift from `topics plan`, owner, clients, audit, PII."""
    from streams.admin import plan_changes  # noqa: PLC0415

    cluster = admin.list_topics(timeout=5).topics
    plan = plan_changes(catalog, kafka)
    changes = {change.topic: change for change in plan.changes}
    rows = []
    for spec in catalog.topics:
        found = cluster.get(spec.name)
        change = changes.get(spec.name)
        rows.append(
            {
                "spec": spec,
                "cluster_partitions": len(found.partitions) if found is not None else None,
                "change": None if change is None else str(change.kind),
                "diffs": []
                if change is None
                else [
                    {"key": d.key, "current": d.current, "desired": d.desired, "drift": d.drift} for d in change.diffs
                ],
            }
        )
    return {"rows": rows, "notes": list(plan.notes), "errors": list(plan.errors)}


def schema_page(registry: RegistryClient, topic: str, a: int | None, b: int | None) -> dict[str, Any]:
    """A topic's registered versions, the compatibility level and a diff between two versions."""
    subject = f"{topic}-value"
    versions = registry.versions(subject)
    level = registry.get_compatibility(subject) if versions else None
    diff: list[str] = []
    if versions:
        b = b if b in versions else versions[-1]
        a = a if a in versions else (versions[-2] if len(versions) > 1 else versions[-1])
        left = json.dumps(json.loads(registry.get_version(subject, a)), indent=2).splitlines()
        right = json.dumps(json.loads(registry.get_version(subject, b)), indent=2).splitlines()
        diff = list(difflib.unified_diff(left, right, f"v{a}", f"v{b}", lineterm="")) or ["(identical)"]
    return {"subject": subject, "versions": versions, "compatibility": level, "a": a, "b": b, "diff": diff}


def tasks_page(
    redis_url: str | None,
    queues: dict[str, int | None],
    kafka: KafkaConfig,
    decoder: EventDecoder,
    failed_topic: str | None,
    bridges: list[dict[str, Any]] | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    """The bridge's queue depths (against their bounds), what the bridges' metrics say (paused partitions, push
    retries per queue, summed over bridges) and the most recent task.failed events."""
    depths: dict[str, int] | None = None
    error = None
    if redis_url is not None:
        from streams.bridge.enqueue import RedisQueues  # noqa: PLC0415
        from streams.bridge.errors import RedisUnavailableError  # noqa: PLC0415

        client = RedisQueues(redis_url, queues, timeout_s=3, ledger=False)
        try:
            depths = client.depths(list(queues))
        except RedisUnavailableError as exc:
            error = str(exc)
        finally:
            client.close()
    failed = []
    if failed_topic is not None:
        for message in read_partitions(kafka, failed_topic, None)[-limit:]:
            try:
                payload = decoder.decode(message.value())[1]
            except Exception:  # noqa: BLE001, S112 - shown on the DLQ page instead
                continue
            failed.append(
                {
                    "partition": message.partition(),
                    "offset": message.offset(),
                    **{
                        k: payload.get(k)
                        for k in (
                            "task_id",
                            "task_name",
                            "event_id",
                            "route",
                            "reason",
                            "attempts",
                            "error_class",
                            "error_message",
                            "source_topic",
                            "source_partition",
                            "source_offset",
                            "tenant_id",
                        )
                    },
                }
            )
    bridges = bridges or []
    scraped = [b for b in bridges if b["ok"]]

    def summed(queue: str, key: str) -> int | None:
        return sum(b["queues"].get(queue, {}).get(key, 0) for b in scraped) if scraped else None

    return {
        "queues": [
            {
                "name": name,
                "bound": bound,
                "depth": None if depths is None else depths.get(name),
                "pushed": summed(name, "pushed"),
                "retries": summed(name, "retries"),
            }
            for name, bound in queues.items()
        ],
        "bridges": bridges,
        "error": error,
        "failed": failed[::-1],
    }


def failed_task(
    kafka: KafkaConfig, decoder: EventDecoder, failed_topic: str, partition: int, offset: int, redis_url: str | None
) -> dict[str, Any]:
    """One task.failed record, its source record and its effect's state: what a task re-drive would do."""
    from streams.bridge.celery_wire import EFFECTS_PREFIX, effect_key  # noqa: PLC0415
    from streams.console.kafka_views import ConsoleInputError  # noqa: PLC0415
    from streams.kafka_util import read_range  # noqa: PLC0415

    found = read_range(kafka, failed_topic, partition, offset, offset + 1)
    if not found:
        raise ConsoleInputError(f"no {failed_topic} record at partition {partition} offset {offset}", 404)
    payload = decoder.decode(found[0].value())[1]
    source = read_range(
        kafka,
        str(payload["source_topic"]),
        int(payload["source_partition"]),
        int(payload["source_offset"]),
        int(payload["source_offset"]) + 1,
    )
    key = effect_key(str(payload["task_name"]), str(payload["event_id"]))
    state = None
    if redis_url is not None:
        import redis  # noqa: PLC0415

        client = redis.Redis.from_url(redis_url, socket_timeout=3, socket_connect_timeout=3)
        try:
            raw = client.get(f"{EFFECTS_PREFIX}done:{key}")
            state = raw.decode() if isinstance(raw, bytes) else None
        finally:
            client.close()
    return {
        "partition": partition,
        "offset": offset,
        "failed": payload,
        "effect_key": key,
        "state": state,
        "source": source[0] if source else None,
    }


def redrive_task(kafka: KafkaConfig, redis_url: str, found: dict[str, Any]) -> bool:
    """Clear the failed effect's mark (the bridge's EffectLedger) and republish its source record as it was;
    False, changing nothing, when the effect is no longer marked failed."""
    import redis  # noqa: PLC0415
    from confluent_kafka import Producer  # noqa: PLC0415

    from streams.bridge.tasks import EffectLedger  # noqa: PLC0415
    from streams.errors import StreamsError  # noqa: PLC0415

    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        if not EffectLedger(client, ttl_s=1, claim_ttl_s=1).forget_failure(found["effect_key"]):
            return False
    finally:
        client.close()
    source = found["source"]
    producer = Producer({**kafka, "acks": "all", "enable.idempotence": True})
    producer.produce(source.topic(), key=source.key(), value=source.value(), headers=source.headers())
    if producer.flush(30) > 0:
        raise StreamsError(
            f"could not republish the source record to {source.topic()} within 30 s; the task's"
            " failed mark is already cleared: re-publish it with `streams replay`"
        )
    return True
