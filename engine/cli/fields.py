"""``--fields a,b,c``: which fields of an event's ``data`` the JSON lines and the table show,
in that order.

A map's events keep the named fields it has, in the order given (none, when it has none of
them). Padding members are not in records (engine.events.decode); naming one brings them
back for the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from engine.errors import FieldsError
from engine.events.decode import is_padding
from engine.events.filter import fields_text, record_types
from engine.gadget.model import Gadget


@attrs.frozen
class FieldChoice:
    names: tuple[str, ...]

    @classmethod
    def parse(cls, text: str | None, gadgets: Iterable[Gadget]) -> FieldChoice | None:
        """The choice ``text`` makes, checked against the gadgets' record structs; None
        without ``--fields``. Raises ``FieldsError``."""
        if text is None:
            return None
        names = tuple(name.strip() for name in text.split(","))
        if not all(names):
            raise FieldsError(text, "is not a comma-separated list of field names")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise FieldsError(text, f"names {', '.join(twice)} more than once")
        layouts = record_types(gadgets, padding=True)
        if any(fields is None for fields in layouts.values()):
            return cls(names)  # some struct is known only once compiled: nothing to check
        known = {name for fields in layouts.values() if fields for name in fields}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise FieldsError(
                text, f"no field {', '.join(map(repr, unknown))}; {fields_text(layouts)}"
            )
        return cls(names)

    @property
    def padding(self) -> bool:
        """Whether a padding member is asked for: the records must keep them."""
        return any(is_padding(name) for name in self.names)

    def pick(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A record's JSON with an event's data cut to the chosen fields; others as they are."""
        out = dict(record)
        data = record.get("data")
        if record.get("type") == "event" and isinstance(data, Mapping):
            out["data"] = {name: data[name] for name in self.names if name in data}
        return out
