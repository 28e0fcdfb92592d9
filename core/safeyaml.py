"""YAML for files an operator edits by hand: bounded, strict about keys, with a line for every path.

``yaml.safe_load`` is safe from code execution but not from its input's size: a 521-byte
"billion laughs" expands to 387 million nodes, ``a: &x [*x]`` makes a cyclic object that any
recursive reader overflows on, and 3,000 nested ``[`` overflow the composer itself. It also
keeps the last of two equal keys without a word. :func:`parse` refuses all of these, each as a
:class:`Refused` with the line it concerns, before anything else reads the document:

- the document's depth (counted through aliases) is at most ``max_depth``;
- its nodes, counted as if every alias were expanded, are at most ``max_nodes``: aliases are
  fine, an alias bomb is not;
- an alias inside the node it refers to (a recursive alias) is refused;
- a key repeated in a mapping is refused (YAML 1.2 says keys are unique);
- a scalar that cannot be converted (a 13th month) is refused.

Numbers follow YAML 1.2's core schema, not YAML 1.1's (PyYAML's default): ``10``, ``-3``,
``0o17``, ``0x1F``, ``1.5``, ``1e3``, ``.inf``, ``.nan``. What only YAML 1.1 reads as a number is
a string: ``1:30`` (1.1's base 60: 90; Kubernetes has no base 60 either), ``1_000``, ``0b101``; a
count then fails validation instead of silently becoming 90. A decimal with a leading zero (``010``) is
refused: YAML 1.1 and Kubernetes read it as the octal 8, YAML 1.2 as 10, and an operator meant
one of them. A numeric scalar over :data:`MAX_NUMBER` characters is refused before it is
converted, so no scalar costs more than reading it (a 600 KB ``1:0:0:…`` took 7.2 s to convert
digit by digit in base 60, quadratically).

Limits are checked while composing, so refused input costs at most ``max_nodes`` nodes of work.
libyaml parses when it is installed (about 7 µs a node); composing stays in Python to keep count.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.error import MarkedYAMLError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

try:  # libyaml parses about ten times faster; the composer below stays in Python to keep count
    from yaml.cyaml import CParser  # type: ignore[attr-defined]

    class _Source(CParser):  # type: ignore[misc]
        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)

except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Source(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, text: str) -> None:
            Reader.__init__(self, text)
            Scanner.__init__(self)
            Parser.__init__(self)

MERGE_TAG = "tag:yaml.org,2002:merge"
INT_TAG, FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
Lines = dict[tuple[Any, ...], int]

# YAML 1.2.2 § 10.3.2 (core schema): the plain scalars that are numbers
INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                   r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")
LEADING_ZERO = re.compile(r"[-+]?0[0-9]+")
MAX_NUMBER = 40  # characters: a double needs 24, an int64 20; longer is refused before conversion


class _Resolver(Resolver):
    """PyYAML's resolver with YAML 1.2's ints and floats in place of YAML 1.1's."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in (INT_TAG, FLOAT_TAG)]
        for first, resolvers in Resolver.yaml_implicit_resolvers.items()}


# ints first: FLOAT matches them too, and the first match wins
_Resolver.add_implicit_resolver(INT_TAG, re.compile(f"^(?:{INT.pattern})$"), list("-+0123456789"))
_Resolver.add_implicit_resolver(FLOAT_TAG, re.compile(f"^(?:{FLOAT.pattern})$"), list("-+0123456789."))


def _number_text(constructor: SafeConstructor, node: Node) -> str:
    text = str(constructor.construct_scalar(node))  # type: ignore[arg-type]
    if len(text) > MAX_NUMBER:
        raise ValueError(f"a number of more than {MAX_NUMBER} characters")
    return text


def _leading_zero(text: str) -> str:
    """Why ``010`` is refused: YAML 1.1 and 1.2 read it differently; what to write instead."""
    if not set(text) & set("89"):
        octal = f"0o{text.lstrip('0') or '0'}" if text[0].isdigit() else None  # 1.2 has no signed octal
        older = f"YAML 1.1 and Kubernetes read it as the octal {int(text, 8)}"
    else:
        octal, older = None, "YAML 1.1 reads it as a string"
    return (f"a leading zero is ambiguous ({older}, YAML 1.2 as {int(text)}): write {int(text)}"
            + (f", or {octal} for octal" if octal else ""))


class _Constructor(SafeConstructor):
    """SafeConstructor with YAML 1.2's ints and floats (also for an explicit ``!!int`` or ``!!float``)."""

    def construct_yaml_int(self, node: Node) -> int:  # type: ignore[override]
        text = _number_text(self, node)
        if not INT.fullmatch(text):
            raise ValueError("not an integer (YAML 1.2: 10, -3, 0o17 or 0x1F)")
        if LEADING_ZERO.fullmatch(text):
            raise ValueError(_leading_zero(text))
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text)

    def construct_yaml_float(self, node: Node) -> float:  # type: ignore[override]
        text = _number_text(self, node)
        if not FLOAT.fullmatch(text):
            raise ValueError("not a number (YAML 1.2: 1.5, -2e3, .inf or .nan)")
        if text.lower().endswith("inf"):
            return -math.inf if text.startswith("-") else math.inf
        return math.nan if text.lower() == ".nan" else float(text)


