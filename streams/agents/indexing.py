"""The indexing agent: workflow.completed, invoice.cleared and compliance.violation into SQLite FTS5.

Written with the public App API like any user's agent. Documents are keyed by the event id, so a
redelivered event replaces itself instead of adding a copy.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from streams.agents.zatca import canonical_json
from streams.runtime.app import App
from streams.runtime.outcomes import DeadLetter

if TYPE_CHECKING:
    from collections.abc import Iterable

    from streams.catalog import Catalog
    from streams.settings import Settings

log = structlog.get_logger("streams.agents.indexing")

AGENT = "indexing"
TOPICS = ("workflow.completed", "invoice.cleared", "compliance.violation")
Document = tuple[str, str, str | None, str, str, dict[str, Any], int, int]
SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY, topic TEXT NOT NULL, tenant TEXT, title TEXT NOT NULL, body TEXT NOT NULL,
    fields TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS documents_fts USING fts5(
    title, body, content='documents', content_rowid='rowid'
);
CREATE TRIGGER IF NOT EXISTS documents_ai AFTER INSERT ON documents BEGIN
    INSERT INTO documents_fts(rowid, title, body) VALUES (new.rowid, new.title, new.body);
END;
CREATE TRIGGER IF NOT EXISTS documents_ad AFTER DELETE ON documents BEGIN
    INSERT INTO documents_fts(documents_fts, rowid, title, body) VALUES ('delete', old.rowid, old.title, old.body);
END;
"""


class SearchIndex:
    """A SQLite FTS5 index of event documents; safe to reopen, idempotent upserts."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def upsert(self, documents: Iterable[Document]) -> int:
        """Insert or replace (doc_id, topic, tenant, title, body, fields, partition, offset) rows; commits."""
        # The last version of a document wins, also within a batch (a redelivery can repeat an event id).
        latest = {d[0]: d for d in documents}
        rows = [(d[0], d[1], d[2], d[3], d[4], canonical_json(d[5]), d[6], d[7]) for d in latest.values()]
        with self.db:
            self.db.executemany("DELETE FROM documents WHERE doc_id = ?", [(row[0],) for row in rows])
            self.db.executemany("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def search(
        self, query: str, *, tenant: str | None = None, limit: int = 20, fts: bool = False
    ) -> list[dict[str, Any]]:
        """Best matches first (FTS5 bm25). `query` is plain words, each matched as written (a rule code such
        as KSA-ICV too); `fts=True` takes FTS5's own syntax (prefix*, OR, NEAR, column filters)."""
        sql = (
            "SELECT d.doc_id, d.topic, d.tenant, d.title, d.fields FROM documents_fts f "
            "JOIN documents d ON d.rowid = f.rowid WHERE documents_fts MATCH ?"
        )
        match = query if fts else " ".join('"' + word.replace('"', '""') + '"' for word in query.split())
        if not match:
            raise ValueError("the search query is empty; give one or more words")
        params: list[Any] = [match]
        if tenant is not None:
            sql += " AND d.tenant = ?"
            params.append(tenant)
        sql += " ORDER BY bm25(documents_fts) LIMIT ?"
        params.append(limit)
        try:
            rows = self.db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise ValueError(
                f"search query {query!r} is not valid FTS5 syntax ({exc}); "
                "drop --fts to search for the words as written"
            ) from exc
        return [
            {"doc_id": r[0], "topic": r[1], "tenant": r[2], "title": r[3], "fields": json.loads(r[4])} for r in rows
        ]

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM documents").fetchone()[0])

    def close(self) -> None:
        self.db.close()


def document(topic: str, record: dict[str, Any]) -> tuple[str, str, str]:
    """(tenant, title, body) of an event: the text a person would search for."""
    tenant = str(record.get("tenant_id", ""))
    if topic.startswith("workflow"):
        title = f"workflow {record['workflow_type']} {record['status']}"
        body = f"{record['summary']} {record['workflow_id']} {record.get('actor') or ''}"
    elif topic.startswith("invoice"):
        title = f"invoice {record['invoice_number']} cleared"
        body = (
            f"{record['invoice_id']} {record['seller_vat_number']} {record['tax_inclusive_total']} {record['currency']}"
        )
    else:
        title = f"violation {record['rule_code']} on invoice {record['invoice_id']}"
        body = f"{record['message']} {record.get('field_path') or ''} {record['rule_code']}"
    return tenant, title, body


def index_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "search" / "index.sqlite"


def indexing_app(app_id: str, index: SearchIndex, catalog: Catalog) -> App:
    """The indexing agent, written with the public API: a plain handler per event, and the documents written
    to SQLite in one transaction just before each Kafka commit (upserts by event id: a redelivery replaces)."""
    app = App(app_id)
    pending: list[Document] = []

    @app.agent([name for name in TOPICS if name in catalog.names()], name=AGENT, typed=False)
    def index_event(record: dict[str, Any]) -> None:
        source = app.current_event()
        try:
            tenant, title, body = document(source.topic, record)
        except KeyError as exc:  # not a shape this agent knows how to index: retrying would not help
            raise DeadLetter(f"cannot index {source.topic}: missing field {exc}") from exc
        pending.append((source.event_id, source.topic, tenant, title, body, record, source.partition, source.offset))

    @app.before_commit
    def write_documents() -> None:
        if pending:
            index.upsert(pending)
            pending.clear()

    return app
