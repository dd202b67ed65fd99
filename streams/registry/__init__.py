"""A Confluent-compatible schema registry (Avro) over the compacted `_schemas` topic.

Run it with `streams registry serve` or `python -m streams.registry`; nothing starts on import.
"""

from __future__ import annotations

__all__: list[str] = []
