"""The peer of bench/agents: a plain faust-streaming agent doing JSON passthrough, nothing of ours.

Decodes each JSON value with faust's own `json` codec, re-encodes it and sends it on, keyed as it came.
Its settings are the ones our worker used when it ran on faust (acks=all, commits every 1,000 records or
1 s, memory store). Run by bench/agents.py as
`python bench/faust_passthrough.py --broker HOST:PORT --app-id ID --source IN --sink OUT --datadir DIR`.
"""

from __future__ import annotations

import argparse
from typing import Any

import faust


def build_app(broker: str, app_id: str, source: str, sink: str, datadir: str, partitions: int) -> faust.App:
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
    inbound = app.topic(source, key_type=bytes, key_serializer="raw", value_serializer="json", partitions=partitions)
    outbound = app.topic(sink, key_type=bytes, key_serializer="raw", value_serializer="json", partitions=partitions)

    @app.agent(inbound)
    async def passthrough(stream: Any) -> None:
        async for key, value in stream.items():
            await outbound.send(key=key, value=value)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--datadir", required=True)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    app = build_app(args.broker, args.app_id, args.source, args.sink, args.datadir, args.partitions)
    faust.Worker(app, loglevel="info", quiet=True).execute_from_commandline()  # as `streams worker` runs faust


if __name__ == "__main__":
    main()
