"""Every record the engine emits: gadget events and what happens to the engine and the world.

Every record turns into one JSON object with a ``"type"``; these keys are a contract that
users' scripts depend on: extend them, never rename or remove them.

``to_json`` is derived from the attrs fields, in their order: ``{"type": TYPE, field: value...}``.
The few fields that appear otherwise say so in their metadata (`json_as`): under another key,
converted, with further keys computed from the same value, or only when a condition holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs

from engine.errors import AttachError
from engine.netns.handle import NetnsId
from engine.sources.containers import Container

_JSON = "engine.records.json"


@attrs.frozen
class _Json:
    key: str | None
    convert: Callable[[Any], Any] | None
    also: Mapping[str, Callable[[Any], Any]]
    when: Callable[[Any], bool] | None


def json_as(
    *,
    key: str | None = None,
    convert: Callable[[Any], Any] | None = None,
    also: Mapping[str, Callable[[Any], Any]] | None = None,
    when: Callable[[Any], bool] | None = None,
) -> dict[str, _Json]:
    """Field metadata: the field's JSON key under `key` (default: its name), its value through
    `convert`; `also` adds keys computed from the value; `when(record)` false leaves it out."""
    return {_JSON: _Json(key, convert, also or {}, when)}


class Record:
    """Base of every stream record; a subclass is an attrs class that sets ``TYPE``."""

    __slots__ = ()
    TYPE: ClassVar[str]
    __attrs_attrs__: ClassVar[tuple[attrs.Attribute[Any], ...]]  # set by attrs, on subclasses
    _json_fields: ClassVar[tuple[tuple[str, _Json | None], ...]]

    @classmethod
    def __attrs_init_subclass__(cls) -> None:
        # Read once per record class, when attrs has made it: to_json runs for every record.
        cls._json_fields = tuple((f.name, f.metadata.get(_JSON)) for f in attrs.fields(cls))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.TYPE}
        for name, how in self._json_fields:
            value = getattr(self, name)
            if how is None:
                out[name] = value
                continue
            if how.when is not None and not how.when(self):
                continue
            out[how.key or name] = value if how.convert is None else how.convert(value)
            for key, derive in how.also.items():
                out[key] = derive(value)
        return out


def _copy(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(value)


def _inode(netns: NetnsId | None) -> int | None:
    return None if netns is None else netns.inode


# --- gadgets ----------------------------------------------------------------------------------


@attrs.frozen
class Event(Record):
    """One record a gadget wrote to a ring or perf buffer (or an iterator's output).

    `origin`: where the kernel says it was written from (docs/events.md): for a task
    `mntns`, `netns`, `cgroup`, `tgid`; for a packet or an iterator `netns`; `{}` for the
    kernel's own work (an interrupt, a kernel thread); None when not known.
    """

    TYPE = "event"
    gadget: str
    source: str
    program: str | None
    data: Mapping[str, Any] = attrs.field(metadata=json_as(convert=dict))
    container: Mapping[str, Any] | None = attrs.field(default=None, metadata=json_as(convert=_copy))
    origin: Mapping[str, int] | None = attrs.field(default=None, metadata=json_as(convert=_copy))


# Each of Event's slots, set directly (attrs' frozen __init__ goes through a bound
# object.__setattr__ per field, a third of the object's cost on the per-record path).
_EVENT_SLOTS = tuple(Event.__dict__[f.name].__set__ for f in attrs.fields(Event))
_set_gadget, _set_source, _set_program, _set_data, _set_container, _set_origin = _EVENT_SLOTS
_new = object.__new__


def new_event(  # noqa: PLR0917 - Event's own fields, positional as in Event(...)
    gadget: str,
    source: str,
    program: str | None,
    data: Mapping[str, Any],
    container: Mapping[str, Any] | None,
    origin: Mapping[str, int] | None,
) -> Event:
    """The ``Event`` that ``Event(gadget, source, program, data, container, origin)`` makes,
    made faster (Event has no validators or converters to skip): for the buffer readers."""
    event: Event = _new(Event)
    _set_gadget(event, gadget)
    _set_source(event, source)
    _set_program(event, program)
    _set_data(event, data)
    _set_container(event, container)
    _set_origin(event, origin)
    return event


@attrs.frozen
class Lost(Record):
    """Records that never reached consumers: dropped by the kernel or by the engine."""

    TYPE = "lost"
    gadget: str
    source: str
    count: int
    # "kernel" (buffer full), "engine" (a consumer fell behind), "pending" (held while their
    # netns was pending identification, over the per-netns bound) or "hook:<name>"
    where: str


def _entries(entries: tuple[Mapping[str, Any], ...]) -> list[dict[str, Any]]:
    return [dict(e) for e in entries]


@attrs.frozen
class MapSnapshot(Record):
    """The entries of one of a gadget's maps, read at one moment (engine.events.maps).

    ``kind`` is the map's type ("hash", "array", "percpu_hash", "lru_hash"...; per-CPU values
    are summed) or "log2_histogram". Each entry is ``{"key", "value"}`` decoded by their C
    types, with ``"container"`` when the key names a namespace, a cgroup or a process; a
    histogram's entries are its sections (``key`` null, or the key without its ``slot``), each
    ``value`` its buckets ``[{"low", "high", "count"}...]``.
    """

    TYPE = "map"
    gadget: str
    map: str
    kind: str
    entries: tuple[Mapping[str, Any], ...] = attrs.field(metadata=json_as(convert=_entries))


@attrs.frozen
class ProgramSkipped(Record):
    """An optional program that this kernel cannot run was left out."""

    TYPE = "program_skipped"
    gadget: str
    program: str
    kind: str
    reason: str


@attrs.frozen
class GadgetFailed(Record):
    """A gadget could not be parsed, compiled, loaded or attached; the other gadgets go on."""

    TYPE = "gadget_failed"
    gadget: str
    path: str
    error: str
    error_type: str

    @classmethod
    def from_error(cls, gadget: str, path: str, error: Exception) -> GadgetFailed:
        return cls(gadget, path, str(error), type(error).__name__)


# --- program lifecycle ------------------------------------------------------------------------


def _static(record: ProgramRecord) -> bool:
    return record.netns is None


def _per_netns(record: ProgramRecord) -> bool:
    return record.netns is not None


@attrs.frozen(kw_only=True)
class ProgramRecord(Record):
    """What happened to `program` (a function of `gadget`) of `kind` ("tracepoint", "socket",
    "classifier/ingress", "iter/tcp"...).

    A static program runs once for the whole machine, at `target`, and has no `netns`. A
    per-netns one runs in `netns`; `interface` is the host-side interface for a classifier,
    `container` the name of the container whose netns it is, `speculative` true when the
    attachment was made while the netns was pending identification (docs/events.md).
    """

    gadget: str
    program: str
    kind: str
    target: str | None = attrs.field(default=None, metadata=json_as(when=_static))
    netns: NetnsId | None = attrs.field(default=None, metadata=json_as(convert=_inode))
    interface: str | None = None
    container: str | None = None
    speculative: bool = False


@attrs.frozen(kw_only=True)
class ProgramAttached(ProgramRecord):
    """The program now runs. `latency` (per-netns only): seconds from when the engine saw the
    netns to this attachment being in place."""

    TYPE = "attached"
    latency: float | None = attrs.field(default=None, metadata=json_as(when=_per_netns))

    def detached(self, container: str | None) -> ProgramDetached:
        """The record of this attachment's end; `container` as the netns is known by then."""
        # Field by field: attrs.asdict took ~60 us a record, three per netns under churn.
        return ProgramDetached(
            gadget=self.gadget,
            program=self.program,
            kind=self.kind,
            target=self.target,
            netns=self.netns,
            interface=self.interface,
            container=container,
            speculative=self.speculative,
        )


