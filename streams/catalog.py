"""The topic catalog: topics.yaml loaded into frozen, validated models (declared and derived DLQ topics).

Every problem is reported as one line naming the file, line and field that is wrong and what would be right.
"""

# No `from __future__ import annotations`: pydantic resolves Mapping and Path at class creation.
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel
from yaml.nodes import Node, SequenceNode

from streams.errors import CatalogError
from streams.located_yaml import FieldError as _FieldError
from streams.located_yaml import LocatedParser, located_message
from streams.located_yaml import hint as _hint
from streams.schema_fields import key_problem, read_record_schema, resolve_field

__all__ = [
    "Catalog",
    "CatalogLocationError",
    "TopicSpec",
    "lint_catalog",
    "load_catalog",
    "parse_duration_ms",
]

CleanupPolicy = Literal["delete", "compact", "compact,delete"]
Compatibility = Literal[
    "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE"
]
CLEANUP_POLICIES: tuple[str, ...] = get_args(CleanupPolicy)
COMPATIBILITIES: tuple[str, ...] = get_args(Compatibility)
CATALOG_VERSION = 1
TOPIC_NAME = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$")
_MAX_NAME = 249  # Kafka's limit on topic names
_AVRO_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_CONFIG_NAME = re.compile(r"^[a-z0-9]+(\.[a-z0-9]+)+$")
_MANAGED = {
    "cleanup.policy": "cleanup_policy",
    "retention.ms": "retention",
    "min.insync.replicas": "min_insync_replicas",
}
# YAML field -> TopicSpec attribute, where they differ
_MODEL_NAMES = {
    "retention": "retention_ms",
    "min_retention": "min_retention_ms",
    "key": "key_field",
    "schema": "schema_file",
    "legal_retention": "legal_retention_ms",
}  # YAML field -> TopicSpec attribute, where they differ
# What each section may say. Profiles tune only operational numbers: a topic's identity
# (key, schema, owner, policy) must not differ between environments.
# bridge: streams.bridge.routes reads it; webhooks: streams.webhooks.routes
_TOP_FIELDS = ("version", "defaults", "profiles", "topics", "bridge", "webhooks")
_PROFILE_FIELDS = (
    "partitions",
    "replication_factor",
    "min_insync_replicas",
    "retention",
    "dlq_retention",
    "configs",
)
_DEFAULT_FIELDS = (*_PROFILE_FIELDS, "cleanup_policy", "compatibility", "dlq")
_TOPIC_FIELDS = (
    *_DEFAULT_FIELDS,
    "description",
    "owner",
    "min_retention",
    "key",
    "schema",
    "producers",
    "consumers",
    "audit",
    "pii_fields",
    "legal_retention",
    "archive",
)
_REQUIRED = ("owner", "partitions", "replication_factor")
_BUILTIN: dict[str, Any] = {
    "cleanup_policy": "delete",
    "compatibility": "BACKWARD_TRANSITIVE",
    "dlq": True,
    "audit": False,
    "description": "",
    "producers": (),
    "consumers": (),
    "pii_fields": (),
    "configs": {},
    "min_insync_replicas": None,
    "retention": None,
    "min_retention": None,
    "dlq_retention": None,
    "key": None,
    "schema": None,
    "legal_retention": None,
    "archive": False,
}


