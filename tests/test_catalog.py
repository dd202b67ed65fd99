"""Tests for streams.catalog: the reference catalog, then one test per kind of mistake.

Each mistake test asserts the exact file:line, the field, and the text of the message.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from streams.catalog import (
    CatalogLocationError,
    TopicSpec,
    lint_catalog,
    load_catalog,
    parse_duration_ms,
)
from streams.errors import CatalogError

REPO = Path(__file__).resolve().parent.parent
DAY = 86_400_000

HEAD = """\
version: 1
defaults:
  partitions: 3
  replication_factor: 1
topics:
"""  # topics start on line 6

INVOICE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "InvoiceCreated",
    "namespace": "t",
    "fields": [
        {"name": "invoice_id", "type": "string"},
        {
            "name": "buyer",
            "type": {
                "type": "record",
                "name": "Party",
                "fields": [
                    {"name": "name", "type": "string"},
                    {"name": "vat", "type": ["null", "string"], "default": None},
                ],
            },
        },
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}
SCHEMAS = {"inv.avsc": INVOICE_SCHEMA}
PROD_TOPICS = "profiles:\n  production:\n    topics:\n"


def write(tmp_path: Path, text: str, schemas: dict[str, Any] | None = None) -> Path:
    """Writes topics.yaml (dedented) and schemas/<name> files; returns the catalog path."""
    path = tmp_path / "topics.yaml"
    path.write_text(textwrap.dedent(text))
    for name, schema in (schemas or {}).items():
        file = tmp_path / "schemas" / name
        file.parent.mkdir(exist_ok=True)
        file.write_text(schema if isinstance(schema, str) else json.dumps(schema, indent=2))
    return path


def topic(body: str, name: str = "invoice.created") -> str:
    """HEAD plus one topic whose entry is on line 6 and whose first field is on line 7."""
    return HEAD + f"  {name}:\n" + textwrap.indent(textwrap.dedent(body), "    ")


def only_error(path: Path, profile: str = "local") -> CatalogLocationError:
    """The single problem lint finds; load_catalog must raise the same one."""
    errors = lint_catalog(path, profile)
    assert len(errors) == 1, [str(e) for e in errors]
    with pytest.raises(CatalogError) as raised:
        load_catalog(path, profile)
    assert str(raised.value) == str(errors[0])
    assert isinstance(errors[0], CatalogLocationError)
    assert "\n" not in str(errors[0])
    return errors[0]


def check(path: Path, line: int, field: str | None, *parts: str, profile: str = "local") -> None:
    """`path` has exactly one problem, at `line` in `field`, whose message contains every part."""
    error = only_error(path, profile)
    assert (error.path, error.line, error.field) == (path, line, field), str(error)
    prefix = f"{path}:{line}: " if line else f"{path}: "
    assert str(error).startswith(prefix), str(error)
    for part in parts:
        assert part in str(error), f"{part!r} not in {error}"


# --- the reference catalog -------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["local", "cluster", "production"])
def test_reference_catalog_loads(profile: str) -> None:
    catalog = load_catalog(REPO / "topics.yaml", profile)
    declared = {
        "invoice.created",
        "invoice.cleared",
        "workflow.completed",
        "user.action",
        "compliance.violation",
        "audit.trail",
    }
    assert declared <= set(catalog.names())
    assert list(catalog.names()) == sorted(catalog.names())
    for name in declared:
        spec = catalog.topic(name)
        assert spec.schema_file is not None
        assert spec.schema_file.is_file()
        assert spec.key_field
        assert spec.owner
        assert spec.line > 0
    for name in declared - {"audit.trail"}:
        assert catalog.topic(name).audit
        assert catalog.topic(f"{name}.dlq").dead_letter_of == name
    trail = catalog.topic("audit.trail")
    assert (trail.partitions, trail.retention_ms, trail.min_retention_ms) == (1, 3650 * DAY, 3650 * DAY)
    assert (trail.dlq, trail.audit) == (False, False)
    assert "audit.trail.dlq" not in catalog.names()
    assert catalog.topic("user.action").pii_fields
    assert lint_catalog(REPO / "topics.yaml", profile) == []


def test_reference_profiles_overlay_in_order() -> None:
    local = load_catalog(REPO / "topics.yaml", "local").topic("invoice.created")
    prod = load_catalog(REPO / "topics.yaml", "production").topic("invoice.created")
    assert (local.partitions, local.replication_factor, local.min_insync_replicas) == (6, 1, 1)
    assert (prod.partitions, prod.replication_factor, prod.min_insync_replicas) == (12, 3, 2)
    prod_dlq = load_catalog(REPO / "topics.yaml", "production").topic("invoice.created.dlq")
    assert prod_dlq.partitions == 12


def test_derived_dlq_topic(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        topic("""\
        owner: billing
        description: Invoices.
        partitions: 6
        retention: 7d
        dlq_retention: 30d
        key: invoice_id
        schema: schemas/inv.avsc
        audit: true
        legal_retention: 7d
        consumers: [validation-agent]
        pii_fields: [buyer.name]
        configs: {max.message.bytes: "2097152", segment.ms: 3600000}
        """),
        SCHEMAS,
    )
    catalog = load_catalog(path)
    assert catalog.names() == ("invoice.created", "invoice.created.dlq")
    source, dlq = catalog.topic("invoice.created"), catalog.topic("invoice.created.dlq")
    assert source.schema_file == tmp_path / "schemas" / "inv.avsc"
    assert source.configs == {"max.message.bytes": "2097152", "segment.ms": "3600000"}
    assert (dlq.partitions, dlq.retention_ms, dlq.cleanup_policy) == (6, 30 * DAY, "delete")
    assert (dlq.key_field, dlq.schema_file, dlq.audit, dlq.dlq, dlq.line) == (None, None, False, False, 0)
    assert (dlq.owner, dlq.dead_letter_of, dlq.description) == (
        "billing",
        "invoice.created",
        "Dead letters of invoice.created",
    )
    assert (dlq.producers, dlq.pii_fields) == (("validation-agent",), ("buyer.name",))
    assert dlq.configs == {"max.message.bytes": str(2097152 + 65536)}  # the source limit plus room for headers


def test_kafka_configs_holds_only_what_the_catalog_sets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        topic("""\
        owner: billing
        retention: infinite
        min_insync_replicas: 1
        cleanup_policy: delete,compact
        configs: {max.message.bytes: 2097152, message.timestamp.type: LogAppendTime, preallocate: true}
        dlq: false
        """).replace("preallocate", "file.preallocate"),
    )
    assert load_catalog(path).topic("invoice.created").kafka_configs() == {
        "cleanup.policy": "compact,delete",
        "retention.ms": "-1",
        "min.insync.replicas": "1",
        "max.message.bytes": "2097152",
        "message.timestamp.type": "LogAppendTime",
        "file.preallocate": "true",
    }
    body = "owner: billing\ndlq: false\nretention: null\nmin_insync_replicas: null\n"
    text = topic(body).replace("defaults:\n", "defaults:\n  retention: 7d\n  min_insync_replicas: 1\n")
    unmanaged = load_catalog(write(tmp_path, text)).topic("invoice.created")
    assert unmanaged.kafka_configs() == {"cleanup.policy": "delete"}
    assert (unmanaged.retention_ms, unmanaged.compatibility) == (None, "BACKWARD_TRANSITIVE")


def test_models_are_frozen() -> None:
    catalog = load_catalog(REPO / "topics.yaml")
    with pytest.raises(ValidationError):
        catalog.topic("audit.trail").partitions = 2  # type: ignore[misc]
    assert isinstance(catalog.topics[0], TopicSpec)
    assert len(set(catalog.topics)) == len(catalog.topics)  # hashable although configs is a mapping
    assert hash(catalog) == hash(load_catalog(REPO / "topics.yaml"))


def test_unknown_topic_lookup_suggests_close_names() -> None:
    catalog = load_catalog(REPO / "topics.yaml")
    with pytest.raises(CatalogError, match=r"unknown topic 'invoice\.create'; did you mean 'invoice\.c"):
        catalog.topic("invoice.create")


# --- durations ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("7d", 7 * DAY),
        ("12h", 12 * 3_600_000),
        ("30m", 1_800_000),
        ("45s", 45_000),
        ("500ms", 500),
        ("10y", 3650 * DAY),
        ("2w", 14 * DAY),
        ("-1", -1),
        ("infinite", -1),
        (-1, -1),
        (86400000, DAY),
        ("1000", 1000),
    ],
)
def test_parse_duration_ms(text: str | int, ms: int) -> None:
    assert parse_duration_ms(text, where="x") == ms


@pytest.mark.parametrize("text", ["7 days", "1.5h", "-2", "d7", "", "7D7"])
def test_parse_duration_ms_rejects(text: str) -> None:
    with pytest.raises(CatalogError, match=r"^topics\.yaml:4: not a duration: .*use a whole number"):
        parse_duration_ms(text, where="topics.yaml:4")


def test_bad_duration_in_catalog(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: billing\nretention: 7 days\n"))
    check(path, 8, "retention", "topic 'invoice.created' field 'retention': not a duration:", "'7 days'", "7d")


# --- file-level problems -----------------------------------------------------------------------------------


def test_malformed_yaml_reports_yamls_line(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "  invoice.created:\n    owner: [billing\n    partitions: 3\n")
    check(path, 8, None, "invalid YAML: expected ',' or ']', but got ':' (while parsing a flow sequence)")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- version: 1\n")
    check(path, 1, None, "top level must be a mapping", "got a list")
    path = write(tmp_path, "# nothing\n")
    check(path, 1, None, "got an empty file")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    check(path, 0, None, "cannot read the catalog")


def test_unknown_version(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD.replace("version: 1", "version: 2") + "  a.b: {owner: x, dlq: false}\n")
    check(path, 1, "version", "unsupported version 2", "version 1")
    path = write(tmp_path, "defaults: {partitions: 1, replication_factor: 1}\ntopics: {}\n")
    check(path, 1, "version", "missing", "version: 1")


# --- unknown and misplaced fields --------------------------------------------------------------------------


def test_unknown_field_top_level(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "  a.b: {owner: x}\nprofile:\n  local: {}\n")
    check(path, 7, "profile", "field 'profile': unknown field; did you mean 'profiles'?")


def test_unknown_field_in_defaults(tmp_path: Path) -> None:
    text = HEAD.replace("  partitions: 3", "  partitions: 3\n  retenton: 7d") + "  a.b: {owner: x}\n"
    path = write(tmp_path, text)
    check(path, 4, "retenton", "defaults field 'retenton': unknown field", "did you mean 'retention'")


def test_unknown_field_in_topic(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: billing\npartitons: 6\n"))
    check(
        path, 8, "partitons", "topic 'invoice.created' field 'partitons': unknown field;", "did you mean 'partitions'"
    )


def test_unknown_field_in_profile(tmp_path: Path) -> None:
    text = topic("owner: billing\n") + "profiles:\n  production:\n    defaults:\n      partition: 3\n"
    path = write(tmp_path, text)
    check(
        path, 11, "partition", "profile 'production' defaults field 'partition': unknown", "did you mean 'partitions'?"
    )
    text = topic("owner: billing\n") + "profiles:\n  production:\n    topic: {}\n"
    path = write(tmp_path, text)
    check(path, 10, "topic", "profile 'production' field 'topic'", "did you mean 'topics'?")


def test_topic_only_field_cannot_be_set_by_a_profile(tmp_path: Path) -> None:
    text = topic("owner: billing\n") + PROD_TOPICS + "      invoice.created: {key: x}\n"
    path = write(tmp_path, text)
    check(
        path,
        11,
        "key",
        "profile 'production' topic 'invoice.created' field 'key'",
        "not allowed in profile 'production' topic 'invoice.created'; set it on each topic instead",
    )


def test_operational_field_outside_its_section(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: billing\n") + "partitions: 3\n")
    check(path, 8, "partitions", "not allowed at the top level; put it under 'defaults:' or on a topic")
    path = write(tmp_path, topic("owner: b\n") + "profiles:\n  production:\n    replication_factor: 3\n")
    check(
        path,
        10,
        "replication_factor",
        "not allowed in profile 'production'; put it under the profile's 'defaults:' or 'topics:'",
    )


# --- names and duplicates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Invoice.Created", "invoice", "invoice..created", "1nvoice.created", "invoice.created.", "_schemas"]
)
def test_bad_topic_name(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, topic("owner: billing\n", name=f'"{name}"'))
    check(path, 6, None, f"topic '{name}': invalid topic name", "'invoice.created'")


def test_duplicate_topic_key(tmp_path: Path) -> None:
    text = topic("owner: billing\n") + "  audit.trail: {owner: c}\n  invoice.created: {owner: b}\n"
    path = write(tmp_path, text)
    check(path, 9, None, "topic 'invoice.created': duplicate topic, first declared at line 6")


def test_duplicate_field_in_topic(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: billing\npartitions: 3\npartitions: 4\n"))
    check(path, 9, "partitions", "duplicate field, first declared at line 8")


def test_declared_topic_collides_with_derived_dlq(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: billing\n") + "  invoice.created.dlq: {owner: billing}\n")
    check(
        path,
        8,
        None,
        "topic 'invoice.created.dlq': duplicate topic",
        "dead-letter topic of 'invoice.created' (line 6)",
        "dlq: false",
    )


# --- numbers -----------------------------------------------------------------------------------------------


def test_partitions_below_one(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: billing\npartitions: 0\n"))
    error = only_error(path)
    assert str(error) == f"{path}:8: topic 'invoice.created' field 'partitions': must be >= 1, got 0"


def test_replication_factor_below_one(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: billing\nreplication_factor: -1\n"))
    check(path, 8, "replication_factor", "must be >= 1, got -1")


def test_partitions_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: billing\npartitions: six\n"))
    check(path, 8, "partitions", "must be an integer, got 'six'")
    path = write(tmp_path, topic("owner: billing\npartitions: true\n"))
    check(path, 8, "partitions", "must be an integer, got True")


def test_other_wrong_types(tmp_path: Path) -> None:
    path = write(tmp_path, topic('owner: billing\naudit: "yes"\nproducers: billing-api\nconsumers: [1]\n'))
    errors = [str(e) for e in lint_catalog(path)]
    assert errors == [
        f"{path}:8: topic 'invoice.created' field 'audit': must be true or false, got 'yes'",
        (
            f"{path}:9: topic 'invoice.created' field 'producers': must be a list of strings like "
            "[billing-api], got 'billing-api'"
        ),
        f"{path}:10: topic 'invoice.created' field 'consumers': list item must be a non-empty string, got 1",
    ]


def test_min_insync_replicas_above_replication_factor(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: billing\nmin_insync_replicas: 2\n"))
    check(path, 8, "min_insync_replicas", "must be <= replication_factor, which is 1 (line 4); got 2")


def test_min_insync_replicas_above_replication_factor_in_a_profile(tmp_path: Path) -> None:
    text = topic("owner: billing\n") + "profiles:\n  production:\n    defaults: {min_insync_replicas: 2}\n"
    path = write(tmp_path, text)
    # found whichever profile is loaded: the catalog is one artifact
    for profile in ("local", "production"):
        check(path, 10, "min_insync_replicas", "which is 1 (line 4) in profile 'production'; got 2", profile=profile)


def test_missing_owner_and_partitions(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\ntopics:\n  a.b:\n    replication_factor: 1\n")
    errors = lint_catalog(path)
    assert [str(e) for e in errors] == [
        f"{path}:3: topic 'a.b' field 'owner': missing; set it on the topic",
        f"{path}:3: topic 'a.b' field 'partitions': missing; set it on the topic or under 'defaults'",
    ]


# --- retention ---------------------------------------------------------------------------------------------

TRAIL = (
    HEAD
    + """\
  audit.trail:
    owner: compliance
    retention: 5y
    min_retention: 10y
    dlq: false
