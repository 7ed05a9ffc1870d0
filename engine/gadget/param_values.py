"""The values given to gadget parameters (``--param``, ``open_engine(params=...)``), checked
against what the gadgets declare (engine.gadget.params) before anything is compiled.

A value is given by the parameter's name, or by ``GADGET:NAME`` (the gadget's file name
without ``.c``); a name that several gadgets declare must be given the second way. Values are
text (``"4096"``, ``"0x1000"``, ``"true"``) or Python ints and bools.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from engine.errors import ParamError
from engine.gadget.model import Gadget
from engine.gadget.params import Param, Value

SEPARATOR = ":"

# Per gadget name: the values given to its parameters (the others keep their defaults).
Values = dict[str, dict[str, Value]]


def parse_assignments(texts: Sequence[str]) -> dict[str, str]:
    """``NAME=VALUE`` and ``GADGET:NAME=VALUE`` texts, by the name they give."""
    given: dict[str, str] = {}
    for text in texts:
        name, equals, value = text.partition("=")
        name = name.strip()
        if not equals or not name:
            raise ParamError(text, "is not NAME=VALUE or GADGET:NAME=VALUE")
        if name in given:
            raise ParamError(text, f"{name} is given twice")
        given[name] = value
    return given


def declared(gadget: Gadget) -> str:
    """What ``gadget`` declares, for an error message."""
    if not gadget.params:
        return f"{gadget.name} has no parameters"
    return f"{gadget.name} has " + ", ".join(f"{p.name} ({p.type.name})" for p in gadget.params)


def resolve_values(given: Mapping[str, object], gadgets: Iterable[Gadget]) -> Values:
    """The values ``given``, by gadget and parameter, each as its parameter's type holds it.

    Raises ParamError for a name no gadget declares, one that several declare unqualified,
    and a value that is not of its parameter's type.
    """
    gadgets = list(gadgets)
    values: Values = {}
    for key, value in given.items():
        expression = f"{key}={value}"
        gadget, name = _target(key, expression, gadgets)
        param = find_param(gadget, name, expression)
        values.setdefault(gadget.name, {})[param.name] = checked(param, gadget, value, expression)
    return values


def checked(param: Param, gadget: Gadget, value: object, expression: str) -> Value:
    """``value`` as ``param`` holds it; ParamError saying why it cannot be."""
    try:
        return param.type.value_of(value)
    except (TypeError, ValueError) as exc:
        raise ParamError(expression, f"{exc}, for {gadget.name}:{param.name}") from None


def find_param(gadget: Gadget, name: str, expression: str) -> Param:
    """``gadget``'s parameter ``name``; ParamError listing its parameters if it has none so."""
    param = gadget.param(name)
    if param is None:
        raise ParamError(expression, f"no parameter {name!r}: {declared(gadget)}")
    return param


def _target(key: str, expression: str, gadgets: Sequence[Gadget]) -> tuple[Gadget, str]:
    """The gadget ``key`` gives a value to, and the parameter's name."""
    qualifier, separator, name = key.rpartition(SEPARATOR)
    if separator:
        named = [g for g in gadgets if g.name == qualifier]
        if not named:
            loaded = ", ".join(g.name for g in gadgets)
            raise ParamError(expression, f"no gadget {qualifier!r} (gadgets: {loaded})")
        return named[0], name
    having = [g for g in gadgets if g.param(name) is not None]
    if not having:
        every = "; ".join(declared(g) for g in gadgets)
        raise ParamError(expression, f"no gadget declares parameter {name!r}: {every}")
    if len(having) > 1:
        choices = " or ".join(f"{g.name}{SEPARATOR}{name}" for g in having)
        raise ParamError(expression, f"{name!r} is declared by several gadgets: give {choices}")
    return having[0], name
