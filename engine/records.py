"""Records the engine emits: gadget events and what happens to the engine itself.

Every record turns into one JSON object with a ``"type"``; these keys are a contract that
users' scripts depend on: extend them, never rename or remove them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import attrs


class Record(Protocol):
    def to_json(self) -> dict[str, Any]: ...


@attrs.frozen
class Event:
    """One record a gadget wrote to a ring or perf buffer (or an iterator's output)."""

    gadget: str
    source: str
    program: str | None
    data: Mapping[str, Any]
    container: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "event",
            "gadget": self.gadget,
            "source": self.source,
            "program": self.program,
            "data": dict(self.data),
            "container": None if self.container is None else dict(self.container),
        }


@attrs.frozen
class Lost:
    """Records that never reached consumers: dropped by the kernel or by the engine."""

    gadget: str
    source: str
    count: int
    # "kernel" (buffer full), "engine" (a consumer fell behind) or "pending" (held while
    # their netns was pending identification, over the per-netns bound)
    where: str

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "lost",
            "gadget": self.gadget,
            "source": self.source,
            "count": self.count,
            "where": self.where,
        }


@attrs.frozen
class ProgramSkipped:
    """An optional program that this kernel cannot run was left out."""

    gadget: str
    program: str
    kind: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "program_skipped",
            "gadget": self.gadget,
            "program": self.program,
            "kind": self.kind,
            "reason": self.reason,
        }


@attrs.frozen
class ProgramAttached:
    """A static program is attached (once, for the life of the engine)."""

    gadget: str
    program: str
    kind: str
    target: str

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "attached",
            "gadget": self.gadget,
            "program": self.program,
            "kind": self.kind,
            "target": self.target,
            "netns": None,
            "interface": None,
            "container": None,
            "speculative": False,
        }


@attrs.frozen
class GadgetFailed:
    """A gadget could not be parsed, compiled, loaded or attached; the other gadgets go on."""

    gadget: str
    path: str
    error: str
    error_type: str

    @classmethod
    def from_error(cls, gadget: str, path: str, error: Exception) -> GadgetFailed:
        return cls(gadget, path, str(error), type(error).__name__)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "gadget_failed",
            "gadget": self.gadget,
            "path": self.path,
            "error": self.error,
            "error_type": self.error_type,
        }