"""
)


def test_retention_below_min_retention(tmp_path: Path) -> None:
    path = write(tmp_path, TRAIL)
    check(
        path,
        8,
        "retention",
        "topic 'audit.trail' field 'retention': 5y is below the legal "
        "minimum min_retention 10y (line 9); set it to at least 10y",
    )


def test_profile_lowering_retention_below_min_retention(tmp_path: Path) -> None:
    text = TRAIL.replace("5y", "10y") + PROD_TOPICS.replace("production", "local")
    text += "      audit.trail: {retention: 30d}\n"
    path = write(tmp_path, text)
    check(path, 14, "retention", "30d is below the legal minimum min_retention 10y (line 9) in profile 'local'")
    # profile defaults lose to the topic's own retention, but win over the catalog defaults
    text = TRAIL + "profiles:\n  cheap:\n    defaults: {retention: 1d}\n"
    assert "cheap" not in "".join(str(e) for e in lint_catalog(write(tmp_path, text.replace("5y", "10y"))))
    text = text.replace("    retention: 5y\n", "").replace("defaults:\n", "defaults:\n  retention: 10y\n")
    path = write(tmp_path, text)
    check(path, 13, "retention", "1d is below the legal minimum min_retention 10y (line 9) in profile 'cheap'")


def test_infinite_retention_satisfies_min_retention(tmp_path: Path) -> None:
    path = write(tmp_path, TRAIL.replace("retention: 5y", "retention: infinite"))
    assert load_catalog(path).topic("audit.trail").retention_ms == -1
    path = write(tmp_path, TRAIL.replace("min_retention: 10y", "min_retention: infinite"))
    check(path, 8, "retention", "5y is below the legal minimum min_retention infinite")


def test_min_retention_needs_explicit_retention_and_delete_policy(tmp_path: Path) -> None:
    path = write(tmp_path, TRAIL.replace("    retention: 5y\n", "    cleanup_policy: compact\n"))
    assert [str(e) for e in lint_catalog(path)] == [
        (
            f"{path}:6: topic 'audit.trail' field 'retention': must be set explicitly because min_retention "
            "is 10y (line 9)"
        ),
        (
            f"{path}:8: topic 'audit.trail' field 'cleanup_policy': must be 'delete' when min_retention is set "
            "(compaction removes records early); got 'compact'"
        ),
    ]


# --- legal retention (audited topics) ----------------------------------------------------------------------

AUDITED = (
    HEAD
    + """\
  shop.order:
    owner: shop
    audit: true
    retention: 30d
    legal_retention: 6y
    archive: true
