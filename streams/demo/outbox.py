"""The demo's sample ERP step: invoices written to a SQLite ERP database with their events in its outbox.

A relay in this process then publishes the committed events; `streams demo` calls `erp_through_outbox`.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from streams.outbox.commands import create_table
from streams.outbox.relay import Relay, RelayOptions
from streams.outbox.table import DEFAULT_TABLE, connect
from streams.outbox.writer import Outbox

if TYPE_CHECKING:
    from streams.catalog import Catalog
    from streams.settings import Settings

__all__ = ["erp_through_outbox"]

TOPIC = "invoice.created"


def erp_through_outbox(
    settings: Settings, catalog: Catalog, invoices: list[dict[str, Any]], *, topic: str = TOPIC, timeout: float = 120.0
) -> str:
    """Commit each invoice row with its event in one transaction (plus one the ERP rolls back), relay the
    outbox to Kafka, and say what happened in one line."""
    path = settings.data_dir / "erp" / "erp.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    dsn = f"sqlite:///{path}"
    create_table(dsn)
    conn = connect(dsn)
    with Outbox(settings, catalog=catalog, source="sample-erp") as outbox:
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS invoices (invoice_id TEXT PRIMARY KEY, tenant_id TEXT, total TEXT)"
            )
            for event in invoices:
                conn.execute("BEGIN")
                conn.execute(
                    "INSERT OR REPLACE INTO invoices VALUES (?, ?, ?)",
                    (event["invoice_id"], event["tenant_id"], str(event["payable_amount"])),
                )
                outbox.add(conn, topic, event)
                conn.execute("COMMIT")
            # An invoice whose transaction fails after the event was added: neither row survives.
            conn.execute("BEGIN")
            conn.execute("INSERT INTO invoices VALUES ('rolled-back', 'demo', '0')")
            outbox.add(conn, topic, {**invoices[0], "invoice_id": "00000000-0000-4000-8000-000000000000"})
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    relay = Relay(RelayOptions(dsn=dsn, name="demo-relay"), settings)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), name="outbox-relay", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while relay.relayed + relay.parked < len(invoices) and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    stop.set()
    thread.join(30)
    total = relay.metrics.registry.get_sample_value("streams_outbox_commit_to_kafka_seconds_sum") or 0.0
    mean_ms = total / relay.relayed * 1000 if relay.relayed else 0.0
    return (
        f"sample ERP: {len(invoices)} invoices committed to {path} with their events in outbox table "
        f"{DEFAULT_TABLE}, 1 transaction rolled back; the relay published {relay.relayed} "
        f"(mean commit-to-Kafka {mean_ms:.0f} ms), parked {relay.parked}"
    )
