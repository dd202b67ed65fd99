"""The publisher against the real broker and our registry, read back by confluent-kafka's own Avro stack."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from streams.admin import apply_plan, plan_changes
from streams.catalog import Catalog, load_catalog
from streams.cli import main
from streams.demo.samples import invoice
from streams.errors import PublishError, SchemaError
from streams.publish import AsyncPublisher, Publisher
from streams.schemas.registry_client import RegistryClient
from streams.settings import KafkaConfig, Settings
from tests.integration.registry_fixtures import registry_url  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class World:
    catalog: Catalog
    settings: Settings
    invoices: str  # topic names
    actions: str
    registry: str


@pytest.fixture
def world(
    tmp_path: Path,
    unique_name: Callable[[str], str],
    kafka_bootstrap: str,
    registry_url: str,  # noqa: F811
) -> World:
    """A catalog of two fresh topics using the real schemas, applied, with schemas registered."""
    invoices, actions = unique_name("invoice"), unique_name("action")
    shutil.copytree(ROOT / "schemas", tmp_path / "schemas")
    (tmp_path / "topics.yaml").write_text(f"""
version: 1
defaults: {{partitions: 3, replication_factor: 1, min_insync_replicas: 1, retention: 1d, dlq: false}}
topics:
  {invoices}:
    owner: tests
    key: invoice_id
    schema: schemas/invoice.created.avsc
    configs: {{max.message.bytes: "20000"}}
  {actions}:
    owner: tests
    key: user_id
    schema: schemas/user.action.avsc
