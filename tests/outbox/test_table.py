"""The outbox table's pure parts: header packing, buckets, key locks, DSNs, DDL (no database needed)."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.errors import ConfigError
from streams.outbox.table import (
    BUCKETS,
    KEY_SLOTS,
    Dialect,
    bucket_of,
    family_of_connection,
    family_of_dsn,
    key_lock_id,
    pack_headers,
    redact,
    unpack_headers,
)


@given(st.lists(st.tuples(st.text(min_size=1, max_size=20), st.binary(max_size=64)), max_size=12))
def test_any_headers_round_trip(headers: list[tuple[str, bytes]]) -> None:
    assert unpack_headers(pack_headers(headers)) == headers


def test_one_key_always_lands_in_one_bucket_and_keys_spread() -> None:
    assert bucket_of("invoice.created", b"acme", "id-1") == bucket_of("invoice.created", b"acme", "id-2")
    buckets = {bucket_of("invoice.created", f"tenant-{i}".encode(), "x") for i in range(2000)}
    assert len(buckets) == BUCKETS
    keyless = {bucket_of("invoice.created", None, f"id-{i}") for i in range(2000)}
    assert len(keyless) == BUCKETS


def test_key_lock_ids_are_signed_64_bit_for_postgres_and_slots_for_mariadb() -> None:
    lock = key_lock_id("postgresql", "t", b"acme")
    assert -(2**63) <= lock < 2**63
    assert lock == key_lock_id("postgresql", "t", b"acme") != key_lock_id("postgresql", "u", b"acme")
    assert 0 <= key_lock_id("mysql", "t", b"acme") < KEY_SLOTS


@pytest.mark.parametrize(
    ("dsn", "family"),
    [
        ("sqlite:///erp.db", "sqlite"),
        ("sqlite+pysqlite:////abs/erp.db", "sqlite"),
        ("postgresql://erp@db:5432/erp", "postgresql"),
        ("postgresql+psycopg://erp@db/erp", "postgresql"),
        ("postgres://erp@db/erp", "postgresql"),
        ("mysql://erp:pw@db/erp", "mysql"),
        ("mariadb://erp@db/erp", "mysql"),
        ("mysql+pymysql://erp@db/erp", "mysql"),
    ],
)
def test_dsn_families(dsn: str, family: str) -> None:
    assert family_of_dsn(dsn) == family


def test_a_dsn_of_another_database_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"expected sqlite:///path\.db, postgresql://"):
        family_of_dsn("oracle://scott:tiger@db/orcl")


def test_passwords_never_show() -> None:
    assert redact("mysql://erp:s3cret@db:3306/erp") == "mysql://erp:***@db:3306/erp"
    assert redact("postgresql://erp@db/erp") == "postgresql://erp@db/erp"


def test_table_names_must_be_identifiers() -> None:
    with pytest.raises(ConfigError, match="plain SQL identifier"):
        Dialect("sqlite", "outbox; DROP TABLE invoices")


def test_the_sqlite_ddl_runs_twice_and_the_driver_is_recognised() -> None:
    conn = sqlite3.connect(":memory:")
    try:
        for _ in range(2):
            for statement in Dialect("sqlite").ddl():
                conn.execute(statement)
        assert conn.execute("SELECT COUNT(*) FROM streams_outbox_buckets").fetchone() == (1,)
        assert family_of_connection(conn) == ("sqlite", "?")
    finally:
        conn.close()
    with pytest.raises(ConfigError, match="cannot tell the database"):
        family_of_connection(object())


@pytest.mark.parametrize("family", ["postgresql", "mysql"])
def test_server_ddl_creates_buckets_and_key_slots(family: str) -> None:
    statements = "\n".join(Dialect(family, "erp_outbox").ddl())  # type: ignore[arg-type]
    assert "CREATE TABLE IF NOT EXISTS erp_outbox (" in statements
    assert "erp_outbox_buckets" in statements
    assert ("erp_outbox_keys" in statements) == (family == "mysql")
