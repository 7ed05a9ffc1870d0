"""Hook files for ``engine run --hook FILE.py``: plain Python files that define hooks.

A hook file defines any of these at top level::

    async def on_event(event): ...               # every gadget event
    async def on_container_added(container): ...
    async def on_container_removed(container): ...
    def setup(engine): ...                       # or async def: anything else, e.g.
                                                 # @engine.on_event("events") hooks

Everything that is wrong with a file (it cannot be read, does not compile, raises while it
is imported or in ``setup``, defines no hooks, defines a hook that is not ``async def``) is a
``HookFileError`` naming the file and line.
"""

from __future__ import annotations

import inspect
import sys
import traceback
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from engine.errors import HookFileError

if TYPE_CHECKING:
    from engine.engine import Engine

HOOK_FUNCTIONS = ("on_event", "on_container_added", "on_container_removed")
EXPECTED = (
    "expected a top-level async def on_event(event), on_container_added(container), "
    "on_container_removed(container), or def setup(engine)"
)


def _line_in(path: str, exc: BaseException) -> int:
    """The last line of ``path`` in the traceback of ``exc`` (0 if the file is not in it)."""
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    return (lines[-1] or 0) if lines else 0


def _first_line(fn: object) -> int:
    code = getattr(fn, "__code__", None)
    return int(code.co_firstlineno) if code is not None else 0


@attrs.frozen
class HookFile:
    """The hooks one file defines, ready to be installed on a running engine."""

    path: str
    hooks: dict[str, Callable[[Any], Awaitable[object]]]
    setup: Callable[[Engine], object] | None

    @classmethod
    def load(cls, path: str) -> HookFile:
        """Read, compile and run the file as a module; raises ``HookFileError``."""
        try:
            source = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise HookFileError(path, 0, f"cannot read: {exc}") from exc
        try:
            code = compile(source, path, "exec")
        except SyntaxError as exc:
            raise HookFileError(path, exc.lineno or 0, f"syntax error: {exc.msg}") from exc
        module = types.ModuleType(f"engine_hooks_{Path(path).stem}")
        module.__file__ = path
        # Registered so that dataclasses, pickling and tracebacks find the module by name.
        sys.modules[module.__name__] = module
        try:
            exec(code, module.__dict__)
        except Exception as exc:
            raise HookFileError(path, _line_in(path, exc), f"{type(exc).__name__}: {exc}") from exc
        return cls._from_namespace(path, module.__dict__)

    @classmethod
    def _from_namespace(cls, path: str, namespace: dict[str, Any]) -> HookFile:
        hooks: dict[str, Callable[[Any], Awaitable[object]]] = {}
        for name in HOOK_FUNCTIONS:
            fn = namespace.get(name)
            if fn is None:
                continue
            if not inspect.iscoroutinefunction(fn):
                raise HookFileError(
                    path, _first_line(fn), f"{name} must be an async function (async def {name})"
                )
            hooks[name] = fn
        setup = namespace.get("setup")
        if setup is not None and not callable(setup):
            raise HookFileError(path, 0, "setup must be a function taking the engine")
        if not hooks and setup is None:
            raise HookFileError(path, 1, f"defines no hooks: {EXPECTED}")
        return cls(path, hooks, setup)

    async def install(self, engine: Engine) -> None:
        """Register the hooks on ``engine`` and run ``setup(engine)``."""
        for name, fn in self.hooks.items():
            label = f"{Path(self.path).name}:{name}"
            if name == "on_event":
                engine.on_event(name=label)(fn)
            elif name == "on_container_added":
                engine.on_container_added(_named(fn, label))
            else:
                engine.on_container_removed(_named(fn, label))
        if self.setup is None:
            return
        try:
            result = self.setup(engine)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            raise HookFileError(
                self.path, _line_in(self.path, exc), f"setup failed: {type(exc).__name__}: {exc}"
            ) from exc


def _named(
    fn: Callable[[Any], Awaitable[object]], label: str
) -> Callable[[Any], Awaitable[object]]:
    """``fn`` under the name ``label`` in records, without touching the user's function."""

    async def hook(argument: Any) -> object:
        return await fn(argument)

    hook.__name__ = hook.__qualname__ = label
    return hook
