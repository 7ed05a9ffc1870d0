"""Which containers (and whether the host) a gadget sees: `--select`, `--exclude`, `--host`.

Forms of an expression (globs are `fnmatch` patterns, case-sensitive):

- `name=GLOB`: the container's name (without Docker's leading "/");
- `id=PREFIX`: a prefix of the container's full hexadecimal id;
- `image=GLOB`: the image as given to `docker run` (`busybox:latest`), tried with and without its
  tag so that `image=busybox` matches `busybox:latest`;
- `label=KEY=GLOB`: the label KEY exists with a value matching GLOB; `label=KEY` only needs KEY.

Semantics: with neither `--select` nor `--host`, every container (but the excluded ones) and the
host are selected. Otherwise a container is selected when some `--select` matches it and no
`--exclude` does, and the host only with `--host` (so `--host` alone means "the host only").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Literal

import attrs

from engine.errors import SelectionError
from engine.sources.containers import Container

Field = Literal["name", "id", "image", "label"]

ACCEPTED_FORMS = "name=GLOB, id=PREFIX, image=GLOB, label=KEY or label=KEY=GLOB"
_HEX = re.compile(r"[0-9a-f]{1,64}")


@attrs.frozen
class Matcher:
    """One parsed expression."""

    field: Field
    pattern: str
    label_key: str | None = None

    @classmethod
    def parse(cls, expression: str) -> Matcher:
        field, sep, value = expression.partition("=")

        def bad(problem: str) -> SelectionError:
            return SelectionError(
                f"bad selection {expression!r}: {problem}; accepted forms: {ACCEPTED_FORMS}"
            )

        if not sep:
            raise bad("missing '='")
        if not value:
            raise bad(f"nothing after '{field}='")
        match field:
            case "name" | "image":
                return cls(field=field, pattern=value)
            case "id":
                if not _HEX.fullmatch(value):
                    raise bad("an id prefix is 1 to 64 lowercase hexadecimal digits")
                return cls(field="id", pattern=value)
            case "label":
                key, has_value, glob = value.partition("=")
                if not key:
                    raise bad("empty label key")
                return cls(field="label", pattern=glob if has_value else "*", label_key=key)
            case _:
                raise bad(f"unknown field {field!r}")

    def matches(self, container: Container) -> bool:
        match self.field:
            case "name":
                return fnmatchcase(container.name, self.pattern)
            case "id":
                return container.id.startswith(self.pattern)
            case "image":
                untagged = _without_tag(container.image)
                return fnmatchcase(container.image, self.pattern) or fnmatchcase(
                    untagged, self.pattern
                )
            case "label":
                labels = container.label_map
                return self.label_key in labels and fnmatchcase(
                    labels[str(self.label_key)], self.pattern
                )


def _without_tag(image: str) -> str:
    # A ":" after the last "/" starts the tag; one before it belongs to a registry's port.
    head, slash, last = image.partition("@")[0].rpartition("/")
    return head + slash + last.partition(":")[0]


@attrs.frozen
class Selection:
    """A parsed selection; `Selection()` selects everything."""

    selects: tuple[Matcher, ...] = ()
    excludes: tuple[Matcher, ...] = ()
    host: bool = False

    @classmethod
    def parse(cls, selects: Sequence[str], excludes: Sequence[str], host: bool) -> Selection:
        """Parse CLI/API expressions; raises SelectionError naming the first bad one."""
        return cls(
            selects=tuple(Matcher.parse(s) for s in selects),
            excludes=tuple(Matcher.parse(e) for e in excludes),
            host=host,
        )

    @property
    def selects_everything(self) -> bool:
        return not self.selects and not self.host

    @property
    def includes_host(self) -> bool:
        return self.host or self.selects_everything

    def matches(self, container: Container) -> bool:
        if any(m.matches(container) for m in self.excludes):
            return False
        return self.selects_everything or any(m.matches(container) for m in self.selects)