""")
    catalog = load_catalog(tmp_path / "topics.yaml")
    config: KafkaConfig = {"bootstrap.servers": kafka_bootstrap}
    apply_plan(plan_changes(catalog, config), catalog, config)
    with RegistryClient(registry_url) as client:
        for spec in catalog.topics:
            assert spec.schema_file is not None
            client.register(f"{spec.name}-value", Path(spec.schema_file).read_text())
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        schema_registry_url=registry_url,
        catalog_path=tmp_path / "topics.yaml",
        data_dir=tmp_path / ".streams",
    )
    return World(catalog, settings, invoices, actions, registry_url)


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[Any]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, -2) for p in partitions])
        messages: list[Any] = []
        while len(messages) < expected:
            message = consumer.poll(timeout)
            if message is None:
                break
            assert message.error() is None
            messages.append(message)
        return messages
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
    finally:
        consumer.close()


def test_confluent_deserializer_decodes_our_events_with_cloudevents_headers(world: World) -> None:
    sent = [invoice(i, tenant="acme") for i in range(20)]
    with Publisher(world.settings, source="billing-api") as publisher:
        futures = [
            publisher.publish(world.invoices, event, traceparent=f"00-{'a' * 32}-{'b' * 16}-01") for event in sent
        ]
    delivered = [future.result() for future in futures]
    assert len({d.event_id for d in delivered}) == 20

    bootstrap = world.settings.bootstrap_servers()
    messages = read_all(bootstrap, world.invoices, 20)
    client = SchemaRegistryClient({"url": world.registry})
    deserializer = AvroDeserializer(client)
    by_id = {event["invoice_id"]: event for event in sent}
    with client:
        decoded_all = [
            deserializer(m.value(), SerializationContext(world.invoices, MessageField.VALUE)) for m in messages
        ]
    for message, decoded in zip(messages, decoded_all, strict=True):
        original = by_id[decoded["invoice_id"]]
        assert decoded["tax_inclusive_total"] == original["tax_inclusive_total"]
        assert decoded["lines"][0]["unit_price"] == original["lines"][0]["unit_price"]
        assert decoded["issued_at"] == original["issued_at"]
        assert decoded["buyer"] == original["buyer"]
        assert message.key() == decoded["invoice_id"].encode()
        headers = dict(message.headers())
        assert headers["ce_specversion"] == b"1.0"
        assert headers["ce_source"] == b"billing-api"
        assert headers["ce_type"] == world.invoices.encode()
        assert headers["ce_tenantid"] == b"acme"
        assert headers["ce_traceparent"] == f"00-{'a' * 32}-{'b' * 16}-01".encode()
        assert headers["content-type"] == b"application/avro"
        assert headers["ce_time"].endswith(b"Z")
    assert {m.headers()[1][1].decode() for m in messages} == {d.event_id for d in delivered}


def test_confluent_serializer_registers_and_streams_consume_decodes(world: World) -> None:
    schema = (ROOT / "schemas" / "user.action.avsc").read_text()
    action = {
        "user_id": "u-1",
        "tenant_id": "acme",
        "action": "invoice.approve",
        "resource": "inv-9",
        "ip_address": None,
        "user_agent": None,
        "occurred_at": 1_790_000_000_000,
    }
    with SchemaRegistryClient({"url": world.registry}) as client:
        serializer = AvroSerializer(client, schema, conf={"auto.register.schemas": True})
        value = serializer(action, SerializationContext(world.actions, MessageField.VALUE))
    producer = Producer({"bootstrap.servers": world.settings.bootstrap_servers()})
    producer.produce(world.actions, key=b"u-1", value=value)
    assert producer.flush(10) == 0

    env = {
        "STREAMS_KAFKA_BOOTSTRAP_SERVERS": world.settings.bootstrap_servers(),
        "STREAMS_SCHEMA_REGISTRY_URL": world.registry,
    }
    result = CliRunner().invoke(main, ["consume", world.actions, "-n", "1", "--timeout", "10"], env=env)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output.strip().splitlines()[0])
    assert printed["key"] == "u-1"
    assert printed["value"]["action"] == "invoice.approve"
    assert printed["value"]["occurred_at"].startswith("2026-09-21")


def test_sync_and_async_publishers_encode_identically(world: World) -> None:
    event = invoice(3)
    event_id, traceparent = "e-1", f"00-{'1' * 32}-{'2' * 16}-01"
    with Publisher(world.settings) as publisher:
        sync_record = publisher.encoder.encode(world.invoices, event, event_id=event_id, traceparent=traceparent)
        sync_delivery = publisher.publish(world.invoices, event, event_id=event_id, traceparent=traceparent).result()

    async def run() -> Any:
        async with AsyncPublisher(world.settings) as publisher:
            record = publisher.encoder.encode(world.invoices, event, event_id=event_id, traceparent=traceparent)
            delivery = await publisher.publish_and_wait(
                world.invoices, event, event_id=event_id, traceparent=traceparent
            )
            return record, delivery

    async_record, async_delivery = asyncio.run(run())
    assert (sync_record.key, sync_record.value) == (async_record.key, async_record.value)
    strip_time = [(k, v) for k, v in sync_record.headers if k != "ce_time"]
    assert strip_time == [(k, v) for k, v in async_record.headers if k != "ce_time"]
    assert sync_delivery.partition == async_delivery.partition  # same key, same partition
    assert async_delivery.offset == sync_delivery.offset + 1


BAD_PAYLOADS: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]], str]] = [
    ("missing required field", lambda e: {k: v for k, v in e.items() if k != "currency"}, "currency"),
    ("wrong type", lambda e: {**e, "icv": "seven"}, "icv"),
    ("decimal scale overflow", lambda e: {**e, "vat_total": Decimal("1.005")}, "more than 2 decimal places"),
    ("unknown field", lambda e: {**e, "colour": "red"}, "unknown field"),
    ("naive datetime", lambda e: {**e, "issued_at": e["issued_at"].replace(tzinfo=None)}, "no timezone"),
    ("oversize record", lambda e: {**e, "lines": e["lines"] * 400}, "max.message.bytes"),
    ("bad tenant header", lambda e: {**e, "tenant_id": "acme corp!"}, "tenant id"),
]


@pytest.mark.parametrize(("case", "spoil", "message"), BAD_PAYLOADS, ids=[c[0] for c in BAD_PAYLOADS])
def test_bad_payload_fails_before_anything_is_sent(
    world: World, case: str, spoil: Callable[[dict[str, Any]], dict[str, Any]], message: str
) -> None:
    bootstrap = world.settings.bootstrap_servers()
    before = end_offsets(bootstrap, world.invoices)
    with Publisher(world.settings) as publisher, pytest.raises(PublishError, match=message):
        publisher.publish(world.invoices, spoil(invoice(1)))
    assert end_offsets(bootstrap, world.invoices) == before, case


def test_unknown_topic_unregistered_schema_registry_down_and_broker_down(world: World, tmp_path: Path) -> None:
    with Publisher(world.settings) as publisher, pytest.raises(PublishError, match=r"unknown topic 'invoice\.nope'"):
        publisher.publish("invoice.nope", invoice(1))

    down_registry = world.settings.model_copy(update={"schema_registry_url": "http://127.0.0.1:9"})
    with Publisher(down_registry) as publisher, pytest.raises(SchemaError, match="cannot reach the schema registry"):
        publisher.publish(world.invoices, invoice(1))

    down_broker = world.settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:9"})
    with Publisher(down_broker) as publisher, pytest.raises(PublishError, match="cannot reach Kafka"):
        publisher.publish(world.invoices, invoice(1))


def test_cli_publish_is_all_or_nothing(world: World, tmp_path: Path) -> None:
    good = [json.dumps(invoice(i), default=str) for i in range(3)]
    env = {
        "STREAMS_KAFKA_BOOTSTRAP_SERVERS": world.settings.bootstrap_servers(),
        "STREAMS_SCHEMA_REGISTRY_URL": world.registry,
        "STREAMS_CATALOG_PATH": str(world.settings.catalog_path),
    }
    bootstrap = world.settings.bootstrap_servers()
    before = end_offsets(bootstrap, world.invoices)

    bad_file = tmp_path / "bad.jsonl"
    bad_file.write_text("\n".join([*good, good[0].replace('"currency": "SAR", ', "")]) + "\n")
    result = CliRunner().invoke(main, ["publish", world.invoices, "--file", str(bad_file)], env=env)
    assert result.exit_code == 1
    assert f"{bad_file}:4" in result.output
    assert "nothing sent" in result.output
    assert end_offsets(bootstrap, world.invoices) == before

    for args, expected in [
        (["publish", "invoice.nope", "--file", str(bad_file)], "unknown topic"),
        (["publish", world.invoices, "--file", str(tmp_path / "missing.jsonl")], "missing.jsonl"),
    ]:
        failed = CliRunner().invoke(main, args, env=env)
        assert failed.exit_code != 0
        assert expected in failed.output

    good_file = tmp_path / "good.jsonl"
    good_file.write_text("\n".join(good) + "\n")
    result = CliRunner().invoke(main, ["publish", world.invoices, "--file", str(good_file)], env=env)
    assert result.exit_code == 0, result.output
    assert end_offsets(bootstrap, world.invoices) == before + 3


def test_publish_nowait_delivers_the_same_events_without_futures(world: World) -> None:
    bootstrap = world.settings.bootstrap_servers()
    sent = [invoice(i, tenant="acme") for i in range(30)]
    trace = f"00-{'c' * 32}-{'d' * 16}-01"
    with Publisher(world.settings, source="billing-api") as publisher:
        ids = [publisher.publish_nowait(world.invoices, event) for event in sent[:20]]
        ids += [publisher.publish_nowait(world.invoices, event, traceparent=trace) for event in sent[20:]]
        publisher.flush()
        assert publisher.delivered == 30
    assert len(set(ids)) == 30

    messages = read_all(bootstrap, world.invoices, 30)
    assert len(messages) == 30
    with SchemaRegistryClient({"url": world.registry}) as client:
        deserializer = AvroDeserializer(client)
        decoded = [deserializer(m.value(), SerializationContext(world.invoices, MessageField.VALUE)) for m in messages]
    assert sorted(d["invoice_id"] for d in decoded) == sorted(e["invoice_id"] for e in sent)
    for message in messages:
        headers = message.headers()
        assert [name for name, _ in headers] == [
            "ce_specversion",
            "ce_id",
            "ce_source",
            "ce_type",
            "ce_time",
            "content-type",
            "ce_tenantid",
            "ce_traceparent",
        ]
    assert sorted(m.key() for m in messages) == sorted(e["invoice_id"].encode() for e in sent)  # the key field
    assert {m.headers()[1][1].decode() for m in messages} == set(ids)
    assert sum(dict(m.headers())["ce_traceparent"] == trace.encode() for m in messages) == 10


def test_publish_nowait_refuses_bad_input_before_sending(world: World) -> None:
    bootstrap = world.settings.bootstrap_servers()
    with Publisher(world.settings) as publisher:
        publisher.publish_nowait(world.invoices, invoice(1))  # warms the fast path
        publisher.flush()
        before = end_offsets(bootstrap, world.invoices)
        spoilers: list[tuple[Callable[[dict[str, Any]], dict[str, Any]], str]] = [
            (lambda e: {**e, "icv": "seven"}, "field 'icv'"),
            (lambda e: {**e, "tenant_id": "acme corp!"}, "tenant id 'acme corp!' is not valid"),
            (lambda e: {**e, "lines": e["lines"] * 400}, "max.message.bytes 20000"),
        ]
        for spoil, message in spoilers:
            with pytest.raises(PublishError, match=message):
                publisher.publish_nowait(world.invoices, spoil(invoice(2)))
        with pytest.raises(PublishError, match="traceparent"):
            publisher.publish_nowait(world.invoices, invoice(3), traceparent="nope")
        publisher.flush()
    assert end_offsets(bootstrap, world.invoices) == before


def test_publish_nowait_delivery_failure_is_raised_by_flush(world: World) -> None:
    # Our catalog forgets the topic's 20,000-byte limit, so the broker is the one to refuse the record.
    spec = world.catalog.topic(world.invoices).model_copy(update={"configs": {}})
    catalog = world.catalog.model_copy(update={"topics": (spec,)})
    big = {**invoice(1), "lines": invoice(1)["lines"] * 400}
    with Publisher(world.settings, catalog=catalog) as publisher:
        publisher.publish_nowait(world.invoices, invoice(2))
        publisher.flush()
        publisher.publish_nowait(world.invoices, big)
        with pytest.raises(PublishError, match=r"1 event\(s\) failed delivery; first: delivery to .* failed"):
            publisher.flush()
        assert publisher.delivered == 1
        publisher.flush()  # a failure is reported once: this flush does not raise


def test_async_publish_nowait(world: World) -> None:
    async def run() -> int:
        async with AsyncPublisher(world.settings) as publisher:
            for i in range(10):
                publisher.publish_nowait(world.invoices, invoice(i))
            await publisher.flush()
            return publisher.delivered

    before = end_offsets(world.settings.bootstrap_servers(), world.invoices)
    assert asyncio.run(run()) == 10
    assert end_offsets(world.settings.bootstrap_servers(), world.invoices) == before + 10