class TopicSpec(BaseModel, frozen=True):
    """One Kafka topic as the catalog declares it (or derives it, for `<name>.dlq`)."""

    name: str
    partitions: int
    replication_factor: int
    min_insync_replicas: int | None
    retention_ms: int | None  # -1 = infinite; None = broker default (not managed)
    min_retention_ms: int | None  # legal minimum (audit topics), enforced by the catalog
    cleanup_policy: CleanupPolicy
    key_field: str | None  # dotted path allowed into nested records
    schema_file: Path | None  # resolved against the catalog file's directory
    compatibility: Compatibility
    owner: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    audit: bool
    legal_retention_ms: int | None  # how long the records must be kept, in Kafka or in the archive (-1 = forever)
    archive: bool  # copied continuously into the archive (streams.archive), which then keeps them
    pii_fields: tuple[str, ...]
    description: str
    dlq: bool  # whether <name>.dlq is derived
    dead_letter_of: str | None  # set on derived DLQ topics: the source topic name
    configs: Mapping[str, str]  # extra raw Kafka topic configs
    line: int  # 1-based line of the topic's entry in the YAML (0 for derived)

    def __hash__(self) -> int:  # pydantic's frozen hash would fail on the `configs` dict
        values = self.__dict__.values()
        return hash(tuple(frozenset(v.items()) if isinstance(v, Mapping) else v for v in values))

    def kafka_configs(self) -> dict[str, str]:
        """Only the topic configs the catalog manages, as Kafka strings."""
        out: dict[str, str] = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            out["retention.ms"] = str(self.retention_ms)
        if self.min_insync_replicas is not None:
            out["min.insync.replicas"] = str(self.min_insync_replicas)
        out.update(self.configs)
        return out


class Catalog(BaseModel, frozen=True):
    """Every topic of one profile: declared topics plus derived DLQ topics, sorted by name."""

    path: Path
    profile: str
    topics: tuple[TopicSpec, ...]

    def topic(self, name: str) -> TopicSpec:
        """The topic called `name`; CatalogError naming close matches when there is none."""
        for spec in self.topics:
            if spec.name == name:
                return spec
        raise CatalogLocationError(self.path, 0, None, f"unknown topic {name!r}; {_hint(name, self.names())}")

    def names(self) -> tuple[str, ...]:
        """All topic names, sorted."""
        return tuple(spec.name for spec in self.topics)


class CatalogLocationError(CatalogError):
    """A CatalogError that knows where: `path`, 1-based `line` (0 = the whole file) and `field`."""

    def __init__(self, path: Path, line: int, field: str | None, problem: str, where: str = "") -> None:
        self.path, self.line, self.field, self.problem = path, line, field, problem
        super().__init__(located_message(path, line, where, field, problem))


def load_catalog(path: Path, profile: str = "local") -> Catalog:
    """Load and validate `path` for `profile`; raises the first CatalogError (in file order)."""
    linter = _Linter(Path(path))
    catalog = linter.run(profile)
    if catalog is None:
        raise linter.sorted_issues()[0]
    return catalog


def lint_catalog(path: Path, profile: str = "local") -> list[CatalogError]:
    """Every problem in `path` (all topics, all profiles), in file order; empty when valid."""
    linter = _Linter(Path(path))
    linter.run(profile)
    return list(linter.sorted_issues())


_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 365 * 86_400_000}
_DURATION = re.compile(r"^(\d+)\s*(ms|s|m|h|d|w|y)$")


def parse_duration_ms(value: str | int, *, where: str) -> int:
    """Milliseconds for "7d", "12h", "30m", "45s", "500ms", "2w", "10y" (365d) or ints (ms); -1 = infinite."""
    try:
        return _duration_ms(value)
    except _FieldError as exc:
        raise CatalogError(f"{where}: {exc}") from None


