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
from streams.settings import Settings

__all__ = [
    "AdminError",
    "Catalog",
    "CatalogError",
    "ConfigError",
    "LocalStackError",
    "PublishError",
    "SchemaError",
    "Settings",
    "StreamsError",
    "TopicSpec",
    "load_catalog",
]
