"""The schema registry against a real broker, through confluent-kafka's own client and raw HTTP.

Covers the REST API, Avro serde round trips, restarts, racing writers and audit protection.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from streams.registry.commands import registry, standalone
from streams.registry.service import NewSchema, SchemaRegistry
from streams.registry.store import SchemaLog, ensure_topic
from streams.schemas import LEVELS, check_compatibility
from streams.settings import KafkaConfig
from tests.integration.registry_fixtures import (
    AUDITED_TOPIC,
    PLAIN_TOPIC,
    RegistryProcess,
    registry_url,  # noqa: F401
    start_registry,
    unique_schemas_topic,
)
from tests.schemas.compat_cases import CASES, CompatCase, field, record

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from streams.registry.state import RegistryState

JSON_TYPE = {"Content-Type": "application/vnd.schemaregistry.v1+json"}


def subject_name(base: str = "reg") -> str:
    return f"t.{base}.{uuid.uuid4().hex[:8]}-value"


def invoice(*extra: dict[str, Any]) -> str:
    return record(field("id", "string"), *extra)


@pytest.fixture
def client(registry_url: str) -> Iterator[SchemaRegistryClient]:  # noqa: F811 - the imported fixture
    sr = SchemaRegistryClient({"url": registry_url})
    yield sr
    sr.close()


@pytest.fixture
def http(registry_url: str) -> Iterator[httpx.Client]:  # noqa: F811 - the imported fixture
    with httpx.Client(base_url=registry_url, headers=JSON_TYPE, timeout=60) as session:
        yield session


def sr_error(call: Callable[[], object]) -> SchemaRegistryError:
    with pytest.raises(SchemaRegistryError) as caught:
        call()
    return caught.value


def test_client_register_read_lookup_compat_config_delete(client: SchemaRegistryClient) -> None:
    subject, other = subject_name(), subject_name()
    v1 = Schema(invoice(), "AVRO")
    v2 = Schema(invoice(field("note", "string", default="")), "AVRO")

    id1 = client.register_schema(subject, v1)
    assert client.register_schema(subject, Schema(invoice(), "AVRO")) == id1
    id2 = client.register_schema(subject, v2)
    assert id2 == id1 + 1
    assert client.register_schema(other, Schema(invoice(), "AVRO")) == id1  # same schema, same id

    fetched = client.get_schema(id2).schema_str
    assert fetched is not None
    assert v2.schema_str is not None
    assert json.loads(fetched) == json.loads(v2.schema_str)
    assert client.get_versions(subject) == [1, 2]
    latest = client.get_latest_version(subject)
    assert (latest.version, latest.schema_id, latest.subject) == (2, id2, subject)
    assert client.get_version(subject, 1).schema_id == id1
    assert client.lookup_schema(subject, v1).version == 1
    assert {subject, other} <= set(client.get_subjects())
    assert sorted(client.get_subjects_by_schema_id(id1)) == sorted([subject, other])
    assert client.get_schema_types() == ["AVRO"]

    breaking = Schema(invoice(field("note", "int")), "AVRO")
    assert client.test_compatibility(subject, v2) is True
    assert client.test_compatibility(subject, breaking) is False
    assert client.test_compatibility_all_versions(subject, breaking) is False
    assert sr_error(lambda: client.register_schema(subject, breaking)).error_code == 409

    assert client.get_compatibility() == "BACKWARD_TRANSITIVE"
    assert sr_error(lambda: client.get_compatibility(subject)).error_code == 40408
    client.set_compatibility(subject, "FULL")
    assert client.get_compatibility(subject) == "FULL"
    deleted = client.delete_config(subject).compatibility_level
    assert deleted is not None
    assert deleted.value == "FULL"

    assert client.delete_version(subject, 2) == 2
    assert client.get_versions(subject) == [1]
    assert client.delete_subject(subject) == [1]
    assert subject not in client.get_subjects()
    assert subject in client.get_subjects(deleted=True)
    assert client.delete_subject(subject, permanent=True) == [1, 2]
    assert sr_error(lambda: client.get_versions(subject)).error_code == 40401
    assert client.get_schema(id1).schema_str  # still used by `other`
    client.clear_caches()
    assert sr_error(lambda: client.get_schema(id2)).error_code == 40403  # its only version is gone


def test_client_errors_use_confluent_codes(client: SchemaRegistryClient) -> None:
    subject = subject_name()
    client.register_schema(subject, Schema(invoice(), "AVRO"))
    assert sr_error(lambda: client.get_version(subject, 7)).error_code == 40402
    assert sr_error(lambda: client.get_latest_version(subject_name())).error_code == 40401
    bad = sr_error(lambda: client.register_schema(subject, Schema('{"type": "recrod"}', "AVRO")))
    assert (bad.http_status_code, bad.error_code) == (422, 42201)
    missing = sr_error(lambda: client.lookup_schema(subject, Schema(invoice(field("x", "int")), "AVRO")))
    assert missing.error_code == 40403


def test_avro_serializer_and_deserializer_round_trip(client: SchemaRegistryClient) -> None:
    topic = f"t.reg.{uuid.uuid4().hex[:8]}"
    schema = invoice(field("amount", {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}))
    serializer = AvroSerializer(client, schema)
    deserializer = AvroDeserializer(client)
    context = SerializationContext(topic, MessageField.VALUE)
    event = {"id": "inv-1", "amount": Decimal("1234.50")}
    payload = serializer(event, context)
    assert payload is not None
    schema_id = int.from_bytes(payload[1:5], "big")
    assert payload[0] == 0
    assert schema_id == client.get_latest_version(f"{topic}-value").schema_id
    client.clear_caches()
    assert deserializer(payload, context) == event


def test_raw_http_edges(http: httpx.Client) -> None:
    subject = subject_name()
    schema = invoice(field(f"only_here_{uuid.uuid4().hex[:6]}", "int"))
    assert http.get("/").json() == {}
    response = http.post(f"/subjects/{subject}/versions", json={"schema": schema})
    assert response.headers["content-type"].startswith("application/vnd.schemaregistry.v1+json")
    schema_id = response.json()["id"]
    assert http.get(f"/subjects/{subject}/versions/1/schema").json() == json.loads(schema)
    assert http.get(f"/schemas/ids/{schema_id}", params={"subject": subject}).json()["schema"]
    assert http.get(f"/schemas/ids/{schema_id}/versions").json() == [{"subject": subject, "version": 1}]
    assert http.get(f"/subjects/{subject}/versions/-1").json()["version"] == 1

    def code(response: httpx.Response) -> tuple[int, int]:
        return response.status_code, response.json()["error_code"]

    assert code(http.get(f"/subjects/{subject}/versions/abc")) == (422, 42202)
    assert code(http.get(f"/subjects/{subject}/versions/0")) == (422, 42202)
    assert code(http.put("/config/x", json={"compatibility": "SIDEWAYS"})) == (422, 42203)
    assert code(http.put("/mode/x", json={"mode": "SOMETIMES"})) == (422, 42204)
    assert code(http.get("/schemas/ids/987654321")) == (404, 40403)
    assert code(http.get("/nothing/here")) == (404, 404)
    protobuf = {"schema": "syntax = 'proto3';", "schemaType": "PROTOBUF"}
    assert code(http.post(f"/subjects/{subject}/versions", json=protobuf)) == (422, 42201)
    bad_default = {"schema": invoice(field("n", "int", default="zero"))}
    assert code(http.post(f"/subjects/{subject}/versions", json=bad_default)) == (422, 42201)
    assert http.get(f"/config/{subject}", params={"defaultToGlobal": "true"}).json() == {
        "compatibilityLevel": "BACKWARD_TRANSITIVE"
    }
    verbose = http.post(
        f"/compatibility/subjects/{subject}/versions/latest",
        params={"verbose": "true"},
        json={"schema": invoice(field("x", "int"))},
    ).json()
    assert verbose["is_compatible"] is False
    assert any("READER_FIELD_MISSING_DEFAULT_VALUE" in message for message in verbose["messages"])


def test_soft_and_hard_delete_states(http: httpx.Client) -> None:
    subject = subject_name()
    for extra in ([], [field("a", "int", default=0)]):
        http.post(f"/subjects/{subject}/versions", json={"schema": invoice(*extra)}).raise_for_status()

    def code(response: httpx.Response) -> int:
        return int(response.json()["error_code"])

    assert code(http.delete(f"/subjects/{subject}/versions/1", params={"permanent": "true"})) == 40407
    assert http.delete(f"/subjects/{subject}/versions/1").json() == 1
    assert code(http.delete(f"/subjects/{subject}/versions/1")) == 40406
    assert code(http.get(f"/subjects/{subject}/versions/1")) == 40402
    assert http.get(f"/subjects/{subject}/versions/1", params={"deleted": "true"}).json()["version"] == 1
    assert http.get(f"/subjects/{subject}/versions", params={"deleted": "true"}).json() == [1, 2]
    assert code(http.delete(f"/subjects/{subject}", params={"permanent": "true"})) == 40405
    http.put(f"/config/{subject}", json={"compatibility": "FULL"}).raise_for_status()
    assert http.delete(f"/subjects/{subject}").json() == [2]
    assert code(http.get(f"/config/{subject}")) == 40408  # the subject's level goes with it
    assert code(http.delete(f"/subjects/{subject}")) == 40404
    # Re-registering after a soft delete continues the version sequence.
    http.post(f"/subjects/{subject}/versions", json={"schema": invoice()}).raise_for_status()
    assert http.get(f"/subjects/{subject}/versions").json() == [3]


def test_modes_readonly_and_import(http: httpx.Client) -> None:
    subject = subject_name()
    http.post(f"/subjects/{subject}/versions", json={"schema": invoice()}).raise_for_status()
    assert http.put(f"/mode/{subject}", json={"mode": "READONLY"}).json() == {"mode": "READONLY"}
    refused = http.post(f"/subjects/{subject}/versions", json={"schema": invoice(field("a", "int", default=0))})
    assert (refused.status_code, refused.json()["error_code"]) == (422, 42205)
    assert http.delete(f"/subjects/{subject}").json()["error_code"] == 42205
    assert http.delete(f"/mode/{subject}").json() == {"mode": "READONLY"}
    assert http.get(f"/mode/{subject}").json()["error_code"] == 40409
    assert http.get("/mode").json() == {"mode": "READWRITE"}

    imported = subject_name()
    assert http.put(f"/mode/{imported}", json={"mode": "IMPORT"}).json() == {"mode": "IMPORT"}
    body = {
        "schema": invoice(field("imported", "long")),
        "id": 500000 + uuid.uuid4().int % 1000,
        "version": 7,
    }
    assert http.post(f"/subjects/{imported}/versions", json=body).json() == {"id": body["id"]}
    assert http.get(f"/subjects/{imported}/versions/7").json()["id"] == body["id"]
    http.put(f"/mode/{imported}", json={"mode": "READWRITE"}).raise_for_status()
    after = http.post(
        f"/subjects/{imported}/versions",
        json={"schema": invoice(field("imported", "long"), field("b", "int", default=0))},
    )
    assert after.json()["id"] > body["id"]  # ids continue above imported ones
    assert http.get(f"/subjects/{imported}/versions").json() == [7, 8]


def test_hard_delete_of_an_audited_subject_is_refused(http: httpx.Client) -> None:
    audited, plain = f"{AUDITED_TOPIC}-value", f"{PLAIN_TOPIC}-value"
    for subject in (audited, plain):
        schema_id = http.post(f"/subjects/{subject}/versions", json={"schema": invoice()}).json()["id"]
        assert http.delete(f"/subjects/{subject}").json() == [1]  # soft delete is allowed
    refused = http.delete(f"/subjects/{audited}", params={"permanent": "true"})
    assert refused.status_code == 422
    assert refused.json()["error_code"] == 42205
    assert "audit" in refused.json()["message"]
    refused = http.delete(f"/subjects/{audited}/versions/1", params={"permanent": "true"})
    assert refused.json()["error_code"] == 42205
    assert http.get(f"/subjects/{audited}/versions", params={"deleted": "true"}).json() == [1]
    assert http.get(f"/schemas/ids/{schema_id}").status_code == 200
    assert http.delete(f"/subjects/{plain}", params={"permanent": "true"}).json() == [1]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_compatibility_endpoint_agrees_with_offline_checker(http: httpx.Client, case: CompatCase) -> None:
    subject = subject_name("compat")
    http.put(f"/config/{subject}", json={"compatibility": "NONE"}).raise_for_status()
    for schema in case.existing:
        http.post(f"/subjects/{subject}/versions", json={"schema": schema}).raise_for_status()
    for level in LEVELS:
        http.put(f"/config/{subject}", json={"compatibility": level}).raise_for_status()
        answer = http.post(f"/compatibility/subjects/{subject}/versions", json={"schema": case.new}).json()
        offline = check_compatibility(case.new, case.existing, level).compatible
        assert answer["is_compatible"] is offline is case.expected(level), level
    http.delete(f"/config/{subject}").raise_for_status()  # back to the global BACKWARD_TRANSITIVE
    registered = http.post(f"/subjects/{subject}/versions", json={"schema": case.new})
    assert (registered.status_code == 200) is case.expected("BACKWARD_TRANSITIVE"), registered.text


# ---- processes that share one topic -------------------------------------------------------------


@pytest.fixture
def spawn(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Callable[[str], RegistryProcess]]:
    started: list[RegistryProcess] = []

    def start(topic: str) -> RegistryProcess:
        process = start_registry(kafka_bootstrap, topic, tmp_path / f"registry-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def view(url: str) -> dict[str, Any]:
    """Everything a client can see: subjects (deleted too), every version, configs."""
    with httpx.Client(base_url=url, timeout=30) as http:
        subjects = http.get("/subjects", params={"deleted": "true"}).json()
        out: dict[str, Any] = {"global": http.get("/config").json()}
        for subject in subjects:
            versions = http.get(f"/subjects/{subject}/versions", params={"deleted": "true"}).json()
            out[subject] = {
                "versions": [
                    http.get(f"/subjects/{subject}/versions/{v}", params={"deleted": "true"}).json() for v in versions
                ],
                "live": http.get(f"/subjects/{subject}/versions").json() if versions else None,
                "config": http.get(f"/config/{subject}").json(),
            }
        return out


def test_restart_rebuilds_the_same_ids_and_versions(spawn: Callable[[str], RegistryProcess]) -> None:
    topic = unique_schemas_topic()
    first = spawn(topic)
    with httpx.Client(base_url=first.url, headers=JSON_TYPE, timeout=30) as http:
        for index in range(3):
            schemas = [invoice(*[field(f"f{n}", "int", default=0) for n in range(v)]) for v in range(index + 2)]
            for schema in schemas:
                http.post(f"/subjects/s{index}-value/versions", json={"schema": schema}).raise_for_status()
        http.put("/config/s1-value", json={"compatibility": "FULL"}).raise_for_status()
        http.delete("/subjects/s2-value/versions/1").raise_for_status()
        http.delete("/subjects/s0-value").raise_for_status()
        http.delete("/subjects/s0-value", params={"permanent": "true"}).raise_for_status()
    before = view(first.url)
    highest = max(v["id"] for s in before.values() if "versions" in s for v in s["versions"])
    first.stop()

    second = spawn(topic)
    assert view(second.url) == before
    with httpx.Client(base_url=second.url, headers=JSON_TYPE, timeout=30) as http:
        new_id = http.post("/subjects/s9-value/versions", json={"schema": record(field("z", "int"))}).json()["id"]
    assert new_id == highest + 1


def read_log(bootstrap: str, topic: str) -> list[tuple[bytes, bytes | None]]:
    """Every committed record of `topic` (read_committed, as our registry reads it), raw."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "registry-test",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        partition = TopicPartition(topic, 0)
        _, end = consumer.get_watermark_offsets(partition, timeout=10)
        consumer.assign([TopicPartition(topic, 0, 0)])
        found: list[tuple[bytes, bytes | None]] = []
        while consumer.position([partition])[0].offset < end:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                found.append((message.key() or b"", message.value()))
        return found
    finally:
        consumer.close()