"""
)


def test_audited_topic_with_legal_retention_and_archive_loads(tmp_path: Path) -> None:
    spec = load_catalog(write(tmp_path, AUDITED)).topic("shop.order")
    assert (spec.legal_retention_ms, spec.archive, spec.retention_ms) == (6 * 365 * DAY, True, 30 * DAY)
    assert load_catalog(write(tmp_path, AUDITED)).topic("shop.order.dlq").archive is False


def test_audited_topic_without_legal_retention(tmp_path: Path) -> None:
    path = write(tmp_path, AUDITED.replace("    legal_retention: 6y\n", ""))
    check(
        path,
        6,
        "legal_retention",
        "topic 'shop.order' field 'legal_retention': missing: an audited topic "
        "must say how long its records are kept by law (legal_retention: 6y, 10y, 90d)",
    )


def test_retention_shorter_than_legal_retention_needs_the_archive(tmp_path: Path) -> None:
    path = write(tmp_path, AUDITED.replace("    archive: true\n", ""))
    check(
        path,
        9,
        "retention",
        "30d is shorter than legal_retention 6y (line 10) and the topic is not archived; set 'archive: true'",
    )
    # long enough in Kafka: no archive needed; infinite always is
    assert not lint_catalog(write(tmp_path, AUDITED.replace("    archive: true\n", "").replace("30d", "6y")))
    assert not lint_catalog(write(tmp_path, AUDITED.replace("    archive: true\n", "").replace("30d", "infinite")))
    # a profile that shortens retention is caught in that profile, at the profile's line
    text = AUDITED.replace("    archive: true\n", "").replace("30d", "6y") + PROD_TOPICS
    text += "      shop.order: {retention: 10d}\n"
    path = write(tmp_path, text)
    check(path, 14, "retention", "10d in profile 'production' is shorter than legal_retention 6y (line 10)")
    # no retention at all (the broker default) is not a legal promise either
    path = write(tmp_path, AUDITED.replace("    archive: true\n", "").replace("    retention: 30d\n", ""))
    check(path, 6, "retention", "the broker default is shorter than legal_retention 6y (line 9)")


def test_legal_retention_and_archive_are_topic_fields(tmp_path: Path) -> None:
    path = write(tmp_path, AUDITED.replace("  replication_factor: 1\n", "  replication_factor: 1\n  archive: true\n"))
    check(path, 5, "archive", "not allowed in defaults")
    path = write(tmp_path, AUDITED.replace("archive: true", "archive: yes please"))
    assert f"{path}:11: topic 'shop.order' field 'archive': must be true or false, got 'yes please'" in [
        str(error) for error in lint_catalog(path)
    ]
    path = write(tmp_path, AUDITED.replace("legal_retention: 6y", "legal_retention: six years"))
    assert f"{path}:10: topic 'shop.order' field 'legal_retention': not a duration: 'six years'" in [
        str(error).split(";")[0] for error in lint_catalog(path)
    ]


def test_reference_catalog_archives_every_audited_topic() -> None:
    for profile in ("local", "cluster", "production"):
        catalog = load_catalog(REPO / "topics.yaml", profile)
        audited = [spec for spec in catalog.topics if spec.audit]
        assert audited
        assert all(spec.legal_retention_ms and spec.archive for spec in audited)
    production = load_catalog(REPO / "topics.yaml", "production").topic("invoice.created")
    assert production.kafka_configs()["remote.storage.enable"] == "true"
    assert "remote.storage.enable" not in load_catalog(REPO / "topics.yaml").topic("invoice.created").kafka_configs()


# --- choices -----------------------------------------------------------------------------------------------


def test_unknown_cleanup_policy(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: billing\ncleanup_policy: compacted\n"))
    check(path, 8, "cleanup_policy", "must be one of 'delete', 'compact', 'compact,delete', got 'compacted'")


def test_unknown_compatibility(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: billing\ncompatibility: backward\n"))
    check(
        path,
        8,
        "compatibility",
        "must be one of 'BACKWARD', 'BACKWARD_TRANSITIVE',",
        "'FULL_TRANSITIVE', 'NONE', got 'backward'",
    )


def test_config_managed_by_a_field(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: b\nconfigs:\n  retention.ms: 1000\n  max.message.bytes: [1]\n"))
    assert [str(e) for e in lint_catalog(path)] == [
        (
            f"{path}:9: topic 'invoice.created' field 'configs': 'retention.ms' is managed by the catalog; "
            "set the field 'retention' instead"
        ),
        (
            f"{path}:10: topic 'invoice.created' field 'configs': 'max.message.bytes' must be a string or "
            "number, got [1]"
        ),
    ]


# --- schemas -----------------------------------------------------------------------------------------------


def test_missing_schema_file(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: billing\nschema: schemas/nope.avsc\n"))
    check(path, 8, "schema", "schema file 'schemas/nope.avsc' not found", str(tmp_path / "schemas" / "nope.avsc"))


def test_schema_path_is_relative_to_the_catalog(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = write(tmp_path / "conf", topic("owner: billing\nkey: invoice_id\nschema: schemas/inv.avsc\n"), SCHEMAS)
    spec = load_catalog(path).topic("invoice.created")
    assert spec.schema_file == tmp_path / "conf" / "schemas" / "inv.avsc"


def test_schema_not_json(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: b\nschema: schemas/bad.avsc\n"), {"bad.avsc": '{"type": 1,\n'})
    check(path, 8, "schema", "schema file 'schemas/bad.avsc' is not valid JSON:", "line 2")


def test_schema_not_a_record(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: billing\nschema: schemas/s.avsc\n"), {"s.avsc": '"string"'})
    check(path, 8, "schema", "must be an Avro record", "got 'str'")
    path = write(
        tmp_path,
        topic("owner: billing\nschema: schemas/s.avsc\n"),
        {"s.avsc": {"type": "enum", "name": "E", "symbols": ["A"]}},
    )
    check(path, 8, "schema", "must be an Avro record", "got 'enum'")


def test_schema_not_valid_avro(tmp_path: Path) -> None:
    bad = {"type": "record", "name": "R", "fields": [{"name": "x", "type": "strin"}]}
    path = write(tmp_path, topic("owner: billing\nschema: schemas/s.avsc\n"), {"s.avsc": bad})
    check(path, 8, "schema", "is not a valid Avro schema:", "strin")


def test_key_absent_from_schema(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: billing\nkey: invoice\nschema: schemas/inv.avsc\n"), SCHEMAS)
    check(
        path,
        8,
        "key",
        "'invoice' is not in schemas/inv.avsc: record InvoiceCreated has no "
        "field 'invoice'; its fields: invoice_id, buyer, note",
    )


def test_key_nested_path(tmp_path: Path) -> None:
    ok = write(tmp_path, topic("owner: b\nkey: buyer.name\nschema: schemas/inv.avsc\n"), SCHEMAS)
    assert load_catalog(ok).topic("invoice.created").key_field == "buyer.name"
    path = write(tmp_path, topic("owner: b\nkey: buyer.nam\nschema: schemas/inv.avsc\n"))
    check(path, 8, "key", "record Party has no field 'nam'; its fields: name, vat")
    path = write(tmp_path, topic("owner: b\nkey: invoice_id.x\nschema: schemas/inv.avsc\n"))
    check(path, 8, "key", "'invoice_id' in schemas/inv.avsc is a string, not a record")


def test_key_must_be_a_non_null_primitive(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: b\nkey: buyer\nschema: schemas/inv.avsc\n"), SCHEMAS)
    check(path, 8, "key", "'buyer' is a record in schemas/inv.avsc; a key must be")
    path = write(tmp_path, topic("owner: b\nkey: buyer.vat\nschema: schemas/inv.avsc\n"))
    check(path, 8, "key", "'buyer.vat' is nullable", "non-null")


def test_pii_field_absent_from_schema(tmp_path: Path) -> None:
    body = "owner: b\nschema: schemas/inv.avsc\npii_fields: [buyer.name, buyer.email]\n"
    path = write(tmp_path, topic(body), SCHEMAS)
    check(
        path,
        9,
        "pii_fields",
        "'buyer.email' is not in schemas/inv.avsc: record Party has no field 'email'; its fields: name, vat",
    )


# --- profiles ----------------------------------------------------------------------------------------------


def test_unknown_profile_name(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: billing\n") + "profiles:\n  production: {}\n")
    check(path, 8, "profiles", "unknown profile 'prod'; did you mean 'production'?", profile="prod")
    check(path, 8, "profiles", "unknown profile 'staging'; known: local, production", profile="staging")


def test_local_profile_exists_without_a_profiles_section(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: billing\n"))
    assert load_catalog(path).profile == "local"
    check(path, 0, "profiles", "unknown profile 'production'; known: local", profile="production")


def test_profile_overlay_of_an_undeclared_topic(tmp_path: Path) -> None:
    text = topic("owner: billing\n") + PROD_TOPICS + "      invoice.create: {partitions: 6}\n"
    path = write(tmp_path, text)
    check(
        path,
        11,
        None,
        "profile 'production' topic 'invoice.create': not declared under 'topics'; did you mean 'invoice.created'?",
    )


# --- lint collects everything, load raises the first --------------------------------------------------------


def test_lint_reports_every_problem_in_file_order(tmp_path: Path) -> None:
    text = (
        HEAD
        + """\
  invoice.created:
    owner: billing
    partitions: 0
    cleanup_policy: compacted
  Bad.Name: {owner: x}
  invoice.cleared:
    owner: billing
    key: nope
    schema: schemas/inv.avsc
    retention: 3 days
