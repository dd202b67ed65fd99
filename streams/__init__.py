"""streams: a Kafka-native event streaming platform (topics as code, Avro events, agents, bridge, replay).

The public API lives here; import from `streams`, not from its modules. Names load on first use, so
`import streams` (and the CLI's start) stays light.
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
    from streams.runtime.app import App
    from streams.runtime.outcomes import DeadLetter, Retry
    from streams.runtime.runner import Stream
    from streams.settings import Settings

_HOMES = {
    "AdminError": "streams.errors",
    "App": "streams.runtime.app",
    "AsyncPublisher": "streams.publish",
    "Catalog": "streams.catalog",
    "CatalogError": "streams.errors",
    "ConfigError": "streams.errors",
    "DeadLetter": "streams.runtime.outcomes",
    "LocalStackError": "streams.errors",
    "PublishError": "streams.errors",
    "Publisher": "streams.publish",
    "Retry": "streams.runtime.outcomes",
    "SchemaError": "streams.errors",
    "Settings": "streams.settings",
    "Stream": "streams.runtime.runner",
    "StreamsError": "streams.errors",
    "TopicSpec": "streams.catalog",
    "load_catalog": "streams.catalog",
}

__all__ = [
    "AdminError",
    "App",
    "AsyncPublisher",
    "Catalog",
    "CatalogError",
    "ConfigError",
    "DeadLetter",
    "LocalStackError",
    "PublishError",
    "Publisher",
    "Retry",
    "SchemaError",
    "Settings",
    "Stream",
    "StreamsError",
    "TopicSpec",
    "load_catalog",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'streams' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
