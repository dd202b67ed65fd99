"""The faust-streaming peer of bench/user_agents.py: a 60 s tumbling count per user, the current count per event.

A faust Table with `.tumbling(60, expires=3600)` on the same Avro user.action records as the others read:
the values are decoded from our registry's Confluent wire format (magic byte, schema id, Avro body) with
fastavro, the writer schema fetched once per id, and the outputs encoded the same way under the sink's
registered schema. App settings as bench/faust_passthrough.py (the ones faust gets from us): memory store
(the table's changelog topic still gets every write), commit every 1,000 events or 1 s, acks=-1, and
faust's default at-least-once processing. Run by bench/user_agents.py as
`python bench/faust_velocity.py --broker HOST:PORT --registry URL --app-id ID --source IN --sink OUT --datadir DIR`.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import urllib.request
from typing import Any

import fastavro
import faust
from faust.serializers import codecs

WIRE = struct.Struct(">bI")  # Confluent wire format: magic byte 0, then the 4-byte schema id


class ConfluentAvro(codecs.Codec):
    """Avro values in Confluent's wire format against a schema registry: any writer schema in, one schema out."""

    def __init__(self, registry: str, subject: str | None = None, **kwargs: Any) -> None:
        super().__init__(registry=registry, subject=subject, **kwargs)
        self.registry = registry.rstrip("/")
        self.readers: dict[int, Any] = {}
        self.writer: tuple[bytes, Any] | None = None
        if subject is not None:
            latest = self._get(f"/subjects/{subject}/versions/latest")
            self.writer = WIRE.pack(0, latest["id"]), fastavro.parse_schema(json.loads(latest["schema"]))

    def _get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.registry + path, timeout=10) as response:  # noqa: S310 - our registry
            return json.loads(response.read())  # type: ignore[no-any-return]

    def _loads(self, data: bytes) -> Any:
        magic, schema_id = WIRE.unpack_from(data)
        if magic != 0:
            raise ValueError(f"not Confluent wire format (magic byte {magic})")
        schema = self.readers.get(schema_id)
        if schema is None:
            schema = self.readers[schema_id] = fastavro.parse_schema(
                json.loads(self._get(f"/schemas/ids/{schema_id}")["schema"])
            )
        return fastavro.schemaless_reader(io.BytesIO(memoryview(data)[WIRE.size :]), schema)

    def _dumps(self, value: Any) -> bytes:
        assert self.writer is not None, "this codec was made without a subject: it only decodes"  # noqa: S101
        header, schema = self.writer
        out = io.BytesIO()
        out.write(header)
        fastavro.schemaless_writer(out, schema, value)
        return out.getvalue()


def build_app(
    broker: str, registry: str, app_id: str, source: str, sink: str, datadir: str, partitions: int
) -> faust.App:
    app = faust.App(
        app_id,
        broker=f"kafka://{broker}",
        store="memory://",
        consumer_auto_offset_reset="earliest",
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        producer_acks=-1,
        stream_wait_empty=False,
        web_enabled=False,
        datadir=datadir,
        topic_partitions=partitions,
    )
    inbound = app.topic(
        source, key_type=bytes, key_serializer="raw", value_serializer=ConfluentAvro(registry), partitions=partitions
    )
    outbound = app.topic(
        sink,
        key_type=bytes,
        key_serializer="raw",
        value_serializer=ConfluentAvro(registry, f"{sink}-value"),
        partitions=partitions,
    )
    per_minute = app.Table("actions-per-minute", default=int, partitions=partitions).tumbling(60, expires=3600)

    @app.agent(inbound)
    async def velocity(stream: Any) -> None:
        async for event in stream.events():
            user = event.value["user_id"]
            per_minute[user] += 1
            # .current(): the window of this event's timestamp (the record's, as Quix and ours use)
            count = per_minute[user].current()
            start = int(event.message.timestamp * 1000) // 60_000 * 60_000
            await outbound.send(key=event.key, value={"user_id": user, "window_start_ms": start, "count": count})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--datadir", required=True)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    app = build_app(args.broker, args.registry, args.app_id, args.source, args.sink, args.datadir, args.partitions)
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
