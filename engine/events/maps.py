"""A gadget's hash, array and histogram maps as output: ``MapSnapshot`` records.

Many of bcc's programs write nothing per event: ``syscount``, ``runqlat``, ``softirqs``
aggregate in maps that their Python side prints on an interval. ``MapOutput`` does that for
every gadget: each map of type hash, array (per-CPU and LRU variants too) is read every
``interval`` seconds, and once more when the engine stops, and emitted as one record:

- keys and values are decoded by their C types as bcc describes them (the description bcc
  keeps for each table, as it does for the structs written to buffers), with the rules of
  engine.events.decode (``char[N]`` a string, ``*addr`` fields dotted IPv4...);
- per-CPU values are summed over the CPUs (numbers, and the number fields of a struct);
- an array's entries whose value is all zero bytes are left out (an array has every index);
- a histogram (``BPF_HISTOGRAM``: a slot per key, or a struct key with a ``slot`` field) is
  emitted as log2 buckets per section, as bcc's ``print_log2_hist`` counts them;
- an entry whose key names a mount namespace, a netns or a cgroup (fields ``mntns_id``,
  ``netns_id``, ``cgroup_id``...) or a process (``pid``, ``tgid``) carries its container.

With ``clear``, each map is emptied as it is read, so each record holds one interval, as
``syscount`` prints them: a hash entry is read and deleted in one step (nothing counted
between the two is lost), an array entry is zeroed once read (arrays cannot do both at once).
The engine's own maps (``engine_*``) are never emitted.
"""

from __future__ import annotations

import ctypes as ct
import errno
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import trio

from engine.bcc import libbcc
from engine.bcc.loader import LoadedGadget
from engine.events.decode import Field, build_decoder
from engine.events.outlet import Outlet
from engine.events.pump import buffer_maps
from engine.gadget.maps import histogram_maps
from engine.records import MapSnapshot
from engine.world.state import World

log = logging.getLogger(__name__)

_KINDS = {1: "hash", 2: "array", 5: "percpu_hash", 6: "percpu_array", 9: "lru_hash"}
_KINDS[10] = "lru_percpu_hash"
_PER_CPU = frozenset({5, 6, 10})
_ARRAYS = frozenset({2, 6})
_ORIGIN_FIELDS = ("mntns_id", "mntns", "netns_id", "netns", "cgroup_id")
_PROCESS_FIELDS = ("pid", "tgid")
HISTOGRAM = "log2_histogram"

Decode = Callable[[bytes], Any]


@attrs.frozen
class OutputMap:
    """One map of a gadget that is emitted, with how to read and decode it."""

    name: str
    kind: str
    fd: int
    key_size: int
    value_size: int
    per_cpu: bool
    array: bool
    key: Decode = attrs.field(repr=False)
    value: Decode = attrs.field(repr=False)


def output_maps(loaded: LoadedGadget) -> list[OutputMap]:
    """The gadget's maps that can be emitted, in definition order."""
    lib = libbcc.lib()
    module = loaded.bpf.module
    histograms = histogram_maps(loaded.gadget)
    out = []
    for i in range(lib.bpf_num_tables(module)):
        name = lib.bpf_table_name(module, i).decode()
        type_id = lib.bpf_table_type_id(module, i)
        if type_id not in _KINDS or name.startswith("engine_"):
            continue
        raw = name.encode()
        key_desc = json.loads(lib.bpf_table_key_desc(module, raw))
        out.append(
            OutputMap(
                name=name,
                kind=HISTOGRAM
                if name in histograms and _is_histogram(key_desc)
                else _KINDS[type_id],
                fd=lib.bpf_table_fd(module, raw),
                key_size=lib.bpf_table_key_size(module, raw),
                value_size=lib.bpf_table_leaf_size(module, raw),
                per_cpu=type_id in _PER_CPU,
                array=type_id in _ARRAYS,
                key=decoder_of(key_desc),
                value=decoder_of(json.loads(lib.bpf_table_leaf_desc(module, raw))),
            )
        )
    return out


def _is_histogram(key_desc: Any) -> bool:
    return isinstance(key_desc, str) or any(f[0] == "slot" for f in key_desc[1])