_Constructor.add_constructor(INT_TAG, _Constructor.construct_yaml_int)  # type: ignore[type-var]
_Constructor.add_constructor(FLOAT_TAG, _Constructor.construct_yaml_float)  # type: ignore[type-var]


@dataclass(frozen=True)
class Limits:
    max_depth: int = 64
    max_nodes: int = 20_000


class Refused(MarkedYAMLError):
    """Well-formed YAML that is refused: too deep, too big once expanded, a recursive alias, a repeated key."""


def line_of(exc: yaml.YAMLError) -> int | None:
    """The 1-based line a YAML error points at, if any."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return mark.line + 1 if mark is not None else None


class _Loader(Composer, _Source, _Constructor, _Resolver):
    """SafeLoader's behaviour, YAML 1.2's numbers, and a composer that counts (Composer first: its methods win)."""

    def __init__(self, text: str, limits: Limits) -> None:
        _Source.__init__(self, text)
        _Constructor.__init__(self)
        _Resolver.__init__(self)
        Composer.__init__(self)
        self.limits = limits
        self.depth = 0
        self.composed = 0
        self.open_anchors: dict[str, Any] = {}  # anchor → its mark, while its node is being composed
        # node → (nodes when every alias is expanded, depth through aliases), capped at the limits
        self.measure: dict[int, tuple[int, int]] = {}
        self.key_reader = _Constructor()

    def compose_node(self, parent: Node | None, index: Any) -> Any:
        event: Any = self.peek_event()
        if isinstance(event, AliasEvent):
            if event.anchor in self.open_anchors:
                alias: Any = event.start_mark
                raise Refused("in the node anchored here", self.open_anchors[event.anchor],
                              f"found a recursive alias *{event.anchor} (it refers to a node that contains it)", alias)
            return super().compose_node(parent, index)
        self.depth += 1
        self.composed += 1
        if self.depth > self.limits.max_depth:
            raise Refused(None, None, f"nested deeper than {self.limits.max_depth} levels", event.start_mark)
        if self.composed > self.limits.max_nodes:
            raise Refused(None, None, f"more than {self.limits.max_nodes:,} nodes", event.start_mark)
        anchor = event.anchor
        if anchor is not None:
            self.open_anchors[anchor] = event.start_mark
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
            if anchor is not None:
                self.open_anchors.pop(anchor, None)
        self._measure(node)
        return node

    def _measure(self, node: Any) -> None:
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            self._unique_keys(node)
            children = [n for pair in node.value for n in pair]
        else:
            self.measure[id(node)] = (1, 1)
            return
        sizes = [self.measure[id(c)] for c in children]
        size = min(1 + sum(s for s, _ in sizes), self.limits.max_nodes + 1)
        depth = 1 + max((d for _, d in sizes), default=0)
        self.measure[id(node)] = (size, depth)
        # without aliases the count in compose_node is reached first: these two need aliases
        if size > self.limits.max_nodes:
            raise Refused(None, None, f"aliases expand this to more than {self.limits.max_nodes:,} nodes "
                          "(an alias bomb?)", node.start_mark)
        if depth > self.limits.max_depth:
            raise Refused(None, None, f"nested deeper than {self.limits.max_depth} levels through its aliases",
                          node.start_mark)

    def _unique_keys(self, node: MappingNode) -> None:
        seen: dict[Hashable, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == MERGE_TAG:
                continue
            key = self.construct_scalar_key(key_node)
            if key in seen:
                raise Refused("in this mapping", node.start_mark,
                              f"found the key {key!r} twice (first on line {seen[key]})", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1

    def construct_scalar_key(self, node: ScalarNode) -> Hashable:
        value = _converted(self.key_reader, node)
        return value if isinstance(value, Hashable) else repr(value)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        return _converted(super(), node, deep)


def _converted(constructor: Any, node: Node, deep: bool = True) -> Any:
    """``constructor.construct_object``; a scalar Python cannot convert becomes an error with a line."""
    try:
        return constructor.construct_object(node, deep)
    except (ValueError, OverflowError) as exc:  # int() of 5,000 digits, a 13th month, ...
        text = str(node.value)
        shown = f"{text[:20]}… ({len(text):,} characters)" if len(text) > 40 else text
        raise Refused(None, None, f"cannot read {shown}: {str(exc).split(';')[0]}", node.start_mark) from exc


def parse(text: str, limits: Limits | None = None) -> tuple[Any, Lines]:
    """The document and the line (1-based) where each path of keys and indexes starts.

    Raises :class:`Refused` or another ``yaml.YAMLError`` (a syntax error); both carry a line.
    """
    limits = limits or Limits()
    loader = _Loader(text, limits)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except MarkedYAMLError as exc:
        if "maximum nesting depth" in str(exc.problem):  # libyaml's own limit (1,000), met first when scanning
            raise Refused(None, None, f"nested deeper than {limits.max_depth} levels", exc.problem_mark) from exc
        raise
    finally:
        loader.dispose()
    lines: Lines = {}
    if node is not None:
        _walk(node, (), lines)
    return data, lines


def _walk(node: Node, at: tuple[Any, ...], lines: Lines) -> None:
    """Record lines; bounded: the composer measured depth and expanded size."""
    lines.setdefault(at, node.start_mark.line + 1)
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if isinstance(key, ScalarNode):
                lines[(*at, key.value)] = key.start_mark.line + 1
                _walk(value, (*at, key.value), lines)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*at, i), lines)
