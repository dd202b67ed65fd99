"""streams: a Kafka-native event streaming platform (topics as code, Avro events, agents, bridge, replay).

The public API lives here; import from `streams`, not from its modules.
"""

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