def committed_records(bootstrap: str, topic: str) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    return [(json.loads(key), json.loads(value) if value else None) for key, value in read_log(bootstrap, topic)]


def test_two_registries_racing_on_one_subject_stay_consistent(
    spawn: Callable[[str], RegistryProcess], kafka_bootstrap: str
) -> None:
    topic = unique_schemas_topic()
    registries = [spawn(topic), spawn(topic)]
    per_process = 20
    schemas = [invoice(field(f"f{n}", "int", default=n)) for n in range(2 * per_process)]
    start = threading.Barrier(len(schemas))

    def register(index: int) -> int:
        url = registries[index % 2].url
        with httpx.Client(base_url=url, headers=JSON_TYPE, timeout=90) as http:
            start.wait(timeout=30)
            # Staggered arrivals alternate between the processes, so each keeps taking the writer
            # role from the other (one burst would be written in one batch by each, one after the other).
            time.sleep(index * 0.05)
            response = http.post("/subjects/race-value/versions", json={"schema": schemas[index]})
            response.raise_for_status()
            return int(response.json()["id"])

    with ThreadPoolExecutor(max_workers=len(schemas)) as pool:
        ids = list(pool.map(register, range(len(schemas))))

    assert len(set(ids)) == len(schemas), "two schemas got the same id"
    views = [view(process.url) for process in registries]
    assert views[0] == views[1], "the two registries disagree"
    versions = views[0]["race-value"]["versions"]
    assert [v["version"] for v in versions] == list(range(1, len(schemas) + 1))
    assert sorted(v["id"] for v in versions) == sorted(ids)
    by_schema = {json.dumps(json.loads(v["schema"]), sort_keys=True): v["id"] for v in versions}
    assert all(by_schema[json.dumps(json.loads(s), sort_keys=True)] == i for s, i in zip(schemas, ids, strict=True))

    # The log itself: every committed subject version and every id written exactly once.
    written = [(key, value) for key, value in committed_records(kafka_bootstrap, topic) if key["keytype"] == "SCHEMA"]
    assert len({(key["subject"], key["version"]) for key, _ in written}) == len(written) == len(schemas)
    assert len({value["id"] for _, value in written if value}) == len(schemas)
    assert any("fenced by another registry process" in p.log_text() for p in registries), "no race happened"