def decoder_of(desc: Any) -> Decode:
    """A decoder for a key or value that bcc describes as ``desc`` (its JSON description).

    A scalar decodes to a number, a struct of scalars and arrays to a dict by the rules of
    engine.events.decode; nested structs, unions and bitfields through ctypes, to dicts and
    lists of numbers.
    """
    if isinstance(desc, str):
        single = build_decoder([Field("value", desc)])
        return lambda raw: single.decode(raw)["value"]
    fields = [_flat_field(f) for f in desc[1]]
    if len(desc) < 3 or desc[2] != "struct" or None in fields:
        import bcc  # Debian's python3-bpfcc, loaded with the gadget already

        ctype = bcc.BPF._decode_table_type(desc)
        return lambda raw: _plain(ctype.from_buffer_copy(raw.ljust(ct.sizeof(ctype), b"\0")))
    # bcc describes the padding it sees as members "__pad_N": left out with the gadget's own.
    return build_decoder([f for f in fields if f is not None]).decode


def _flat_field(field: Sequence[Any]) -> Field | None:
    """A struct member as decode.Field: ``[name, type]`` or ``[name, type, [n]]``."""
    if len(field) == 2 and isinstance(field[1], str):
        return Field(field[0], field[1])
    dims = field[2] if len(field) == 3 else None
    if isinstance(field[1], str) and isinstance(dims, list) and len(dims) == 1:
        return Field(field[0], f"{field[1]}[{dims[0]}]")
    return None


def _plain(value: Any) -> Any:
    """A ctypes value as plain data: structs to dicts, arrays to lists (chars to a string)."""
    if isinstance(value, ct.Array):
        if value._type_ is ct.c_char:
            return bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace")
        return [_plain(v) for v in value]
    if isinstance(value, ct.Structure | ct.Union):
        out: dict[str, Any] = {}
        for spec in value._fields_:
            name = spec[0]
            item = _plain(getattr(value, name))
            if name in getattr(value, "_anonymous_", ()) and isinstance(item, dict):
                out.update(item)
            else:
                out[name] = item
        return out
    if isinstance(value, bytes):  # ctypes gives a char array member as bytes, a char as one
        if len(value) == 1:
            return int.from_bytes(value, "little", signed=True)
        return value.split(b"\0", 1)[0].decode("utf-8", "replace")
    return value


def read_map(m: OutputMap, cpus: int, *, clear: bool) -> list[tuple[Any, Any]]:
    """(key, value) of every entry, decoded and summed over CPUs (blocking); emptied with
    ``clear``."""
    lib = libbcc.lib()
    stride = (m.value_size + 7) & ~7
    value = ct.create_string_buffer(stride * cpus if m.per_cpu else m.value_size)
    zero = ct.create_string_buffer(len(value))
    out: list[tuple[Any, Any]] = []
    # Listed first: a key deleted while listing would restart the listing from the start.
    for key in _keys(lib, m):
        if not _take(lib, m, key, value, clear=clear):
            continue  # deleted since it was listed
        if clear and m.array:
            lib.bpf_update_elem(m.fd, key, zero, 0)
        raw = value.raw
        if m.array and not raw.strip(b"\0"):
            continue
        if m.per_cpu:
            values = [m.value(raw[c * stride : c * stride + m.value_size]) for c in range(cpus)]
            out.append((m.key(key.raw), _summed(values)))
        else:
            out.append((m.key(key.raw), m.value(raw)))
    return out


def _take(lib: Any, m: OutputMap, key: Any, value: Any, *, clear: bool) -> bool:
    """Read the entry at ``key`` into ``value``; with ``clear``, a hash entry is read and
    deleted in one step (what is counted meanwhile is never lost), where the kernel can."""
    if clear and not m.array:
        if lib.bpf_lookup_and_delete(m.fd, key, value) == 0:
            return True
        if ct.get_errno() == errno.ENOENT:
            return False
        # Older kernels (before 5.14) cannot for every kind of hash: read, then delete.
        found = bool(lib.bpf_lookup_elem(m.fd, key, value) == 0)
        lib.bpf_delete_elem(m.fd, key)
        return found
    return bool(lib.bpf_lookup_elem(m.fd, key, value) == 0)


def _keys(lib: Any, m: OutputMap) -> list[Any]:
    keys: list[Any] = []
    previous = None
    while True:
        key = ct.create_string_buffer(m.key_size)
        if lib.bpf_get_next_key(m.fd, previous, key) != 0:
            return keys
        keys.append(key)
        previous = key


def _summed(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, int) and not isinstance(first, bool):
        return sum(values)
    if isinstance(first, dict):
        return {
            k: sum(v[k] for v in values) if _number(item) else item for k, item in first.items()
        }
    return first