@attrs.frozen(kw_only=True)
class ProgramDetached(ProgramRecord):
    """A per-netns attachment is gone (its netns stopped being traced, or the engine stops)."""

    TYPE = "detached"


def _errno(error: AttachError) -> int | None:
    return error.errno


@attrs.frozen(kw_only=True)
class AttachFailed(ProgramRecord):
    """A per-netns attachment could not be made; the engine goes on with the others."""

    TYPE = "attach_failed"
    error: AttachError = attrs.field(metadata=json_as(convert=str, also={"errno": _errno}))


# --- containers, runtimes and network namespaces ----------------------------------------------


@attrs.frozen
class ContainerRecord(Record):
    """Something happened to `container`."""

    container: Container = attrs.field(metadata=json_as(convert=Container.to_json))


@attrs.frozen
class ContainerAdded(ContainerRecord):
    """A container is running (seen at start, started, or found when re-listing)."""

    TYPE = "container_added"


@attrs.frozen
class ContainerRemoved(ContainerRecord):
    """A container stopped or vanished; `reason` says how we learned it (e.g. "die")."""

    TYPE = "container_removed"
    reason: str


@attrs.frozen
class ContainerPaused(ContainerRecord):
    TYPE = "container_paused"


@attrs.frozen
class ContainerUnpaused(ContainerRecord):
    TYPE = "container_unpaused"


