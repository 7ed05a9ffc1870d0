"""The C half of gadget parameters, and the map that holds their values (engine.gadget.params).

For a gadget that declares parameters, start-up (engine.attach.startup) hands the loader, as
extra source compiled before the gadget's own text, a struct with one member per parameter, a
one-slot array map of it (``engine_params``), a ``static __always_inline`` reader per
parameter and the two macros:

- ``ENGINE_PARAM(TYPE, NAME, DEFAULT, "DESCRIPTION");`` becomes a ``_Static_assert`` on
  the description: a file-scope declaration that holds nothing, since the value is in the map;
- ``ENGINE_PARAM_GET(NAME)`` calls the reader, which looks the slot up on every call, so that
  a value written while the programs run is read by their next run.

The readers are plain functions in the engine's text rather than macro expansions in the
gadget's, because bcc rewrites a map's ``.lookup`` in the text it is given, not in macro
expansions. The slot is written (the defaults, with the values given at start over them)
after loading and before anything is attached, and again by ``Engine.set_param``; bcc's
table gives the struct's ctypes layout, so Python never repeats it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from engine.errors import EngineStoppedError
from engine.gadget.params import Param, Value

if TYPE_CHECKING:
    from engine.bcc.loader import LoadedGadget

MAP = "engine_params"
_STRUCT = "struct engine_params"


def _literal(value: Value) -> str:
    number = int(value)
    # -9223372036854775808 is not a C literal: the minus applies to a number too large.
    return f"({number + 1}LL - 1)" if number < 0 else f"{number}ULL"


def params_source(params: Sequence[Param]) -> list[str]:
    """The C text for ``params``: nothing for a gadget that declares none."""
    if not params:
        return []
    members = "".join(f"    {p.type.name} {p.name};\n" for p in params)
    readers = "".join(
        f"static __always_inline {p.type.name} engine_param__{p.name}(void)\n"
        "{\n"
        "    u32 zero = 0;\n"
        f"    {_STRUCT} *p = {MAP}.lookup(&zero);\n"
        f"    return p ? p->{p.name} : ({p.type.name}){_literal(p.default)};\n"
        "}\n"
        for p in params
    )
    return [
        "/* The gadget's parameters (engine/bcc/params.py). */\n"
        f"{_STRUCT} {{\n{members}}};\n"
        f"BPF_ARRAY({MAP}, {_STRUCT}, 1);\n"
        f"{readers}"
        "#define ENGINE_PARAM(type, name, value, description) _Static_assert(1, description)\n"
        "#define ENGINE_PARAM_GET(name) engine_param__##name()\n"
    ]


async def write_params(loaded: LoadedGadget, values: Mapping[str, Value]) -> None:
    """Write ``values`` over the gadget's current ones into its slot, in a worker thread
    under the gadget's lock (bcc's tables are not safe to touch beside a hook or an attach)."""
    await loaded.call(_write, loaded, values)


def _write(loaded: LoadedGadget, values: Mapping[str, Value]) -> None:
    if loaded.closed:
        raise EngineStoppedError(f"gadget {loaded.gadget.name} is unloaded: no parameters to set")
    # Merged under the lock: two writers at once each keep the other's value.
    wanted = {**loaded.params, **values}
    table = loaded.bpf.get_table(MAP)
    slot = table.Leaf()
    for name, value in wanted.items():
        setattr(slot, name, value)
    table[table.Key(0)] = slot
    loaded.params = wanted
