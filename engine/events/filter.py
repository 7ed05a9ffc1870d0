"""``--filter``: which gadget events reach consumers, decided over decoded records in Python.

An expression is ``FIELD OP VALUE`` with OP one of ``== != < <= > >=`` (VALUE typed as the
field is: an integer, a string, an IP address, a boolean) or ``~`` / ``!~`` (VALUE a regular
expression searched in the value's text). FIELD is a field of a gadget's record, or one of
``META_FIELDS``. Every expression must hold for an event to be kept. A record field filters
only the events of the maps whose struct has it (so ``gadget==x`` and a field of ``x`` keep
``x``'s events alone); a value that is absent (the host has no ``container.name``) satisfies
only ``!=`` and ``!~``. The engine's own records (attachments, containers, losses, maps) are
never filtered.

Expressions are checked against the structs read from the gadgets' sources
(engine.gadget.record_structs), before anything is compiled; a map whose struct cannot be read
there is typed by its first record.
"""

from __future__ import annotations

import ipaddress
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from engine.errors import FilterError
from engine.events.decode import Field, build_decoder
from engine.gadget.model import Gadget
from engine.gadget.record_structs import buffer_structs
from engine.records import Event

# Fields of every event besides its data: how each is read from the event.
META_FIELDS: dict[str, Callable[[Event], Any]] = {
    "gadget": lambda e: e.gadget,
    "source": lambda e: e.source,
    "container.name": lambda e: (e.container or {}).get("name"),
    "container.image": lambda e: (e.container or {}).get("image"),
    "k8s.namespace": lambda e: ((e.container or {}).get("k8s") or {}).get("namespace"),
    "k8s.pod": lambda e: ((e.container or {}).get("k8s") or {}).get("pod"),
}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_EXPRESSION = re.compile(r"\s*([A-Za-z_][\w.]*)\s*(==|!=|<=|>=|!~|~|<|>)(.*)", re.DOTALL)
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
Check = Callable[[Event], bool]
Layouts = Mapping[tuple[str, str], Mapping[str, type]]


@attrs.frozen
class Condition:
    """One parsed expression; ``value`` is still text, typed per map by ``check``."""

    text: str
    field: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Condition:
        match = _EXPRESSION.fullmatch(text)
        if match is None:
            raise FilterError(
                text, "is not FIELD OP VALUE (OP one of == != < <= > >= ~ !~, e.g. comm==sh)"
            )
        field, op, value = match.group(1), match.group(2), match.group(3).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        return cls(text, field, op, value)

    def check(self, kind: type, read: Callable[[Event], Any]) -> Check:
        """The test of this condition on a field of Python type ``kind`` read by ``read``."""
        if self.op in ("~", "!~"):
            try:
                pattern = re.compile(self.value)
            except re.error as exc:
                raise FilterError(self.text, f"bad regular expression: {exc}") from None
            want = self.op == "~"

            def matches(event: Event) -> bool:
                value = read(event)
                found = value is not None and pattern.search(str(value)) is not None
                return found is want

            return matches
        wanted = self._typed(kind)
        compare = _COMPARE[self.op]
        absent = self.op == "!="
        if kind in (ipaddress.IPv4Address, ipaddress.IPv6Address):
            convert: Callable[[Any], Any] = ipaddress.ip_address
        else:
            convert = kind

        def compares(event: Event) -> bool:
            value = read(event)
            return absent if value is None else bool(compare(convert(value), wanted))

        return compares

    def _typed(self, kind: type) -> Any:
        if kind is list:
            raise FilterError(self.text, f"{self.field} is an array: only ~ and !~ apply to it")
        if kind is bool:
            if self.value.lower() in (*_TRUE, *_FALSE):
                return self.value.lower() in _TRUE
            raise FilterError(self.text, f"{self.field} is true or false, not {self.value!r}")
        if kind is int:
            try:
                return int(self.value, 0)
            except ValueError:
                raise FilterError(
                    self.text, f"{self.field} is an integer, not {self.value!r}"
                ) from None
        if kind in (ipaddress.IPv4Address, ipaddress.IPv6Address):
            try:
                address = ipaddress.ip_address(self.value)
            except ValueError:
                raise FilterError(
                    self.text, f"{self.field} is an IP address, not {self.value!r}"
                ) from None
            if not isinstance(address, kind):
                raise FilterError(self.text, f"{self.field} is an IPv{kind(0).version} address")
            return address
        return self.value


@attrs.define
class RecordFilter:
    """All conditions, compiled once per (gadget, map) on that map's first event."""

    conditions: tuple[Condition, ...]
    layouts: dict[tuple[str, str], Mapping[str, type]]
    _checks: dict[tuple[str, str], tuple[Check, ...]] = attrs.Factory(dict)

    @classmethod
    def parse(cls, expressions: Sequence[str], gadgets: Iterable[Gadget]) -> RecordFilter | None:
        """The filter of ``expressions``, checked against the gadgets' record structs; None
        without expressions. Raises ``FilterError`` for the first bad one."""
        if not expressions:
            return None
        layouts = record_types(gadgets)
        conditions = tuple(Condition.parse(text) for text in expressions)
        unread = any(fields is None for fields in layouts.values())
        known = {name for fields in layouts.values() if fields for name in fields}
        for condition in conditions:
            if condition.field not in META_FIELDS and not (condition.field in known or unread):
                raise FilterError(
                    condition.text,
                    f"unknown field {condition.field!r}; {fields_text(layouts)}; every event"
                    f" has {', '.join(META_FIELDS)}",
                )
        found = cls(conditions, {k: v for k, v in layouts.items() if v is not None})
        for key, types in found.layouts.items():
            found._compile(key, types)  # every value typed now: bad ones before compiling
        return found

    def keeps(self, event: Event) -> bool:
        key = (event.gadget, event.source)
        checks = self._checks.get(key)
        if checks is None:
            types = self.layouts.get(key) or {k: type(v) for k, v in event.data.items()}
            checks = self._compile(key, types)
        return all(check(event) for check in checks)

    def _compile(self, key: tuple[str, str], types: Mapping[str, type]) -> tuple[Check, ...]:
        checks: list[Check] = []
        for condition in self.conditions:
            meta = META_FIELDS.get(condition.field)
            if meta is not None:
                checks.append(condition.check(str, meta))
            elif condition.field in types:
                checks.append(condition.check(types[condition.field], _data(condition.field)))
        self._checks[key] = tuple(checks)
        return self._checks[key]


def record_types(
    gadgets: Iterable[Gadget], *, padding: bool = False
) -> dict[tuple[str, str], Mapping[str, type] | None]:
    """Per (gadget, buffer map), the type of each field as decoded (padding members too
    with ``padding``); None for a map whose struct the source does not show plainly."""
    out: dict[tuple[str, str], Mapping[str, type] | None] = {}
    for gadget in gadgets:
        for name, members in buffer_structs(gadget).items():
            fields = [Field(*m) for m in members or ()]
            decoder = None if members is None else build_decoder(fields, padding=padding)
            out[(gadget.name, name)] = None if decoder is None else decoder.value_types()
    return out


def _data(name: str) -> Callable[[Event], Any]:
    return lambda event: event.data.get(name)


def fields_text(layouts: Mapping[tuple[str, str], Mapping[str, type] | None]) -> str:
    """What fields each map has, for an error message."""
    return "; ".join(
        f"{gadget}/{name} has {', '.join(fields) or 'no fields'}"
        for (gadget, name), fields in layouts.items()
        if fields is not None
    )