@attrs.frozen
class ContainerRenamed(ContainerRecord):
    TYPE = "container_renamed"
    old_name: str


@attrs.frozen
class SourceConnected(Record):
    """A source reached its runtime (`docker`, `containerd`, `podman`) for the first time;
    the containers running there were sent just before. `at` is wall-clock time (seconds
    since the epoch)."""

    TYPE = "source_connected"
    source: str
    at: float
    runtime: str


@attrs.frozen
class SourceDisconnected(Record):
    """A source lost its runtime (or found none at start: an absent runtime is not an error,
    the source keeps trying); its containers are kept until it reconnects and re-lists. `at`
    is wall-clock time (seconds since the epoch)."""

    TYPE = "source_disconnected"
    source: str
    at: float
    error: str
    runtime: str


@attrs.frozen
class SourceReconnected(Record):
    """A source is following its runtime again; changes during the gap were sent just before."""

    TYPE = "source_reconnected"
    source: str
    disconnected_at: float
    at: float
    runtime: str


ContainerEvent = (
    ContainerAdded
    | ContainerRemoved
    | ContainerPaused
    | ContainerUnpaused
    | ContainerRenamed
    | SourceConnected
    | SourceDisconnected
    | SourceReconnected
)


def _never(_record: Any) -> bool:
    return False


@attrs.frozen
class NetnsAdded(Record):
    """A netns exists: `path` reached it when seen; `name` is its `ip netns` name, if any.

    `existed`: how long the netns is known to have existed already when it was reported, in
    seconds (the age of the process `path` names, for a netns found through a process only;
    0 otherwise). Not in the JSON: the world uses it to tell a netns a runtime is about to
    report from one no runtime will (engine/world/state.py, ``add_netns``).
    """

    TYPE = "netns_added"
    netns_id: NetnsId = attrs.field(metadata=json_as(key="netns", convert=_inode))
    path: str
    name: str | None
    existed: float = attrs.field(default=0.0, metadata=json_as(when=_never))


@attrs.frozen
class NetnsRemoved(Record):
    TYPE = "netns_removed"
    netns_id: NetnsId = attrs.field(metadata=json_as(key="netns", convert=_inode))


NetnsEvent = NetnsAdded | NetnsRemoved


# --- hooks and selection ----------------------------------------------------------------------


@attrs.frozen
class HookFailed(Record):
    """A hook raised while handling a record; the engine kept running."""

    TYPE = "hook_failed"
    hook: str
    error_type: str
    message: str
    record_type: str


@attrs.frozen
class SelectionChanged(Record):
    """The engine's container selection was replaced at run time (``Engine.set_selection``)."""

    TYPE = "selection_changed"
    select: tuple[str, ...] = attrs.field(metadata=json_as(convert=list))
    exclude: tuple[str, ...] = attrs.field(metadata=json_as(convert=list))
    host: bool
