"""The registry's in-memory view: subjects, versions, ids, configs and modes, folded from `_schemas`.

Only `apply` changes it, one record at a time, so replaying the topic always rebuilds the same state.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from streams.registry import records

if TYPE_CHECKING:
    from streams.registry.records import LogRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One version of one subject."""

    subject: str
    version: int
    schema_id: int
    schema: str
    deleted: bool
    canonical: str  # see canonical(); kept so lookups do not re-parse JSON


def canonical(schema: str) -> str:
    """The identity of a schema text: its JSON with sorted keys and no whitespace."""
    return json.dumps(json.loads(schema), sort_keys=True, separators=(",", ":"))


@dataclass
class RegistryState:
    """Everything the registry knows; mutate only through `apply`."""

    subjects: dict[str, dict[int, SchemaVersion]] = field(default_factory=dict)
    schemas: dict[int, str] = field(default_factory=dict)
    ids_by_canonical: dict[str, int] = field(default_factory=dict)
    users: dict[int, set[tuple[str, int]]] = field(default_factory=dict)
    configs: dict[str | None, str] = field(default_factory=dict)
    modes: dict[str | None, str] = field(default_factory=dict)
    max_id: int = 0

    def clone(self) -> RegistryState:
        """A copy a writer may plan on without touching the served state."""
        return RegistryState(
            subjects={name: dict(versions) for name, versions in self.subjects.items()},
            schemas=dict(self.schemas),
            ids_by_canonical=dict(self.ids_by_canonical),
            users={schema_id: set(users) for schema_id, users in self.users.items()},
            configs=dict(self.configs),
            modes=dict(self.modes),
            max_id=self.max_id,
        )

    # ---- folding the log ------------------------------------------------------------------------

    def apply(self, record: LogRecord) -> None:
        """Fold one record in; records this registry does not understand are ignored (and logged)."""
        kind, key, value = record.keytype, record.key, record.value
        try:
            if kind == records.SCHEMA:
                self._apply_schema(key, value)
            elif kind == records.CONFIG:
                self._apply_setting(self.configs, key, value, "compatibilityLevel")
            elif kind == records.MODE:
                self._apply_setting(self.modes, key, value, "mode")
            elif kind == records.DELETE_SUBJECT and value is not None:
                self._apply_delete_subject(str(value["subject"]), int(value["version"]))
            elif kind != records.NOOP:
                log.debug("ignoring _schemas record with keytype %r", kind)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring malformed _schemas record %r -> %r: %s", key, value, exc)

    def _apply_schema(self, key: dict[str, object], value: dict[str, object] | None) -> None:
        subject, version = str(key["subject"]), int(str(key["version"]))
        if value is None:
            self._forget(subject, version)
            return
        if value.get("schemaType", "AVRO") != "AVRO":
            log.warning("ignoring non-Avro schema %s v%s (this registry serves Avro only)", subject, version)
            return
        schema_id, schema = int(str(value["id"])), str(value["schema"])
        self._forget(subject, version)
        deleted = bool(value.get("deleted", False))
        entry = SchemaVersion(subject, version, schema_id, schema, deleted, canonical(schema))
        self.subjects.setdefault(subject, {})[version] = entry
        self.schemas.setdefault(schema_id, schema)
        self.ids_by_canonical.setdefault(entry.canonical, schema_id)
        self.users.setdefault(schema_id, set()).add((subject, version))
        self.max_id = max(self.max_id, schema_id)

    def _forget(self, subject: str, version: int) -> None:
        versions = self.subjects.get(subject)
        old = versions.pop(version, None) if versions is not None else None
        if old is None:
            return
        if not versions:
            del self.subjects[subject]
        users = self.users.get(old.schema_id, set())
        users.discard((subject, version))
        if not users:
            # No version uses the id any more: it is gone (a hard delete), but never reissued
            # while this process runs, because max_id does not go down.
            self.users.pop(old.schema_id, None)
            self.schemas.pop(old.schema_id, None)
            if self.ids_by_canonical.get(old.canonical) == old.schema_id:
                del self.ids_by_canonical[old.canonical]

    @staticmethod
    def _apply_setting(
        target: dict[str | None, str], key: dict[str, object], value: dict[str, object] | None, name: str
    ) -> None:
        subject = key.get("subject")
        scope = None if subject is None else str(subject)
        if value is None:
            target.pop(scope, None)
        else:
            target[scope] = str(value[name]).upper()

    def _apply_delete_subject(self, subject: str, up_to: int) -> None:
        versions = self.subjects.get(subject, {})
        for number, entry in list(versions.items()):
            if number <= up_to and not entry.deleted:
                versions[number] = replace(entry, deleted=True)

    # ---- queries --------------------------------------------------------------------------------

    def versions(self, subject: str, *, deleted: bool = False) -> list[SchemaVersion]:
        """The subject's versions in order; soft-deleted ones only when `deleted`."""
        found = self.subjects.get(subject, {})
        return [found[n] for n in sorted(found) if deleted or not found[n].deleted]

    def subject_names(self, *, deleted: bool = False, deleted_only: bool = False) -> list[str]:
        """Subjects with a live version; with `deleted` also fully soft-deleted ones."""
        names = []
        for name, versions in self.subjects.items():
            live = any(not entry.deleted for entry in versions.values())
            if (deleted_only and not live) or (not deleted_only and (live or deleted)):
                names.append(name)
        return sorted(names)

    def find(self, subject: str, schema: str, *, deleted: bool = False) -> SchemaVersion | None:
        """The latest version of `subject` whose schema is `schema` (same canonical JSON)."""
        wanted = canonical(schema)
        for entry in reversed(self.versions(subject, deleted=deleted)):
            if entry.canonical == wanted:
                return entry
        return None

    def usages(self, schema_id: int, *, deleted: bool = False) -> list[SchemaVersion]:
        """Every subject version that uses `schema_id`, sorted by subject then version."""
        found = []
        for subject, version in sorted(self.users.get(schema_id, set())):
            entry = self.subjects[subject][version]
            if deleted or not entry.deleted:
                found.append(entry)
        return found

    def compatibility(self, subject: str | None, default: str) -> str:
        """The effective level: the subject's own, else the global one, else `default`."""
        if subject is not None and subject in self.configs:
            return self.configs[subject]
        return self.configs.get(None, default)

    def mode(self, subject: str | None) -> str:
        """The effective mode: the subject's own, else the global one, else READWRITE."""
        if subject is not None and subject in self.modes:
            return self.modes[subject]
        return self.modes.get(None, "READWRITE")
