"""The one located-YAML loader for topics.yaml and its sections (catalog, `bridge:`, `webhooks:`).

Owns composing the file into nodes, walking mappings with file:line reports, and the message format
`file:line: where field 'x': what is wrong and what would be right` every located error uses.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["FieldError", "LocatedParser", "hint", "is_null", "located_message", "node_kind"]


class FieldError(Exception):
    """Internal: one field's value is wrong (the text says how); the parser adds where."""


def located_message(path: Path, line: int, where: str, field: str | None, problem: str) -> str:
    """`path:line: where field 'x': problem` (line 0: the whole file; where and field when known)."""
    location = f"{path}:{line}" if line else str(path)
    subject = " ".join(part for part in (where, f"field '{field}'" if field else "") if part)
    return f"{location}: {subject}: {problem}" if subject else f"{location}: {problem}"


def hint(name: str, known: Iterable[str]) -> str:
    """`did you mean 'x'?` for a close name, else the known names."""
    known = list(known)
    close = [k for k in known if k.startswith(name) or name.startswith(k)]
    close = close or difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return "known: " + (", ".join(known) or "none")


def node_kind(node: Node) -> str:
    kinds: dict[type[Node], str] = {MappingNode: "mapping", SequenceNode: "list"}
    return kinds.get(type(node), f"scalar ({node.value!r})")


def is_null(node: Node | None) -> bool:
    return node is None or (isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null")


class LocatedParser:
    """One pass over one YAML file, collecting every problem with its line; subclasses say how a problem
    becomes their error (`report`) and may word unknown keys their way (`unknown_key`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._constructor = SafeConstructor()

    def report(self, line: int, where: str, field: str | None, problem: str) -> None:
        raise NotImplementedError

    def construct(self, node: Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def compose(self, top_fields: Iterable[str]) -> MappingNode | None:
        """The file's top-level mapping; None (reported) when it cannot be read or is not a mapping."""
        try:
            root = yaml.compose(self.path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
        except OSError as exc:
            self.report(0, "", None, f"cannot read the catalog: {exc.strerror or exc}")
            return None
        except UnicodeDecodeError as exc:
            self.report(0, "", None, f"not UTF-8 text: {exc.reason}")
            return None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            context = f" ({exc.context})" if exc.context else ""
            self.report(mark.line + 1 if mark else 0, "", None, f"invalid YAML: {exc.problem}{context}")
            return None
        if not isinstance(root, MappingNode):
            got = "an empty file" if root is None else f"a {node_kind(root)}"
            self.report(
                root.start_mark.line + 1 if root else 1,
                "",
                None,
                f"the top level must be a mapping with keys {', '.join(top_fields)}; got {got}",
            )
            return None
        return root

    def section(self, name: str) -> tuple[Node, Node] | None:
        """The (key, value) nodes of the top-level section `name`; None when the file has none (or the file
        itself is broken, which the catalog reports)."""
        root = self.compose(())
        if root is None:
            return None
        return next(((k, v) for k, v in root.value if getattr(k, "value", None) == name), None)

    def unknown_key(self, key: str, where: str, allowed: tuple[str, ...]) -> str:  # noqa: ARG002 - for overrides
        """The problem of a key `allowed` does not list, at `where` (the catalog names misplaced topic fields)."""
        return f"unknown field; {hint(key, allowed)}"

    def entries(
        self,
        node: Node | None,
        where: str,
        allowed: tuple[str, ...] | None,
        kind: str = "field",
        field: str | None = None,
    ) -> dict[str, tuple[int, Node]]:
        """A mapping node's keys -> (line, value node); reports duplicate and unknown keys."""
        out: dict[str, tuple[int, Node]] = {}
        if node is None or is_null(node):
            return out
        if not isinstance(node, MappingNode):
            self.report(node.start_mark.line + 1, where, field, f"must be a mapping, got a {node_kind(node)}")
            return out
        for key_node, value_node in node.value:
            line, key = key_node.start_mark.line + 1, str(key_node.value)
            subject, named = (where, key) if kind == "field" else (f"{where} {kind} '{key}'".strip(), None)
            if not isinstance(key_node, ScalarNode):
                self.report(line, where, None, f"a {kind} name must be a string, got a {node_kind(key_node)}")
            elif key in out:
                self.report(line, subject, named, f"duplicate {kind}, first declared at line {out[key][0]}; remove one")
            elif allowed is not None and key not in allowed:
                self.report(line, where, key, self.unknown_key(key, where, allowed))
            else:
                out[key] = (line, value_node)
        return out

    def scalar(
        self, entries: dict[str, tuple[int, Node]], name: str, where: str, parse: Callable[[Any], Any], default: Any
    ) -> Any:
        """`parse` of the value at `name` (reported and `default` when it raises FieldError, or is absent)."""
        if name not in entries:
            return default
        line, node = entries[name]
        try:
            return parse(self.construct(node))
        except FieldError as exc:
            self.report(line, where, name, str(exc))
            return default
