"""The Quix Streams peer of bench/user_agents.py: a 60 s tumbling count per user, the current count per event.

Runs in its own virtualenv (quixstreams pins confluent-kafka below 2.13; bench/user_agents.py creates it),
so it imports nothing of ours. Avro in and out through Quix's schema-registry serializers pointed at our
registry (Confluent wire format), RocksDB state with its changelog, exactly-once processing. Run as
`python bench/quix_velocity.py --broker HOST:PORT --registry URL --group ID --source IN --sink OUT --state-dir DIR`.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from quixstreams import Application
from quixstreams.models.serializers.avro import AvroDeserializer, AvroSerializer
from quixstreams.models.serializers.schema_registry import (
    SchemaRegistryClientConfig,
    SchemaRegistrySerializationConfig,
)


def build_app(args: argparse.Namespace) -> Application:
    extra: dict[str, Any] = {}
    if args.commit_interval is not None:
        extra["commit_interval"] = args.commit_interval
    app = Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee=args.guarantee,
        state_dir=args.state_dir,
        loglevel="WARNING",
        auto_create_topics=True,  # the changelog topic; the source and sink exist already
        **extra,
    )
    registry = SchemaRegistryClientConfig(url=args.registry)
    schema = json.loads(Path(args.schema).read_text())
    source = app.topic(
        args.source,
        key_deserializer="bytes",
        value_deserializer=AvroDeserializer(schema_registry_client_config=registry),
    )
    sink = app.topic(
        args.sink,
        key_serializer="bytes",
        value_serializer=AvroSerializer(
            schema,
            schema_registry_client_config=registry,
            # the bench registered the sink's schema already (bench/catalog/topics.yaml)
            schema_registry_serialization_config=SchemaRegistrySerializationConfig(auto_register_schemas=False),
        ),
    )

    sdf = app.dataframe(source)
    # Windows are keyed by the message key, which is user_id (the catalog keys user.action by it).
    sdf = sdf.tumbling_window(timedelta(seconds=60)).count().current()
    sdf = sdf.apply(
        lambda window, key, timestamp, headers: {
            "user_id": key.decode(),
            "window_start_ms": window["start"],
            "count": window["value"],
        },
        metadata=True,
    )
    sdf.to_topic(sink)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--schema", required=True, help="The sink's Avro schema (bench/catalog/user.velocity.avsc).")
    parser.add_argument("--guarantee", default="exactly-once", choices=["exactly-once", "at-least-once"])
    parser.add_argument("--commit-interval", type=float, default=None, help="Seconds; unset: Quix's default (5).")
    args = parser.parse_args()
    build_app(args).run()


if __name__ == "__main__":
    main()
