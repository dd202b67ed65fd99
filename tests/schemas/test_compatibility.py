"""The offline compatibility checker against the evolution matrix, plus parse errors."""

from __future__ import annotations

import pytest

from streams.errors import SchemaError
from streams.schemas import LEVELS, check_compatibility, parse_schema
from tests.schemas.compat_cases import CASES, CompatCase, field, record


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
@pytest.mark.parametrize("level", LEVELS)
def test_matrix(case: CompatCase, level: str) -> None:
    result = check_compatibility(case.new, case.existing, level)
    assert result.compatible is case.expected(level), result.messages
    assert bool(result.messages) is not result.compatible


def test_matrix_is_big_enough() -> None:
    assert len(CASES) >= 15
    assert any(case.backward_transitive is not None for case in CASES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type": "record", "name": "R", "fields": [', "not JSON"),
        ('{"type": "recrod", "name": "R"}', "recrod"),
        (record(field("n", "int", default="zero")), "default \"zero\" of field 'n'"),
        (record(field("ref", ["null", "string"], default="x")), "first branch"),
        (record(field("n", "int", default=2**40)), "field 'n'"),
        (record(field("s", {"type": "enum", "name": "S", "symbols": ["A"]}, default="B")), "field 's'"),
    ],
)
def test_invalid_schemas_raise_schema_error_naming_the_problem(text: str, expected: str) -> None:
    with pytest.raises(SchemaError, match="invalid Avro schema") as caught:
        parse_schema(text)
    assert expected in str(caught.value)


def test_valid_defaults_parse() -> None:
    parse_schema(
        record(
            field("n", "long", default=1),
            field("x", "double", default=1),
            field("ref", ["null", "string"], default=None),
            field("xs", {"type": "array", "items": "int"}, default=[1, 2]),
            field("p", {"type": "record", "name": "P", "fields": [field("a", "int", default=0)]}, default={}),
        )
    )


def test_unknown_level_is_refused() -> None:
    with pytest.raises(SchemaError, match="BACKWARD_TRANSITIVE"):
        check_compatibility(record(field("a", "int")), [record(field("a", "int"))], "SIDEWAYS")


def test_levels_are_case_insensitive_and_none_accepts_anything() -> None:
    old, new = record(field("s", "string")), record(field("s", "int"))
    assert not check_compatibility(new, [old], "backward").compatible
    assert check_compatibility(new, [old], "none").compatible
    assert check_compatibility(new, [], "FULL_TRANSITIVE").compatible
