"""The registry's operations with Confluent's semantics: register, look up, delete, check, configure.

Reads wait until the state has caught up with `_schemas`; writes are plans run by the single writer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from streams.errors import SchemaError
from streams.registry import errors
from streams.registry.errors import RegistryError
from streams.registry.records import (
    LogRecord,
    config_record,
    delete_subject_record,
    mode_record,
    schema_record,
    schema_tombstone,
)
from streams.registry.state import RegistryState, SchemaVersion, canonical
from streams.schemas.compatibility import check_compatibility, normalize_level, parse_schema

if TYPE_CHECKING:
    from streams.registry.store import Plan, SchemaLog

T = TypeVar("T")
MODES = ("READWRITE", "READONLY", "IMPORT")
Json = Any

AuditCheck = Callable[[str], "str | None"]
"""Given a subject, the audited topic it belongs to (hard delete is then refused), else None."""


def no_audited_subjects(subject: str) -> str | None:
    """The audit check used when the registry runs without a catalog."""
    del subject
    return None


@dataclass(frozen=True)
class NewSchema:
    """A schema from a request body, validated and in the compact text the registry stores."""

    text: str
    schema_id: int | None = None
    version: int | None = None


def parse_version(value: str) -> int | None:
    """A version path segment: None for latest ("latest" or -1), else 1..2^31-1, else 42202."""
    if value in {"latest", "-1"}:
        return None
    try:
        number = int(value)
    except ValueError:
        raise errors.invalid_version(value) from None
    if not 1 <= number <= 2**31 - 1:
        raise errors.invalid_version(value)
    return number


def new_schema_from(body: Json) -> NewSchema:
    """Validate a register/lookup/compatibility body: Avro only, no references, parsable, good defaults."""
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise errors.invalid_schema('Request body must be a JSON object with a string field "schema"')
    schema_type = body.get("schemaType") or "AVRO"
    if str(schema_type).upper() != "AVRO":
        raise errors.invalid_schema(f"Schema type {schema_type} is not supported; this registry serves AVRO only")
    if body.get("references"):
        raise errors.invalid_schema("Schema references are not supported by this registry")
    try:
        parse_schema(body["schema"])
    except SchemaError as exc:
        raise errors.invalid_schema(f"Invalid schema: {exc}") from exc
    text = json.dumps(json.loads(body["schema"]), separators=(",", ":"), ensure_ascii=False)
    schema_id, version = body.get("id"), body.get("version")
    for name, value in (("id", schema_id), ("version", version)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise errors.invalid_schema(f'"{name}" must be a positive integer, not {value!r}')
    return NewSchema(text, schema_id, version)


def version_json(entry: SchemaVersion) -> dict[str, Json]:
    """A subject version as Confluent returns it (schemaType is omitted for AVRO)."""
    return {"subject": entry.subject, "version": entry.version, "id": entry.schema_id, "schema": entry.schema}


class SchemaRegistry:
    """Confluent Schema Registry semantics over a SchemaLog."""

    def __init__(
        self,
        store: SchemaLog,
        *,
        default_compatibility: str = "BACKWARD_TRANSITIVE",
        audited_topic: AuditCheck = no_audited_subjects,
    ) -> None:
        self.store = store
        self.default_compatibility = normalize_level(default_compatibility)
        self.audited_topic = audited_topic

    async def _read(self, query: Callable[[RegistryState], T]) -> T:
        await asyncio.to_thread(self.store.sync)
        with self.store.reading() as state:
            return query(state)

    async def _read_found(self, query: Callable[[RegistryState], T]) -> T:
        """`query` on what the registry has read when that finds it; after a 404, synced and asked again.

        For answers that never change once true (an id's schema text, a schema registered under a subject):
        like Confluent's registry, which answers every read from what it has read, a client (re)starting while
        `_schemas` has no reachable leader still finds them (decision 0028). A miss syncs: it may be new.
        """
        with self.store.reading() as state:
            try:
                return query(state)
            except errors.RegistryError as exc:
                if exc.status != 404:
                    raise
        return await self._read(query)

    async def _write(self, plan: Plan[T]) -> T:
        return await asyncio.wrap_future(self.store.submit(plan))

    # ---- subjects and versions ------------------------------------------------------------------

    async def subjects(self, *, deleted: bool, deleted_only: bool, prefix: str | None) -> list[str]:
        names = await self._read(lambda s: s.subject_names(deleted=deleted, deleted_only=deleted_only))
        return [name for name in names if prefix is None or name.startswith(prefix)]

    async def versions(self, subject: str, *, deleted: bool, deleted_only: bool) -> list[int]:
        def query(state: RegistryState) -> list[int]:
            found = state.versions(subject, deleted=deleted or deleted_only)
            if deleted_only:
                found = [entry for entry in found if entry.deleted]
            elif not found:
                raise errors.subject_not_found(subject)
            return [entry.version for entry in found]

        return await self._read(query)

    async def version(self, subject: str, version: str, *, deleted: bool) -> SchemaVersion:
        number = parse_version(version)
        return await self._read(lambda state: _pick(state, subject, number, deleted=deleted))

    async def lookup(self, subject: str, body: Json, *, deleted: bool) -> SchemaVersion:
        schema = new_schema_from(body)

        def query(state: RegistryState) -> SchemaVersion:
            if not state.versions(subject, deleted=deleted):
                raise errors.subject_not_found(subject)
            found = state.find(subject, schema.text, deleted=deleted)
            if found is None:
                raise errors.schema_not_found()
            return found

        return await self._read_found(query)

    async def register(self, subject: str, body: Json) -> int:
        schema = new_schema_from(body)
        if schema.schema_id is None and schema.version is None:
            # Already registered: answer without taking the writer role (Confluent does the same).
            def known(state: RegistryState) -> int | None:
                found = state.find(subject, schema.text) if state.mode(subject) == "READWRITE" else None
                return None if found is None else found.schema_id

            found_id = await self._read(known)
            if found_id is not None:
                return found_id
        return await self._write(partial(self._plan_register, subject, schema))

    def _plan_register(self, subject: str, schema: NewSchema, state: RegistryState) -> tuple[list[LogRecord], int]:
        mode = state.mode(subject)
        if mode == "READONLY":
            raise errors.not_permitted(f"Subject '{subject}' is in read-only mode")
        importing = mode == "IMPORT"
        if schema.schema_id is not None and not importing:
            raise errors.not_permitted(
                f"Registering with an explicit id ({schema.schema_id}) is only permitted in IMPORT mode"
            )
        everything = state.versions(subject, deleted=True)
        next_version = everything[-1].version + 1 if everything else 1
        if not importing:
            found = state.find(subject, schema.text)
            if found is not None:
                return [], found.schema_id
            live = [entry.schema for entry in state.versions(subject)]
            verdict = check_compatibility(schema.text, live, state.compatibility(subject, self.default_compatibility))
            if not verdict.compatible:
                raise errors.incompatible(subject, verdict.messages)
            if schema.version is not None and schema.version != next_version:
                raise RegistryError(
                    422,
                    42202,
                    f"Version {schema.version} is not one more than the latest version "
                    f"{next_version - 1} of subject '{subject}'",
                )
        version = schema.version or next_version
        clash = state.subjects.get(subject, {}).get(version)
        if clash is not None:
            if clash.canonical == canonical(schema.text) and schema.schema_id in (None, clash.schema_id):
                return [], clash.schema_id
            raise errors.not_permitted(f"Version {version} of subject '{subject}' exists with a different schema")
        if schema.schema_id is not None:
            taken = state.schemas.get(schema.schema_id)
            if taken is not None and canonical(taken) != canonical(schema.text):
                raise errors.not_permitted(f"Overwrite new schema with id {schema.schema_id} is not permitted.")
            schema_id = schema.schema_id
        else:
            known_id = state.ids_by_canonical.get(canonical(schema.text))
            schema_id = known_id if known_id is not None else state.max_id + 1
        return [schema_record(subject, version, schema_id, schema.text, deleted=False)], schema_id

    # ---- deletes --------------------------------------------------------------------------------

    async def delete_subject(self, subject: str, *, permanent: bool) -> list[int]:
        return await self._write(partial(self._plan_delete_subject, subject, permanent))

    def _plan_delete_subject(
        self, subject: str, permanent: bool, state: RegistryState
    ) -> tuple[list[LogRecord], list[int]]:
        self._refuse_readonly(state, subject)
        everything = state.versions(subject, deleted=True)
        if not everything:
            raise errors.subject_not_found(subject)
        live = [entry for entry in everything if not entry.deleted]
        if not permanent:
            if not live:
                raise errors.subject_soft_deleted(subject)
            planned = [schema_record(e.subject, e.version, e.schema_id, e.schema, deleted=True) for e in live]
            planned.append(delete_subject_record(subject, live[-1].version))
            if subject in state.configs:  # Confluent drops the subject's compatibility level with it
                planned.append(config_record(subject, None))
            return planned, [entry.version for entry in live]
        self._refuse_audited(subject)
        if live:
            raise errors.subject_not_soft_deleted(subject)
        planned = [schema_tombstone(subject, entry.version) for entry in everything]
        if subject in state.configs:
            planned.append(config_record(subject, None))
        if subject in state.modes:
            planned.append(mode_record(subject, None))
        return planned, [entry.version for entry in everything]

    async def delete_version(self, subject: str, version: str, *, permanent: bool) -> int:
        number = parse_version(version)
        return await self._write(partial(self._plan_delete_version, subject, number, permanent))

    def _plan_delete_version(
        self, subject: str, number: int | None, permanent: bool, state: RegistryState
    ) -> tuple[list[LogRecord], int]:
        self._refuse_readonly(state, subject)
        everything = state.versions(subject, deleted=True)
        pool = everything if permanent or number is not None else [e for e in everything if not e.deleted]
        entry = _pick_from(pool, subject, number)
        if not permanent:
            if entry.deleted:
                raise errors.version_soft_deleted(subject, entry.version)
            return [schema_record(subject, entry.version, entry.schema_id, entry.schema, deleted=True)], entry.version
        self._refuse_audited(subject)
        if not entry.deleted:
            raise errors.version_not_soft_deleted(subject, entry.version)
        return [schema_tombstone(subject, entry.version)], entry.version

    def _refuse_audited(self, subject: str) -> None:
        topic = self.audited_topic(subject)
        if topic is not None:
            raise errors.not_permitted(
                f"Subject '{subject}' belongs to topic '{topic}', which the catalog flags audit: true; "
                "its schemas may be soft-deleted but never permanently deleted"
            )

    @staticmethod
    def _refuse_readonly(state: RegistryState, subject: str) -> None:
        if state.mode(subject) == "READONLY":
            raise errors.not_permitted(f"Subject '{subject}' is in read-only mode")

    # ---- schemas by id --------------------------------------------------------------------------

    async def schema(self, schema_id: int) -> str:
        def query(state: RegistryState) -> str:
            text = state.schemas.get(schema_id)
            if text is None:
                raise errors.schema_not_found(f"Schema {schema_id} not found")
            return text

        return await self._read_found(query)  # an id names the same text forever

    async def schema_usages(self, schema_id: int, *, deleted: bool) -> list[SchemaVersion]:
        def query(state: RegistryState) -> list[SchemaVersion]:
            if schema_id not in state.schemas:
                raise errors.schema_not_found(f"Schema {schema_id} not found")
            return state.usages(schema_id, deleted=deleted)

        return await self._read(query)

    # ---- compatibility --------------------------------------------------------------------------

    async def test_compatibility(self, subject: str, version: str | None, body: Json) -> tuple[bool, tuple[str, ...]]:
        schema = new_schema_from(body)
        number = None if version is None else parse_version(version)

        def query(state: RegistryState) -> tuple[str, list[SchemaVersion]]:
            level = state.compatibility(subject, self.default_compatibility)
            if version is None:
                return level, state.versions(subject)
            return level, [_pick(state, subject, number, deleted=False)]

        level, against = await self._read(query)
        verdict = await asyncio.to_thread(check_compatibility, schema.text, [e.schema for e in against], level)
        messages = verdict.messages
        if messages:
            versions = ", ".join(str(entry.version) for entry in against)
            messages = (*messages, f"{{compatibility: '{level}', checkedVersions: [{versions}]}}")
        return verdict.compatible, messages

    # ---- config and mode ------------------------------------------------------------------------

    async def get_config(self, subject: str | None, *, default_to_global: bool) -> str:
        def query(state: RegistryState) -> str:
            if subject is not None and subject not in state.configs and not default_to_global:
                raise errors.subject_config_not_found(subject)
            return state.compatibility(subject, self.default_compatibility)

        return await self._read(query)

    async def set_config(self, subject: str | None, body: Json) -> str:
        raw = body.get("compatibility", body.get("compatibilityLevel")) if isinstance(body, dict) else None
        try:
            level = normalize_level(str(raw)) if isinstance(raw, str) else None
        except SchemaError:
            level = None
        if level is None:
            raise errors.invalid_compatibility_level(raw)
        chosen: str = level

        def plan(state: RegistryState) -> tuple[list[LogRecord], str]:
            del state  # setting a level needs nothing from the state
            return [config_record(subject, chosen)], chosen

        return await self._write(plan)

    async def delete_config(self, subject: str | None) -> str:
        def plan(state: RegistryState) -> tuple[list[LogRecord], str]:
            if subject is not None and subject not in state.configs:
                raise errors.subject_config_not_found(subject)
            old = state.compatibility(subject, self.default_compatibility)
            return ([config_record(subject, None)] if subject in state.configs else []), old

        return await self._write(plan)

    async def get_mode(self, subject: str | None, *, default_to_global: bool) -> str:
        def query(state: RegistryState) -> str:
            if subject is not None and subject not in state.modes and not default_to_global:
                raise errors.subject_mode_not_found(subject)
            return state.mode(subject)

        return await self._read(query)

    async def set_mode(self, subject: str | None, body: Json, *, force: bool) -> str:
        raw = body.get("mode") if isinstance(body, dict) else None
        mode = raw.upper() if isinstance(raw, str) else None
        if mode not in MODES:
            raise errors.invalid_mode(raw)

        def plan(state: RegistryState) -> tuple[list[LogRecord], str]:
            if mode == "IMPORT" and not force:
                occupied = state.subjects if subject is None else state.subjects.get(subject, {})
                if occupied:
                    raise errors.not_permitted(
                        "Cannot import since found existing subjects (set force=true to switch anyway)"
                    )
            return [mode_record(subject, mode)], mode

        return await self._write(plan)

    async def delete_mode(self, subject: str) -> str:
        def plan(state: RegistryState) -> tuple[list[LogRecord], str]:
            if subject not in state.modes:
                raise errors.subject_mode_not_found(subject)
            return [mode_record(subject, None)], state.modes[subject]

        return await self._write(plan)


def _pick(state: RegistryState, subject: str, number: int | None, *, deleted: bool) -> SchemaVersion:
    """The version `number` (None = latest) of `subject`; soft-deleted ones only when `deleted`."""
    return _pick_from(state.versions(subject, deleted=deleted), subject, number)


def _pick_from(visible: Sequence[SchemaVersion], subject: str, number: int | None) -> SchemaVersion:
    if not visible:
        raise errors.subject_not_found(subject)
    if number is None:
        return visible[-1]
    for entry in visible:
        if entry.version == number:
            return entry
    raise errors.version_not_found(subject, number)
