"""The transactional outbox: `add` writes an event in the service's own transaction; the relay publishes it.

`from streams import outbox; outbox.add(connection, InvoiceCreated(...))`; run `streams outbox relay`.
"""

from __future__ import annotations

from streams.outbox.writer import Outbox, add, configure, dbapi_connection

__all__ = ["Outbox", "add", "configure", "dbapi_connection"]