profiles:
  production:
    defaults: {replicas: 3}
"""
    )
    path = write(tmp_path, text, SCHEMAS)
    errors = lint_catalog(path)
    assert [(e.line, e.field) for e in errors if isinstance(e, CatalogLocationError)] == [
        (8, "partitions"),
        (9, "cleanup_policy"),
        (10, None),
        (13, "key"),
        (15, "retention"),
        (18, "replicas"),
    ]
    with pytest.raises(CatalogLocationError) as raised:
        load_catalog(path)
    assert (raised.value.line, raised.value.field) == (8, "partitions")


# --- the bridge section (its routes are checked by streams.bridge.routes) ---------------------------------


def test_bridge_section_is_accepted_and_left_to_the_bridge(tmp_path: Path) -> None:
    text = topic("owner: billing\n") + "bridge:\n  group: g\n  routes: {r: {topic: whatever, task: t}}\n"
    path = write(tmp_path, text)
    assert load_catalog(path).names() == ("invoice.created", "invoice.created.dlq")
    assert lint_catalog(path) == []


def test_bridge_section_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: billing\n") + "bridge: [routes]\n")
    check(path, 8, "bridge", "must be a mapping, got a list")


def test_unknown_top_level_key_names_bridge_among_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, topic("owner: billing\n") + "bridges: {}\n")
    check(path, 8, "bridges", "unknown field; did you mean 'bridge'?")
