"""The engine's exceptions: one base, specific subclasses carrying what a user needs."""

from __future__ import annotations

from collections.abc import Sequence


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class GadgetError(EngineError):
    """A gadget file cannot be used (missing, unreadable, not UTF-8, a directory...)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class SectionError(EngineError):
    """One bad SEC(...) in a gadget: where it is, what it says and what is wrong."""

    def __init__(self, path: str, line: int, section: str | None, problem: str) -> None:
        where = f"{path}:{line}"
        what = f' SEC("{section}")' if section is not None else ""
        super().__init__(f"{where}:{what} {problem}")
        self.path = path
        self.line = line
        self.section = section
        self.problem = problem


class GadgetParseError(EngineError):
    """Every problem found in one gadget file, reported together."""

    def __init__(self, problems: Sequence[SectionError]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = tuple(problems)


class CompileError(EngineError):
    """bcc could not compile a gadget; carries the compiler's messages."""

    def __init__(self, path: str, messages: str) -> None:
        super().__init__(f"{path}: compilation failed\n{messages.rstrip()}")
        self.path = path
        self.messages = messages


class VerifierError(EngineError):
    """The kernel rejected a program; carries the tail of the verifier log."""

    def __init__(self, path: str, function: str, errno: int, log: str) -> None:
        tail = "\n".join(log.rstrip().splitlines()[-25:])
        super().__init__(
            f"{path}: program {function!r} was rejected by the kernel (errno {errno}):\n{tail}"
        )
        self.path = path
        self.function = function
        self.errno = errno
        self.log = log


class UnsupportedProgramError(EngineError):
    """This kernel cannot run a kind of program that a gadget needs."""

    def __init__(self, path: str, line: int, function: str, kind: str, reason: str) -> None:
        super().__init__(f"{path}:{line}: program {function!r} ({kind}) cannot run here: {reason}")
        self.path = path
        self.line = line
        self.function = function
        self.kind = kind
        self.reason = reason


class TargetNotFoundError(EngineError):
    """The place a program should attach to does not exist (function, tracepoint, library...)."""

    def __init__(self, path: str, line: int, function: str, problem: str) -> None:
        super().__init__(f"{path}:{line}: program {function!r}: {problem}")
        self.path = path
        self.line = line
        self.function = function
        self.problem = problem


class AttachError(EngineError):
    """Attaching a program failed."""

    def __init__(
        self,
        function: str,
        problem: str,
        *,
        netns: str | None = None,
        interface: str | None = None,
        errno: int | None = None,
    ) -> None:
        parts = [f"cannot attach {function!r}"]
        if netns is not None:
            parts.append(f"in netns {netns}")
        if interface is not None:
            parts.append(f"on {interface}")
        msg = " ".join(parts) + f": {problem}"
        if errno is not None:
            msg += f" (errno {errno})"
        super().__init__(msg)
        self.function = function
        self.problem = problem
        self.netns = netns
        self.interface = interface
        self.errno = errno


class SelectionError(EngineError):
    """A selection expression (--select/--exclude) is malformed."""


class EnvironmentProblem(EngineError):
    """The machine lacks something the engine needs (privileges, mounts, headers)."""


class GadgetsFailedError(EngineError):
    """Every gadget of an engine failed; carries each gadget's error, in order."""

    def __init__(self, errors: Sequence[EngineError]) -> None:
        super().__init__(f"all {len(errors)} gadgets failed:\n" + "\n".join(str(e) for e in errors))
        self.errors = tuple(errors)


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