def _number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def histogram_entries(entries: Sequence[tuple[Any, Any]]) -> list[dict[str, Any]]:
    """A log2 histogram's (slot key, count) entries as sections of buckets.

    Buckets run from slot 1 (slot 0 too when it has a count: ``bpf_log2l`` never gives 0)
    to the highest slot with a count, each ``{"low", "high", "count"}`` as bcc prints them.
    """
    sections: dict[str, tuple[Any, dict[int, int]]] = {}
    for key, count in entries:
        if isinstance(key, dict):
            slot = int(key["slot"])
            section: Any = {k: v for k, v in key.items() if k != "slot"}
        else:
            slot, section = int(key), None
        label = json.dumps(section, sort_keys=True)
        sections.setdefault(label, (section, {}))[1][slot] = int(count)
    out = []
    for label in sorted(sections):
        section, counts = sections[label]
        first = 0 if counts.get(0) else 1
        buckets = [
            {**_bucket(slot), "count": counts.get(slot, 0)}
            for slot in range(first, max(counts) + 1)
        ]
        out.append({"key": section, "value": buckets})
    return out


def _bucket(slot: int) -> dict[str, int]:
    low, high = (1 << slot) >> 1, (1 << slot) - 1
    if slot and low == high:
        low -= 1
    return {"low": low, "high": high}


def _possible_cpus() -> int:
    text = open("/sys/devices/system/cpu/possible").read().strip()  # noqa: SIM115
    return sum(
        int(last or first) - int(first) + 1
        for first, _, last in (part.partition("-") for part in text.split(","))
    )


def _mntns_of_processes(pids: set[int]) -> dict[int, int]:
    """The mount namespace of each process still running (read from /proc)."""
    out = {}
    for pid in pids:
        try:
            out[pid] = os.stat(f"/proc/{pid}/ns/mnt").st_ino
        except OSError:
            continue
    return out


@attrs.define
class MapOutput:
    """Emits the maps of ``gadgets`` every ``interval`` seconds (never, when None) and once
    when the engine stops. ``run`` is a long-running task."""

    gadgets: Sequence[tuple[LoadedGadget, Sequence[OutputMap]]]
    outlet: Outlet
    world: World
    interval: float | None
    clear: bool = False
    _cpus: int = attrs.field(factory=_possible_cpus, init=False)

    @classmethod
    def of(
        cls,
        loaded: Sequence[LoadedGadget],
        outlet: Outlet,
        world: World,
        *,
        interval: float | None,
        clear: bool = False,
    ) -> MapOutput:
        """Every gadget's maps with an ``interval``; without one, at stop, the maps of the
        gadgets that write no buffer (their maps are all they have to say)."""
        lib = libbcc.lib()
        chosen = [g for g in loaded if interval is not None or not buffer_maps(lib, g.bpf.module)]
        gadgets = [(g, maps) for g in chosen if (maps := output_maps(g))]
        return cls(gadgets, outlet, world, interval, clear)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            if self.interval is None:
                await trio.sleep_forever()
            while True:
                await trio.sleep(self.interval)
                await self.emit()
        finally:
            # The last picture, also when the engine is stopped in the middle of an interval.
            with trio.CancelScope(shield=True):
                await self.emit()

    async def emit(self) -> None:
        """One record per map, read now."""
        for loaded, maps in self.gadgets:
            for m in maps:
                entries = await loaded.call(read_map, m, self._cpus, clear=self.clear)
                self.outlet.put(await self._snapshot(loaded.gadget.name, m, entries))

    async def _snapshot(
        self, gadget: str, m: OutputMap, entries: list[tuple[Any, Any]]
    ) -> MapSnapshot:
        rows = [{"key": k, "value": v} for k, v in entries]
        if m.kind == HISTOGRAM:
            rows = histogram_entries(entries)  # a section's key names its origin, if any
        keys = [row["key"] for row in rows]
        if any(isinstance(k, dict) and _names_origin(k) for k in keys):
            pids = {pid for k in keys if (pid := _first(k, _PROCESS_FIELDS)) is not None}
            mntns = await trio.to_thread.run_sync(_mntns_of_processes, pids)
            for row in rows:
                row["container"] = self._container(row["key"], mntns)
        return MapSnapshot(gadget, m.name, m.kind, tuple(rows))

    def _container(self, key: Any, mntns: Mapping[int, int]) -> Any:
        if not isinstance(key, dict):
            return None
        found = self.world.container_for(key)
        if found is None:
            pid = _first(key, _PROCESS_FIELDS)
            inode = None if pid is None else mntns.get(pid)
            found = None if inode is None else self.world.container_for({"mntns_id": inode})
        return None if found is None else self.world.container_json(found)


def _names_origin(key: Mapping[str, Any]) -> bool:
    return any(f in key for f in (*_ORIGIN_FIELDS, *_PROCESS_FIELDS))


def _first(key: Any, fields: Sequence[str]) -> int | None:
    if not isinstance(key, dict):
        return None
    for f in fields:
        value = key.get(f)
        if _number(value) and value:
            return int(value)
    return None
