"""Avro schemas: parsing, compatibility rules and (later) the registry client and wire format.

Import from here: `from streams.schemas import check_compatibility, parse_schema`.
"""

from __future__ import annotations

from streams.schemas.compatibility import (
    LEVELS,
    CompatibilityResult,
    check_compatibility,
    normalize_level,
    parse_schema,
)

__all__ = ["LEVELS", "CompatibilityResult", "check_compatibility", "normalize_level", "parse_schema"]
