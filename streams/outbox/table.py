"""The outbox table in SQLite, PostgreSQL and MariaDB/MySQL: its DDL, the SQL each side runs, DSNs.

One `Dialect` per database family; the writer (`outbox.add`) and the relay both take their SQL from here.
"""

from __future__ import annotations

import hashlib
import re
import struct
import sys
import zlib
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import orjson

from streams.errors import ConfigError

DEFAULT_TABLE = "streams_outbox"
# Rows are spread over this many buckets by key; a relay owns a bucket while it publishes it, so a key
# (always in one bucket) is published by one relay at a time, in id order (decision 0020).
BUCKETS = 64
# MariaDB has no transaction-scoped advisory lock; adders of one key serialize on one of these rows.
KEY_SLOTS = 4096
NOTIFY_CHANNEL = "streams_outbox"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,50}$")

Family = Literal["sqlite", "postgresql", "mysql"]
Headers = list[tuple[str, bytes]]
# A row the relay reads: (id, topic, key, value, packed headers, event id, created_us).
Row = tuple[int, str, bytes | None, bytes, bytes, str, int]


@dataclass(frozen=True)
class Dialect:
    """The SQL of one database family for an outbox table named `table`."""

    family: Family
    table: str = DEFAULT_TABLE

    def __post_init__(self) -> None:
        if not _NAME.match(self.table):
            raise ConfigError(f"outbox table name {self.table!r} must be a plain SQL identifier (letters, digits, _)")

    @property
    def buckets_table(self) -> str:
        return f"{self.table}_buckets"

    @property
    def keys_table(self) -> str:
        return f"{self.table}_keys"

    def ddl(self) -> list[str]:
        """Statements that create the outbox (idempotent: each can run again on an existing table)."""
        t, b = self.table, self.buckets_table
        if self.family == "sqlite":
            return [
                (
                    f"CREATE TABLE IF NOT EXISTS {t} (id INTEGER PRIMARY KEY, bucket INTEGER NOT NULL, "
                    "topic TEXT NOT NULL, msg_key BLOB, value BLOB NOT NULL, headers BLOB NOT NULL, "
                    "event_id TEXT NOT NULL, created_us INTEGER NOT NULL, parked_reason TEXT, parked_us INTEGER)"
                ),
                f"CREATE INDEX IF NOT EXISTS {t}_pending ON {t} (id) WHERE parked_us IS NULL",
                # One lease row: SQLite has no row locks, so one relay at a time publishes (decision 0020).
                f"CREATE TABLE IF NOT EXISTS {b} (bucket INTEGER PRIMARY KEY, owner TEXT, expires_us INTEGER)",
                f"INSERT OR IGNORE INTO {b} (bucket, owner, expires_us) VALUES (0, NULL, 0)",
            ]
        if self.family == "postgresql":
            return [
                (
                    f"CREATE TABLE IF NOT EXISTS {t} (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                    "bucket SMALLINT NOT NULL, topic TEXT NOT NULL, msg_key BYTEA, value BYTEA NOT NULL, "
                    "headers BYTEA NOT NULL, event_id TEXT NOT NULL, created_us BIGINT NOT NULL, "
                    "parked_reason TEXT, parked_us BIGINT)"
                ),
                f"CREATE INDEX IF NOT EXISTS {t}_pending ON {t} (bucket, id) WHERE parked_us IS NULL",
                f"CREATE TABLE IF NOT EXISTS {b} (bucket SMALLINT PRIMARY KEY)",
                f"INSERT INTO {b} (bucket) SELECT generate_series(0, {BUCKETS - 1}) ON CONFLICT DO NOTHING",
            ]
        k = self.keys_table
        return [
            (
                f"CREATE TABLE IF NOT EXISTS {t} (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, "
                "bucket SMALLINT NOT NULL, topic VARCHAR(249) NOT NULL, msg_key BLOB, value LONGBLOB NOT NULL, "
                "headers BLOB NOT NULL, event_id VARCHAR(64) NOT NULL, created_us BIGINT NOT NULL, "
                f"parked_reason TEXT, parked_us BIGINT, KEY {t}_pending (bucket, id)) ENGINE=InnoDB"
            ),
            f"CREATE TABLE IF NOT EXISTS {b} (bucket SMALLINT NOT NULL PRIMARY KEY) ENGINE=InnoDB",
            f"INSERT IGNORE INTO {b} (bucket) VALUES " + ", ".join(f"({i})" for i in range(BUCKETS)),
            f"CREATE TABLE IF NOT EXISTS {k} (slot SMALLINT NOT NULL PRIMARY KEY, n BIGINT NOT NULL)",
            f"INSERT IGNORE INTO {k} (slot, n) VALUES " + ", ".join(f"({i}, 0)" for i in range(KEY_SLOTS)),
        ]

    # ---- the writer's side ---------------------------------------------------------------------------

    def insert_sql(self, mark: str) -> str:
        marks = ", ".join([mark] * 7)
        return (
            f"INSERT INTO {self.table} (bucket, topic, msg_key, value, headers, event_id, created_us) VALUES ({marks})"
        )

    def key_lock_sql(self, mark: str) -> str | None:
        """A statement holding a lock on one key until the adding transaction ends (None: not needed).

        Two transactions adding events of one key then commit in the order their rows' ids were taken,
        so id order is commit order per key. SQLite needs none: it has one writer at a time.
        """
        if self.family == "postgresql":
            return f"SELECT pg_advisory_xact_lock({mark}), pg_notify('{NOTIFY_CHANNEL}', '')"
        if self.family == "mysql":
            return f"UPDATE {self.keys_table} SET n = n + 1 WHERE slot = {mark}"
        return None

    def notify_sql(self) -> str | None:
        return f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')" if self.family == "postgresql" else None

    # ---- the relay's side ----------------------------------------------------------------------------

    def lock_buckets_sql(self, *, wrapped: bool, limit: int) -> str:
        """Lock up to `limit` free buckets from an offset (parameter) up, or `wrapped`: below it.

        In key order with a plain LIMIT, so InnoDB and PostgreSQL lock only the rows they return."""
        where = "bucket < %s" if wrapped else "bucket >= %s"
        return (
            f"SELECT bucket FROM {self.buckets_table} WHERE {where} ORDER BY bucket LIMIT {int(limit)} "
            "FOR UPDATE SKIP LOCKED"
        )

    def pending_sql(self, buckets: list[int] | None, limit: int) -> str:
        where = "parked_us IS NULL"
        if buckets is not None:
            where += f" AND bucket IN ({', '.join(str(int(b)) for b in buckets)})"
        return (
            f"SELECT id, topic, msg_key, value, headers, event_id, created_us FROM {self.table} "
            f"WHERE {where} ORDER BY id LIMIT {int(limit)}"
        )

    def delete_sql(self, ids: list[int]) -> tuple[str, tuple[Any, ...]]:
        """The statement and parameters deleting rows `ids` (PostgreSQL: one array parameter, planned once)."""
        if self.family == "postgresql":
            return f"DELETE FROM {self.table} WHERE id = ANY(%s)", (ids,)
        return f"DELETE FROM {self.table} WHERE id IN ({', '.join(str(int(i)) for i in ids)})", ()

    def park_sql(self, mark: str) -> str:
        return f"UPDATE {self.table} SET parked_reason = {mark}, parked_us = {mark} WHERE id = {mark}"

    def stats_sql(self) -> str:
        """(pending rows, oldest pending created_us, parked rows) in one scan."""
        return (
            "SELECT SUM(CASE WHEN parked_us IS NULL THEN 1 ELSE 0 END), "
            "MIN(CASE WHEN parked_us IS NULL THEN created_us END), "
            f"SUM(CASE WHEN parked_us IS NULL THEN 0 ELSE 1 END) FROM {self.table}"
        )

    def rows_sql(self, *, parked: bool, limit: int) -> str:
        return (
            f"SELECT id, topic, msg_key, event_id, created_us, parked_reason FROM {self.table} "
            f"WHERE parked_us IS {'NOT ' if parked else ''}NULL ORDER BY id LIMIT {int(limit)}"
        )

    def lease_sql(self, mark: str) -> str:
        """SQLite: take or renew the relay lease (owner, expiry, owner, now): one row changed means ours."""
        return (
            f"UPDATE {self.buckets_table} SET owner = {mark}, expires_us = {mark} "
            f"WHERE bucket = 0 AND (owner = {mark} OR owner IS NULL OR expires_us < {mark})"
        )

    def release_sql(self, mark: str) -> str:
        return f"UPDATE {self.buckets_table} SET owner = NULL, expires_us = 0 WHERE owner = {mark}"


