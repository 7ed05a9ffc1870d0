"""The engine's exceptions: one base, specific subclasses carrying what a user needs.

Every error the engine raises on purpose is an `EngineError`. `BadInputError` marks what the
user can fix in what they gave the engine (a gadget, a hook file, a selection, an address): the
CLI exits with 2 for those and 1 for the rest. Errors that carry details are attrs classes:
the fields are the details, `__str__` is the message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

import attrs

if TYPE_CHECKING:
    from engine.kernel.security import Capability


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class BadInputError(EngineError):
    """Base of the errors in what a user gave the engine: they can fix it and try again."""


class EnvironmentProblem(EngineError):
    """The machine lacks something the engine needs (privileges, mounts, headers)."""


class SelectionError(BadInputError):
    """A selection expression (--select/--exclude) is malformed."""


@attrs.define
class ExpressionError(BadInputError):
    """An expression given to an option (``OPTION``) is wrong: which one, and what is wrong."""

    OPTION: ClassVar[str] = "an option"
    expression: str
    problem: str

    def __str__(self) -> str:
        return f"{self.OPTION} {self.expression!r}: {self.problem}"


class FilterError(ExpressionError):
    """A ``--filter`` expression is malformed, names an unknown field or mistypes its value."""

    OPTION = "--filter"


class FieldsError(ExpressionError):
    """``--fields`` names no field of the gadgets' records, or one twice."""

    OPTION = "--fields"


class SortError(ExpressionError):
    """``--sort`` names no field of the gadgets' records."""

    OPTION = "--sort"


class ParamError(ExpressionError):
    """A gadget parameter's value (``--param``, ``params=``, ``set_param``) names no declared
    parameter, an ambiguous one, or is not a value of its type."""

    OPTION = "--param"


class MetricsError(BadInputError):
    """The metrics endpoint cannot be served (address in use, not local...)."""


class BtfError(EngineError):
    """A BTF file cannot be read or is malformed."""


@attrs.define
class GadgetError(BadInputError):
    """A gadget file cannot be used (missing, unreadable, not UTF-8, a directory...)."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@attrs.define
class SectionError(BadInputError):
    """One bad SEC(...) in a gadget: where it is, what it says and what is wrong."""

    path: str
    line: int
    section: str | None
    problem: str

    def __str__(self) -> str:
        what = f' SEC("{self.section}")' if self.section is not None else ""
        return f"{self.path}:{self.line}:{what} {self.problem}"


@attrs.define
class GadgetParseError(BadInputError):
    """Every problem found in one gadget file, reported together."""

    problems: tuple[SectionError, ...] = attrs.field(converter=tuple[SectionError, ...])

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


@attrs.define
class CompileError(BadInputError):
    """bcc could not compile a gadget; carries the compiler's messages."""

    path: str
    messages: str

    def __str__(self) -> str:
        return f"{self.path}: compilation failed\n{self.messages.rstrip()}"


@attrs.define
class VerifierError(BadInputError):
    """The kernel rejected a program; carries the verifier log (the message shows its tail)."""

    path: str
    function: str
    errno: int
    log: str

    def __str__(self) -> str:
        tail = "\n".join(self.log.rstrip().splitlines()[-25:])
        return (
            f"{self.path}: program {self.function!r} was rejected by the kernel "
            f"(errno {self.errno}):\n{tail}"
        )


@attrs.define
class UnsupportedProgramError(BadInputError):
    """This kernel cannot run a kind of program that a gadget needs."""

    path: str
    line: int
    function: str
    kind: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}: program {self.function!r}"
        return f"{where} ({self.kind}) cannot run here: {self.reason}"


@attrs.define
class TargetNotFoundError(BadInputError):
    """The place a program should attach to does not exist (function, tracepoint, library...)."""

    path: str
    line: int
    function: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: program {self.function!r}: {self.problem}"


