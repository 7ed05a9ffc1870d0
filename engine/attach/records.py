"""Lifecycle records of per-netns attachments, for the engine's event stream."""

from __future__ import annotations

import attrs

from engine.errors import AttachError
from engine.netns import NetnsId


@attrs.frozen
class Attached:
    """`program` (a gadget function) of `kind` ("socket", "classifier/ingress", "iter/tcp"...)
    now runs for `netns`; `interface` is the host-side interface for a classifier."""

    program: str
    kind: str
    netns: NetnsId
    interface: str | None = None
    container: str | None = None


@attrs.frozen
class Detached:
    program: str
    kind: str
    netns: NetnsId
    interface: str | None = None
    container: str | None = None


@attrs.frozen
class AttachFailed:
    program: str
    kind: str
    netns: NetnsId
    interface: str | None
    error: AttachError
    container: str | None = None