def bucket_of(topic: str, key: bytes | None, event_id: str) -> int:
    """The bucket of a row: by topic and key, so one key stays in one bucket; keyless rows spread by id."""
    return zlib.crc32(key if key is not None else event_id.encode(), zlib.crc32(topic.encode())) % BUCKETS


def key_lock_id(family: Family, topic: str, key: bytes) -> int:
    """The PostgreSQL advisory lock id (signed 64-bit) or the MariaDB key slot of (topic, key)."""
    digest = hashlib.blake2b(topic.encode() + b"\0" + key, digest_size=8).digest()
    number: int = struct.unpack(">q", digest)[0]
    return number if family == "postgresql" else number % KEY_SLOTS


def pack_headers(headers: Headers) -> bytes:
    """CloudEvents headers as bytes for a BLOB column: JSON pairs, each value's bytes as latin-1 code points
    (any byte string round-trips, and orjson reads a row's eight headers in about a microsecond)."""
    return orjson.dumps([[name, value.decode("latin-1")] for name, value in headers])


def unpack_headers(packed: bytes) -> Headers:
    return [(name, value.encode("latin-1")) for name, value in orjson.loads(packed)]


# ---- connections -----------------------------------------------------------------------------------------

_FAMILIES: dict[str, Family] = {
    "sqlite": "sqlite",
    "sqlite3": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "psycopg": "postgresql",
    "psycopg2": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "pymysql": "mysql",
    "mysqldb": "mysql",
}


