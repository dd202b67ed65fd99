"""`outbox.add`: encode an event exactly as `Publisher` does and insert it in the service's own transaction.

Takes a DB-API connection (sqlite3, psycopg, PyMySQL, ...), a SQLAlchemy Connection or Session, or
`django.db.connection`; the row commits or rolls back with the service's own writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

from streams.catalog import load_catalog
from streams.errors import ConfigError
from streams.outbox.table import (
    DEFAULT_TABLE,
    Dialect,
    bucket_of,
    family_of_connection,
    key_lock_id,
    pack_headers,
)
from streams.publish import EventEncoder, _topic_and_payload
from streams.schemas.registry_client import RegistryClient
from streams.settings import Settings

if TYPE_CHECKING:
    from pydantic import BaseModel

    from streams.catalog import Catalog

__all__ = ["Outbox", "add", "configure", "dbapi_connection"]


class Outbox:
    """Writes events into the outbox table of the connection it is given; one per service is enough.

    Example:
        with engine.begin() as connection:
            connection.execute(invoices.insert().values(...))
            outbox.add(connection, InvoiceCreated(...))   # commits or rolls back with the invoice
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        catalog: Catalog | None = None,
        registry: RegistryClient | None = None,
        source: str = "streams",
        table: str = DEFAULT_TABLE,
    ) -> None:
        settings = settings or Settings()
        catalog = catalog or load_catalog(settings.catalog_path, settings.profile)
        registry = registry or RegistryClient(settings.registry_url())
        # The publisher's encoder: the same checks, wire format, key and CloudEvents headers (decision 0020).
        self.encoder = EventEncoder(catalog, registry, source=source)
        self.table = table
        self._dialects: dict[tuple[str, str], tuple[Dialect, str]] = {}

    def add(
        self,
        connection: Any,
        topic: str | BaseModel,
        payload: Mapping[str, Any] | BaseModel | None = None,
        **options: Any,
    ) -> str:
        """Validate, encode and insert one event in `connection`'s current transaction; its event id.

        A bad event raises PublishError before anything is written. `add(connection, model)` takes the
        topic from the model's TOPIC. Options as `Publisher.publish`: key, tenant, event_type, event_id,
        time_, traceparent, extra_headers.
        """
        name, data = _topic_and_payload(topic, payload)
        key, value, headers, event_id = self.encoder.build(name, data, **options)
        raw = dbapi_connection(connection)
        dialect, mark = self._dialect(raw)
        cursor = raw.cursor()
        try:
            lock = dialect.key_lock_sql(mark) if key is not None else dialect.notify_sql()
            if lock is not None:
                cursor.execute(lock, (key_lock_id(dialect.family, name, key),) if key is not None else ())
            cursor.execute(
                dialect.insert_sql(mark),
                (
                    bucket_of(name, key, event_id),
                    name,
                    key,
                    value,
                    pack_headers(headers),
                    event_id,
                    time.time_ns() // 1000,
                ),
            )
        finally:
            cursor.close()
        return event_id

    def close(self) -> None:
        """Close the registry client (its connection pool)."""
        self.encoder.registry.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _dialect(self, raw: Any) -> tuple[Dialect, str]:
        kind = type(raw)
        found = self._dialects.get((kind.__module__, kind.__qualname__))
        if found is None:
            family, mark = family_of_connection(raw)
            found = self._dialects[(kind.__module__, kind.__qualname__)] = (Dialect(family, self.table), mark)
        return found


def dbapi_connection(connection: Any) -> Any:
    """The DB-API connection behind a SQLAlchemy Session or Connection or a Django connection (else itself).

    The outbox row goes through it, so it joins whatever transaction that object has open.
    """
    if hasattr(connection, "get_bind") and callable(getattr(connection, "connection", None)):
        connection = connection.connection()  # an ORM Session: the Connection of its transaction
    if hasattr(connection, "exec_driver_sql"):  # a SQLAlchemy Core Connection
        return connection.connection.dbapi_connection
    if hasattr(connection, "ensure_connection") and hasattr(connection, "vendor"):  # django.db.connection
        connection.ensure_connection()
        return connection.connection
    if not callable(getattr(connection, "cursor", None)):
        raise ConfigError(f"outbox.add needs a database connection or session, got a {type(connection).__name__}")
    return connection


_default: Outbox | None = None
_default_lock = threading.Lock()


def configure(settings: Settings | None = None, **options: Any) -> Outbox:
    """Set up the outbox `add` uses (settings, catalog, registry, source, table); returns it."""
    global _default  # noqa: PLW0603 - the module-level convenience, like logging.basicConfig
    with _default_lock:
        _default = Outbox(settings, **options)
        return _default


def add(
    connection: Any, topic: str | BaseModel, payload: Mapping[str, Any] | BaseModel | None = None, **options: Any
) -> str:
    """`Outbox.add` on the outbox `configure` set up (from the STREAMS_* settings when it was not called)."""
    outbox = _default
    if outbox is None:
        with _default_lock:
            outbox = _default or Outbox()
        globals()["_default"] = outbox
    return outbox.add(connection, topic, payload, **options)
