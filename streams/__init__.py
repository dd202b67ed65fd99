"""streams: a Kafka-native event streaming platform (topics as code, Avro events, agents, bridge, replay).

The public API lives here; import from `streams`, not from its modules. Names load on first use, so
`streams --help` does not pay for the catalog, the publisher and their libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.catalog import Catalog, TopicSpec, load_catalog
    from streams.errors import (
        AdminError,
        CatalogError,
        ConfigError,
        LocalStackError,
        PublishError,
        SchemaError,
        StreamsError,
    )
    from streams.publish import AsyncPublisher, Publisher
    from streams.settings import Settings

_HOMES = {
    "AdminError": "streams.errors",
    "AsyncPublisher": "streams.publish",
    "Catalog": "streams.catalog",
    "CatalogError": "streams.errors",
    "ConfigError": "streams.errors",
    "LocalStackError": "streams.errors",
    "PublishError": "streams.errors",
    "Publisher": "streams.publish",
    "SchemaError": "streams.errors",
    "Settings": "streams.settings",
    "StreamsError": "streams.errors",
    "TopicSpec": "streams.catalog",
    "load_catalog": "streams.catalog",
}
__all__ = [
    "AdminError",
    "AsyncPublisher",
    "Catalog",
    "CatalogError",
    "ConfigError",
    "LocalStackError",
    "PublishError",
    "Publisher",
    "SchemaError",
    "Settings",
    "StreamsError",
    "TopicSpec",
    "load_catalog",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'streams' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value