def family_of_dsn(dsn: str) -> Family:
    scheme = dsn.split("://", 1)[0].split("+", 1)[0].lower() if "://" in dsn else ""
    family = _FAMILIES.get(scheme)
    if family is None:
        raise ConfigError(
            f"outbox DSN {redact(dsn)!r}: expected sqlite:///path.db, postgresql://user@host:port/db "
            "or mysql://user:password@host:port/db (mariadb:// too)"
        )
    return family


def connect(dsn: str) -> Any:
    """A DB-API connection for `dsn` (sqlite3, psycopg or PyMySQL), in manual-commit mode."""
    family = family_of_dsn(dsn)
    if family == "sqlite":
        import sqlite3  # noqa: PLC0415 - only the driver the DSN names is imported

        path = dsn.split("://", 1)[1]
        path = path.removeprefix("/")  # sqlite:///rel.db, sqlite:////abs.db
        connection = sqlite3.connect(path or ":memory:", timeout=30.0, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")  # the relay reads while the service writes
        connection.execute("PRAGMA busy_timeout=30000")
        return connection
    parts = urlsplit(dsn)
    if family == "postgresql":
        import psycopg  # noqa: PLC0415

        url = dsn.split("://", 1)[1]
        return psycopg.connect(f"postgresql://{url}", connect_timeout=10)
    import pymysql  # noqa: PLC0415

    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=(parts.path or "/").lstrip("/") or None,
        connect_timeout=10,
        autocommit=False,
        read_timeout=60,
        write_timeout=60,
    )


def family_of_connection(connection: Any) -> tuple[Family, str]:
    """(family, parameter mark) of a DB-API connection, from the driver module it comes from."""
    root = type(connection).__module__.split(".", 1)[0]
    family = _FAMILIES.get(root.lower())
    if family is None:
        raise ConfigError(
            f"outbox.add: cannot tell the database of a {type(connection).__module__}.{type(connection).__name__};"
            " pass a sqlite3, psycopg, psycopg2, PyMySQL, mysqlclient or mariadb connection, a SQLAlchemy"
            " Connection or Session, or django.db.connection"
        )
    paramstyle = getattr(sys.modules.get(root), "paramstyle", "qmark")
    return family, "?" if paramstyle == "qmark" else "%s"


def driver_errors(family: Family) -> tuple[type[Exception], ...]:
    """The DB-API `Error` class of the driver for `family`: what a database outage raises."""
    if family == "sqlite":
        import sqlite3  # noqa: PLC0415

        return (sqlite3.Error,)
    if family == "postgresql":
        import psycopg  # noqa: PLC0415

        return (psycopg.Error,)
    import pymysql  # noqa: PLC0415

    return (pymysql.err.Error,)


def redact(dsn: str) -> str:
    """`dsn` with its password replaced by ***, for messages and logs."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)
