"""Lifecycle records of per-netns attachments, for the engine's event stream."""

from __future__ import annotations

from typing import Any

import attrs

from engine.errors import AttachError
from engine.netns import NetnsId


def _base(
    kind_of_record: str,
    *,
    program: str,
    kind: str,
    netns: NetnsId,
    interface: str | None,
    container: str | None,
    gadget: str | None,
    speculative: bool,
) -> dict[str, Any]:
    return {
        "type": kind_of_record,
        "gadget": gadget,
        "program": program,
        "kind": kind,
        "netns": netns.inode,
        "interface": interface,
        "container": container,
        "speculative": speculative,
    }


def _fields(record: Attached | Detached | AttachFailed) -> dict[str, Any]:
    return {
        "program": record.program,
        "kind": record.kind,
        "netns": record.netns,
        "interface": record.interface,
        "container": record.container,
        "gadget": record.gadget,
        "speculative": record.speculative,
    }


@attrs.frozen
class Attached:
    """`program` (a function of `gadget`) of `kind` ("socket", "classifier/ingress",
    "iter/tcp"...) now runs for `netns`; `interface` is the host-side interface for a
    classifier. `latency`: seconds from when the engine saw the netns to this attachment
    being in place. `speculative`: made while the netns was pending identification (before
    the runtime said whose it is; docs/events.md)."""

    program: str
    kind: str
    netns: NetnsId
    interface: str | None = None
    container: str | None = None
    gadget: str | None = None
    latency: float | None = None
    speculative: bool = False

    def to_json(self) -> dict[str, Any]:
        out = _base("attached", **_fields(self))
        out["latency"] = self.latency
        return out


@attrs.frozen
class Detached:
    program: str
    kind: str
    netns: NetnsId
    interface: str | None = None
    container: str | None = None
    gadget: str | None = None
    speculative: bool = False

    def to_json(self) -> dict[str, Any]:
        return _base("detached", **_fields(self))


@attrs.frozen
class AttachFailed:
    program: str
    kind: str
    netns: NetnsId
    interface: str | None
    error: AttachError
    container: str | None = None
    gadget: str | None = None
    speculative: bool = False

    def to_json(self) -> dict[str, Any]:
        out = _base("attach_failed", **_fields(self))
        out["error"] = str(self.error)
        out["errno"] = self.error.errno
        return out