def test_a_writer_fenced_mid_plan_replans_instead_of_reusing_an_id(kafka_bootstrap: str) -> None:
    """Deterministic version of the race: A plans on a state B then changes; A's commit must fail."""
    topic = unique_schemas_topic()
    config: KafkaConfig = {"bootstrap.servers": kafka_bootstrap}
    store_a, store_b = SchemaLog(config, topic), SchemaLog(config, topic)
    store_a.start()
    store_b.start()
    try:
        registry_a, registry_b = SchemaRegistry(store_a), SchemaRegistry(store_b)
        x, y = NewSchema(json.dumps(json.loads(invoice()))), NewSchema(invoice(field("y", "int", default=0)))
        a_planned, b_committed = threading.Event(), threading.Event()
        plans: list[tuple[int, int]] = []

        def plan_a(state: RegistryState) -> tuple[Any, int]:
            records, schema_id = registry_a._plan_register("s-value", y, state)
            plans.append((records[0].key["version"], schema_id))
            if len(plans) == 1:  # hold A between planning and committing while B writes
                a_planned.set()
                assert b_committed.wait(30)
            return records, schema_id

        future_a = store_a.submit(plan_a)
        assert a_planned.wait(30)
        id_b = store_b.submit(partial(registry_b._plan_register, "s-value", x)).result(60)
        b_committed.set()
        id_a = future_a.result(90)

        assert plans[0] == (1, 1)  # A's stale plan: the same version and id B then took
        assert (id_b, id_a) == (1, 2)
        assert plans[-1] == (2, 2)
        assert store_a.fenced_count >= 1
        for store in (store_a, store_b):
            store.sync()
            with store.reading() as state:
                assert [(v.version, v.schema_id) for v in state.versions("s-value")] == [(1, 1), (2, 2)]
    finally:
        store_a.stop()
        store_b.stop()


