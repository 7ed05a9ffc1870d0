"""MapView: a hook's handle on one map of a loaded gadget."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from engine.bcc import libbcc

if TYPE_CHECKING:
    from engine.bcc.loader import LoadedGadget


@attrs.frozen
class MapView:
    """One map of a loaded gadget; every call runs in a worker thread under the gadget's lock.

    ``table`` is bcc's table object, for anything not wrapped here: use it only through
    ``call``, since bcc's objects are not thread-safe.
    """

    loaded: LoadedGadget
    name: str

    @classmethod
    def of(cls, loaded: LoadedGadget, name: str) -> MapView:
        """The view of map `name`; KeyError when the gadget has no such map."""
        lib = libbcc.lib()
        module = loaded.bpf.module
        names = (lib.bpf_table_name(module, i).decode() for i in range(lib.bpf_num_tables(module)))
        if name not in names:
            raise KeyError(f"gadget {loaded.gadget.name!r} has no map {name!r}")
        return cls(loaded, name)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(table, *args)`` in a worker thread under the gadget's lock."""
        bpf, name = self.loaded.bpf, self.name
        return await self.loaded.call(lambda: fn(bpf.get_table(name), *args))

    async def items(self) -> list[tuple[Any, Any]]:
        """A snapshot of (key, value) pairs as bcc's ctypes values."""
        return list(await self.call(lambda table: list(table.items())))

    async def get(self, key: Any) -> Any:
        """The value for ``key``, or None when the map has no such key."""

        def lookup(table: Any) -> Any:
            try:
                return table[table.Key(key) if isinstance(key, int) else key]
            except KeyError:
                return None

        return await self.call(lookup)

    async def clear(self) -> None:
        await self.call(lambda table: table.clear())