@attrs.define
class UnknownBtfTypeError(BtfError):
    """A gadget names a type that the kernel's BTF does not describe."""

    name: str
    path: str | None = attrs.field(default=None, kw_only=True)
    line: int | None = attrs.field(default=None, kw_only=True)

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        return f"{where}type {self.name!r} is not described by the kernel's BTF"


@attrs.define
class AttachError(EngineError):
    """Attaching a program failed."""

    function: str
    problem: str
    netns: str | None = attrs.field(default=None, kw_only=True)
    interface: str | None = attrs.field(default=None, kw_only=True)
    errno: int | None = attrs.field(default=None, kw_only=True)

    def __str__(self) -> str:
        parts = [f"cannot attach {self.function!r}"]
        if self.netns is not None:
            parts.append(f"in netns {self.netns}")
        if self.interface is not None:
            parts.append(f"on {self.interface}")
        message = " ".join(parts) + f": {self.problem}"
        return message if self.errno is None else f"{message} (errno {self.errno})"

    @classmethod
    def from_os(
        cls,
        function: str,
        doing: str,
        exc: OSError,
        *,
        netns: str | None = None,
        interface: str | None = None,
    ) -> AttachError:
        """``doing`` failed with ``exc``: the problem says what was done and the system's why."""
        why = exc.strerror or str(exc)
        return cls(function, f"{doing}: {why}", netns=netns, interface=interface, errno=exc.errno)


@attrs.define
class GadgetsFailedError(EngineError):
    """Every gadget of an engine failed; carries each gadget's error, in order."""

    errors: tuple[EngineError, ...] = attrs.field(converter=tuple[EngineError, ...])

    def __str__(self) -> str:
        return f"all {len(self.errors)} gadgets failed:\n" + "\n".join(str(e) for e in self.errors)


def _capabilities(capabilities: Iterable[Capability]) -> tuple[Capability, ...]:
    # A function, not tuple[Capability, ...]: Capability is not imported at run time (it lives
    # in engine.kernel.security, which imports this module).
    return tuple(capabilities)


@attrs.define
class MissingCapabilitiesError(EnvironmentProblem):
    """The engine lacks privileges it needs; ``missing`` names every one."""

    missing: tuple[Capability, ...] = attrs.field(converter=_capabilities)
    required: tuple[Capability, ...] = attrs.field(converter=_capabilities)

    def __str__(self) -> str:
        names = ", ".join(c.name for c in self.missing)
        needed = ", ".join(c.name for c in self.required)
        return f"missing capabilities: {names} (the engine needs {needed}; run it as root)"


@attrs.define
class UntrustedFileError(BadInputError):
    """A gadget or hook file that someone other than root (or the engine's user) could change."""

    path: str
    culprit: str
    problem: str

    def __str__(self) -> str:
        where = self.path if self.culprit == self.path else f"{self.path} ({self.culprit})"
        return (
            f"{where}: refused: {self.problem}; the engine runs code from this file with its "
            "own privileges (allow it with --allow-untrusted-files, or trust_files=True)"
        )


@attrs.define
class HookFileError(BadInputError):
    """A hook file cannot be used; ``line`` is 0 when the problem is not on a line."""

    path: str
    line: int
    problem: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"hook file {where}: {self.problem}"


@attrs.define
class HookError(EngineError):
    """A hook raised while the engine runs in strict mode; the hook's error is the cause."""

    hook: str
    error: BaseException

    def __str__(self) -> str:
        return f"hook {self.hook!r} failed: {type(self.error).__name__}: {self.error}"


class EngineStoppedError(EngineError):
    """The engine has stopped (``stop()``, or its work ended): it can no longer change."""


def sole_exception(exc: BaseException) -> BaseException:
    """What ``exc`` stands for: the one exception inside its (nested) groups, else itself.

    trio wraps even a lone error in an exception group per nursery it crosses; at the edge
    (``open_engine``, the CLI) a lone error reaches the caller as itself, while several stay
    the group they are.
    """
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    first: BaseException = exc
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    _, others = exc.split(lambda e: e is first)
    return first if others is None else exc