def test_takes_over_a_topic_written_in_the_confluent_format(
    spawn: Callable[[str], RegistryProcess], kafka_bootstrap: str
) -> None:
    """Records as Confluent SR / Karapace write them (no transactions) fold into the same view."""
    topic = unique_schemas_topic()
    ensure_topic({"bootstrap.servers": kafka_bootstrap}, topic, 30)

    def key(**fields: object) -> bytes:
        return json.dumps(fields, separators=(",", ":")).encode()

    def schema_value(subject: str, version: int, schema_id: int, schema: str, **extra: object) -> bytes:
        fields = {"subject": subject, "version": version, "id": schema_id, "schema": schema, "deleted": False}
        return json.dumps({**fields, **extra}).encode()

    a1, a2, c1 = invoice(), invoice(field("n", "int", default=0)), record(field("c", "int"))
    foreign: list[tuple[bytes, bytes | None]] = [
        (key(keytype="NOOP", magic=0), None),
        (key(keytype="SCHEMA", subject="a-value", version=1, magic=1), schema_value("a-value", 1, 1, a1)),
        (
            key(keytype="SCHEMA", subject="a-value", version=2, magic=1),
            schema_value("a-value", 2, 2, a2, schemaType="AVRO", references=[]),
        ),
        (key(keytype="SCHEMA", subject="b-value", version=1, magic=1), schema_value("b-value", 1, 1, a1)),
        (key(keytype="SCHEMA", subject="c-value", version=1, magic=1), schema_value("c-value", 1, 3, c1)),
        (key(keytype="DELETE_SUBJECT", subject="c-value", magic=0), b'{"subject":"c-value","version":1}'),
        (
            key(keytype="SCHEMA", subject="gone-value", version=1, magic=1),
            schema_value("gone-value", 1, 4, c1),
        ),
        (key(keytype="SCHEMA", subject="gone-value", version=1, magic=1), None),
        (key(keytype="CONFIG", subject=None, magic=0), b'{"compatibilityLevel":"FULL"}'),
        (key(keytype="CONFIG", subject="b-value", magic=0), b'{"compatibilityLevel":"NONE"}'),
        (key(keytype="MODE", subject=None, magic=0), b'{"mode":"READWRITE"}'),
        (key(keytype="CONTEXT", tenant="default", context=".", magic=0), b"{}"),
    ]
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    for raw_key, raw_value in foreign:
        producer.produce(topic, key=raw_key, value=raw_value, partition=0)
    assert producer.flush(30) == 0

    registry = spawn(topic)
    with httpx.Client(base_url=registry.url, headers=JSON_TYPE, timeout=30) as http:
        assert http.get("/subjects").json() == ["a-value", "b-value"]
        assert http.get("/subjects", params={"deleted": "true"}).json() == ["a-value", "b-value", "c-value"]
        assert http.get("/subjects/a-value/versions").json() == [1, 2]
        assert http.get("/config").json() == {"compatibilityLevel": "FULL"}
        assert http.get("/config/b-value").json() == {"compatibilityLevel": "NONE"}
        assert http.get("/schemas/ids/1/subjects").json() == ["a-value", "b-value"]
        assert http.get("/schemas/ids/4").json()["error_code"] == 40403
        new = http.post("/subjects/n-value/versions", json={"schema": record(field("z", "long"))}).json()
    assert new == {"id": 5}  # above every id seen, including the hard-deleted 4

    ours = [(k, v) for k, v in committed_records(kafka_bootstrap, topic) if k.get("subject") == "n-value"]
    assert ours == [
        (
            {"keytype": "SCHEMA", "subject": "n-value", "version": 1, "magic": 1},
            {
                "subject": "n-value",
                "version": 1,
                "id": 5,
                "schema": json.dumps(json.loads(record(field("z", "long"))), separators=(",", ":")),
                "deleted": False,
            },
        ),
    ]
    raw_keys = [raw_key for raw_key, _ in read_log(kafka_bootstrap, topic)]
    assert b'{"keytype":"SCHEMA","subject":"n-value","version":1,"magic":1}' in raw_keys


def test_cli_help_shows_an_example() -> None:
    for command, args in ((registry, ["serve", "--help"]), (standalone, ["--help"])):
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 0, result.output
        assert "--bootstrap-servers" in result.output
        assert "Example:" in result.output


def test_metrics_count_requests_by_route_and_status(http: httpx.Client) -> None:
    subject = subject_name()
    assert http.post(f"/subjects/{subject}/versions", json={"schema": invoice()}).status_code == 200
    assert http.get(f"/subjects/{subject}/versions/99").status_code == 404
    text = http.get("/metrics").text
    route = "/subjects/{subject}/versions"
    assert f'streams_registry_requests_total{{method="POST",route="{route}",status="200"}}' in text
    assert f'streams_registry_requests_total{{method="GET",route="{route}/{{version}}",status="404"}}' in text
    assert f'streams_registry_request_seconds_count{{method="POST",route="{route}"}}' in text
    assert subject not in text  # routes, not subjects: bounded label values