def _duration_ms(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= -1:
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in {"-1", "infinite"}:
            return -1
        if text.isdigit():
            return int(text)
        if match := _DURATION.match(text):
            return int(match[1]) * _UNIT_MS[match[2]]
    raise _FieldError(
        f"not a duration: {value!r}; use a whole number and a unit (500ms, 45s, 30m, 12h, 7d, "
        "2w, 10y), plain milliseconds, or 'infinite'"
    )


def _human_ms(ms: int) -> str:
    units = [unit for unit in ("y", "w", "d", "h", "m", "s") if ms > 0 and ms % _UNIT_MS[unit] == 0]
    return "infinite" if ms == -1 else f"{ms // _UNIT_MS[units[0]]}{units[0]}" if units else f"{ms}ms"


def _check(value: Any, ok: bool, expected: str) -> Any:
    if not ok:
        raise _FieldError(f"must be {expected}, got {value!r}")
    return value


def _count(value: Any) -> int:
    _check(value, isinstance(value, int) and not isinstance(value, bool), "an integer")
    return int(_check(value, value >= 1, ">= 1"))


def _retention(value: Any) -> int:
    ms = _duration_ms(value)
    return int(_check(ms, ms != 0, "a positive duration or 'infinite'"))


def _name(value: Any) -> str:
    return str(_check(value, isinstance(value, str) and bool(value.strip()), "a non-empty string"))


def _avro_path(value: Any) -> str:
    ok = isinstance(value, str) and bool(_AVRO_PATH.match(value))
    return str(_check(value, ok, "a field name or a dotted path into nested records (a.b)"))


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = value.replace(" ", "") if isinstance(value, str) else value
        text = "compact,delete" if text == "delete,compact" else text
        return str(_check(value, text in options, "one of " + ", ".join(f"'{o}'" for o in options)) and text)

    return parse


def _nullable(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else parse(value)


_SCALARS: dict[str, Callable[[Any], Any]] = {
    "description": lambda value: _check(value, isinstance(value, str), "a string"),
    "audit": lambda value: _check(value, isinstance(value, bool), "true or false"),
    "dlq": lambda value: _check(value, isinstance(value, bool), "true or false"),
    "archive": lambda value: _check(value, isinstance(value, bool), "true or false"),
    "legal_retention": _nullable(_retention),
    "owner": _name,
    "partitions": _count,
    "replication_factor": _count,
    "min_insync_replicas": _nullable(_count),
    "retention": _nullable(_retention),
    "min_retention": _nullable(_retention),
    "dlq_retention": _nullable(_retention),
    "cleanup_policy": _choice(CLEANUP_POLICIES),
    "compatibility": _choice(COMPATIBILITIES),
    "key": _nullable(_avro_path),
    "schema": _nullable(_name),
}
_LISTS: dict[str, Callable[[Any], str]] = {"producers": _name, "consumers": _name, "pii_fields": _avro_path}


@dataclass(frozen=True)
class _Val:
    """A field value and where it came from (line 0 = built-in default; profile = set by that profile)."""

    value: Any
    line: int
    profile: str | None = None


Layer = dict[str, _Val]
Topics = dict[str, tuple[int, Layer]]  # name -> (line, fields)


def _merge(*layers: Layer) -> Layer:
    out: Layer = {}
    for layer in layers:
        for name, val in layer.items():
            merged = {**out[name].value, **val.value} if name == "configs" and name in out else val.value
            out[name] = _Val(merged, val.line, val.profile)  # configs merge key by key; the rest replace
    return out


def _node(entries: dict[str, tuple[int, Node]], key: str) -> Node | None:
    return entries[key][1] if key in entries else None


def _misplaced(field: str, where: str) -> str:
    if not where:
        return "not allowed at the top level; put it under 'defaults:' or on a topic"
    if field in _PROFILE_FIELDS and where.startswith("profile"):
        return f"not allowed in {where}; put it under the profile's 'defaults:' or 'topics:'"
    return f"not allowed in {where}; set it on each topic instead"


class _Linter(LocatedParser):
    """One pass over one catalog file, collecting every problem."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.issues: list[CatalogLocationError] = []
        self._schemas: dict[str, tuple[dict[str, Any] | None, str]] = {}

    def report(self, line: int, where: str, field: str | None, problem: str) -> None:
        self.issues.append(CatalogLocationError(self.path, line, field, " ".join(problem.split()), where))

    def sorted_issues(self) -> list[CatalogLocationError]:
        unique = {str(issue): issue for issue in self.issues}  # a base-layer problem repeats per profile
        return sorted(unique.values(), key=lambda issue: issue.line)

    def run(self, profile: str) -> Catalog | None:
        root = self.compose(_TOP_FIELDS)
        if root is None:
            return None
        top = self.entries(root, "", _TOP_FIELDS)
        self._check_version(top.get("version"))
        defaults = self.layer(_node(top, "defaults"), "defaults", _DEFAULT_FIELDS)
        topics: Topics = {}
        if "topics" not in top:
            self.report(1, "", "topics", "missing; declare the topics under 'topics:'")
        for name, (line, node) in self.entries(_node(top, "topics"), "", None, "topic", "topics").items():
            if TOPIC_NAME.match(name) and len(name) <= _MAX_NAME:
                topics[name] = (line, self.layer(node, f"topic '{name}'", _TOPIC_FIELDS))
            else:
                self.report(
                    line,
                    f"topic '{name}'",
                    None,
                    "invalid topic name; use lower case "
                    "'<domain>.<event>' like 'invoice.created' (letters, digits, '_' or '-' between "
                    f"dots, at most {_MAX_NAME} characters)",
                )
        # Only the shape of 'bridge:' and 'webhooks:' here; their routes are checked against topics and schemas
        # by streams.bridge and streams.webhooks.
        self.entries(_node(top, "bridge"), "", None, "section", "bridge")
        self.entries(_node(top, "webhooks"), "", None, "section", "webhooks")
        profiles = self._profiles(_node(top, "profiles"), topics)
        if profile not in profiles:
            line = top["profiles"][0] if "profiles" in top else 0
            self.report(line, "", "profiles", f"unknown profile {profile!r}; {_hint(profile, profiles)}")
            return None
        specs = self._specs(defaults, topics, profiles, profile)
        return None if self.issues else Catalog(path=self.path, profile=profile, topics=specs)

    def unknown_key(self, key: str, where: str, allowed: tuple[str, ...]) -> str:
        return _misplaced(key, where) if key in _TOPIC_FIELDS else super().unknown_key(key, where, allowed)

    def layer(self, node: Node | None, where: str, allowed: tuple[str, ...], profile: str | None = None) -> Layer:
        out: Layer = {}
        for field, (line, value_node) in self.entries(node, where, allowed).items():
            try:
                out[field] = _Val(self._value(field, value_node, where), line, profile)
            except _FieldError as exc:
                self.report(line, where, field, str(exc))
        return out

    def _value(self, field: str, node: Node, where: str) -> Any:
        if field == "configs":
            return self._configs(node, where)
        if field not in _LISTS:
            return _SCALARS[field](self.construct(node))
        if not isinstance(node, SequenceNode):
            if (got := self.construct(node)) is None:
                return ()
            raise _FieldError(f"must be a list of strings like [{got}], got {got!r}")
        items = []
        for item in node.value:
            try:
                items.append(_LISTS[field](self.construct(item)))
            except _FieldError as exc:
                self.report(item.start_mark.line + 1, where, field, f"list item {exc}")
        return tuple(items)

    def _configs(self, node: Node, where: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, (line, value_node) in self.entries(node, where, None, "config", "configs").items():
            value = self.construct(value_node)
            if name in _MANAGED:
                self.report(
                    line,
                    where,
                    "configs",
                    f"{name!r} is managed by the catalog; set the field '{_MANAGED[name]}' instead",
                )
            elif not _CONFIG_NAME.match(name):
                self.report(
                    line,
                    where,
                    "configs",
                    f"{name!r} is not a Kafka topic config name (dotted lower case, like max.message.bytes)",
                )
            elif isinstance(value, str | int | float):  # bool is an int: Kafka spells it true/false
                out[name] = str(value).lower() if isinstance(value, bool) else str(value)
            else:
                self.report(line, where, "configs", f"{name!r} must be a string or number, got {value!r}")
        return out

    def _check_version(self, entry: tuple[int, Node] | None) -> None:
        if entry is None:
            self.report(1, "", "version", f"missing; start the file with 'version: {CATALOG_VERSION}'")
        elif (value := self.construct(entry[1])) != CATALOG_VERSION or isinstance(value, bool):
            self.report(
                entry[0], "", "version", f"unsupported version {value!r}; this streams reads version {CATALOG_VERSION}"
            )

    def _profiles(self, node: Node | None, topics: Topics) -> dict[str, tuple[Layer, Topics]]:
        profiles: dict[str, tuple[Layer, Topics]] = {"local": ({}, {})}  # 'local' always exists
        for name, (_, body) in self.entries(node, "", None, "profile", "profiles").items():
            where = f"profile '{name}'"
            parts = self.entries(body, where, ("defaults", "topics"))
            defaults = self.layer(_node(parts, "defaults"), f"{where} defaults", _PROFILE_FIELDS, name)
            overlays: Topics = {}
            overlay_entries = self.entries(_node(parts, "topics"), where, None, "topic", "topics")
            for topic, (line, tnode) in overlay_entries.items():
                if topic in topics:
                    overlay = self.layer(tnode, f"{where} topic '{topic}'", _PROFILE_FIELDS, name)
                    overlays[topic] = (line, overlay)
                else:
                    self.report(
                        line, f"{where} topic '{topic}'", None, f"not declared under 'topics'; {_hint(topic, topics)}"
                    )
            profiles[name] = (defaults, overlays)
        return profiles

    def _specs(
        self, defaults: Layer, topics: Topics, profiles: dict[str, tuple[Layer, Topics]], selected: str
    ) -> tuple[TopicSpec, ...]:
        specs: dict[str, TopicSpec] = {}
        dlq_retention: dict[str, int | None] = {}
        builtin = {field: _Val(value, 0) for field, value in _BUILTIN.items()}
        for name, (line, layer) in topics.items():
            where = f"topic '{name}'"
            missing = [field for field in _REQUIRED if field not in _merge(defaults, layer)]
            for field in missing:
                self.report(
                    line,
                    where,
                    field,
                    "missing; set it on the topic" + (" or under 'defaults'" if field in _DEFAULT_FIELDS else ""),
                )
            self._check_schema(where, layer)
            # Every profile is checked, so a production-only mistake fails on a laptop too.
            for pname, (pdefaults, overlays) in profiles.items():
                merged = _merge(builtin, defaults, pdefaults, layer, overlays.get(name, (0, {}))[1])
                self._check_merged(where, pname, line, merged)
                if pname == selected and not missing:
                    specs[name] = _spec(name, line, {k: v.value for k, v in merged.items()}, self.path.parent)
                    dlq_retention[name] = merged["dlq_retention"].value
        for spec in [spec for spec in specs.values() if spec.dlq]:
            dlq = _dead_letters(spec, dlq_retention[spec.name])
            if dlq.name in specs:
                self.report(
                    specs[dlq.name].line,
                    f"topic '{dlq.name}'",
                    None,
                    f"duplicate topic: it is also derived as the dead-letter topic of '{spec.name}' "
                    f"(line {spec.line}); rename it or set 'dlq: false' on '{spec.name}'",
                )
            specs.setdefault(dlq.name, dlq)
        return tuple(specs[name] for name in sorted(specs))

    def _check_merged(self, where: str, profile: str, line: int, merged: Layer) -> None:
        def context(*vals: _Val) -> str:
            return f" in profile '{profile}'" if any(val.profile for val in vals) else ""

        isr, rf = merged["min_insync_replicas"], merged.get("replication_factor")
        if rf and isr.value is not None and isr.value > rf.value:
            self.report(
                isr.line or line,
                where,
                "min_insync_replicas",
                f"must be <= replication_factor, "
                f"which is {rf.value} (line {rf.line}){context(isr, rf)}; got {isr.value}",
            )
        floor, retention, policy = merged["min_retention"], merged["retention"], merged["cleanup_policy"]
        self._check_legal(where, profile, line, merged)
        if floor.value is None:
            return
        if policy.value != "delete":
            self.report(
                policy.line or line,
                where,
                "cleanup_policy",
                f"must be 'delete' when min_retention is set (compaction removes records early); got {policy.value!r}",
            )
        if retention.value is None:
            self.report(
                line,
                where,
                "retention",
                "must be set explicitly because min_retention is "
                f"{_human_ms(floor.value)} (line {floor.line}){context(floor)}",
            )
        elif (floor.value == -1 and retention.value != -1) or -1 < retention.value < floor.value:
            self.report(
                retention.line or line,
                where,
                "retention",
                f"{_human_ms(retention.value)} is below the legal minimum min_retention "
                f"{_human_ms(floor.value)} (line {floor.line}){context(retention, floor)}; "
                f"set it to at least {_human_ms(floor.value)}",
            )

    def _check_legal(self, where: str, profile: str, line: int, merged: Layer) -> None:
        """Audited topics say how long the law keeps them; Kafka keeps them that long or the archive does."""
        legal, retention, archive = merged["legal_retention"], merged["retention"], merged["archive"]
        if merged["audit"].value and legal.value is None:
            self.report(
                line,
                where,
                "legal_retention",
                "missing: an audited topic must say how long its "
                "records are kept by law (legal_retention: 6y, 10y, 90d)",
            )
        if legal.value is None or archive.value:
            return
        kept = retention.value
        if kept is None or (kept != -1 and (legal.value == -1 or kept < legal.value)):
            shown = "the broker default" if kept is None else _human_ms(kept)
            in_profile = f" in profile '{profile}'" if retention.profile else ""
            self.report(
                retention.line or line,
                where,
                "retention",
                f"{shown}{in_profile} is shorter than legal_retention {_human_ms(legal.value)} "
                f"(line {legal.line}) and the topic is not archived; set 'archive: true' (streams "
                f"archive keeps the records) or retention to at least {_human_ms(legal.value)}",
            )

    def _check_schema(self, where: str, layer: Layer) -> None:
        entry = layer.get("schema")
        if entry is None or entry.value is None:
            return
        if entry.value not in self._schemas:
            self._schemas[entry.value] = read_record_schema(self.path.parent / entry.value, entry.value)
        schema, problem = self._schemas[entry.value]
        if schema is None:
            self.report(entry.line, where, "schema", problem)
            return
        key = layer.get("key")
        if key and key.value is not None and (wrong_key := key_problem(schema, key.value, entry.value)):
            self.report(key.line, where, "key", wrong_key)
        pii = layer.get("pii_fields", _Val((), 0))
        for dotted in pii.value:
            try:
                resolve_field(schema, dotted, entry.value)
            except _FieldError as exc:
                self.report(pii.line, where, "pii_fields", str(exc))


def _spec(name: str, line: int, values: dict[str, Any], base_dir: Path) -> TopicSpec:
    fields = {_MODEL_NAMES.get(key, key): value for key, value in values.items() if key != "dlq_retention"}
    schema = fields["schema_file"]
    fields.update(schema_file=None if schema is None else base_dir / schema, dead_letter_of=None)
    return TopicSpec(name=name, line=line, **fields)


BROKER_MAX_MESSAGE_BYTES = 1_048_588  # Kafka's default message.max.bytes, for a topic that sets none
DLQ_HEADER_ROOM = 65_536  # what a dead letter adds: dlq_* headers, an error message of up to 2,000 characters


def _dead_letters(source: TopicSpec, retention_ms: int | None) -> TopicSpec:
    # A dead letter is the source record plus headers: it carries the same PII, and needs the source's size
    # limit plus room for the dead-letter headers (a record at the source's limit must still be parkable
    # whole). The source's consumers are the ones that write dead letters.
    return source.model_copy(
        update={
            "name": f"{source.name}.dlq",
            "retention_ms": retention_ms,
            "min_retention_ms": None,
            "cleanup_policy": "delete",
            "key_field": None,
            "schema_file": None,
            "compatibility": "NONE",
            "producers": source.consumers,
            "consumers": (),
            "audit": False,
            "dlq": False,
            "legal_retention_ms": None,
            "archive": False,
            "description": f"Dead letters of {source.name}",
            "dead_letter_of": source.name,
            "line": 0,
            "configs": {
                "max.message.bytes": str(
                    int(source.configs.get("max.message.bytes", BROKER_MAX_MESSAGE_BYTES)) + DLQ_HEADER_ROOM
                )
            },
        }
    )
