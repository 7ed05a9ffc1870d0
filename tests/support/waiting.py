"""Waiting on output as it arrives: a condition re-checked at each change, never a sleep."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import attrs
import trio

T = TypeVar("T")
DEFAULT_TIMEOUT = 30.0


@attrs.define
class Changes:
    """Output that grows (records, lines) and says when it grew and when it ended."""

    _changed: trio.Event = attrs.field(factory=trio.Event, init=False)
    _ended: bool = attrs.field(default=False, init=False)

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def ended(self) -> None:
        self._ended = True
        self.changed()

    def describe(self) -> str:
        """What was seen, for the message of a wait that failed."""
        return ""

    async def until(
        self,
        predicate: Callable[[], T | None],
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - its failure names what it waited for
        what: str | Callable[[], str] = "",
    ) -> T:
        """The first true value of ``predicate()``, re-checked at every change; a failure
        naming ``what`` (a text, or a function giving one) after ``timeout`` seconds or if
        the output ends first."""
        try:
            with trio.fail_after(timeout):
                while not (value := predicate()):
                    if self._ended:
                        raise AssertionError(self._failure(what, "the output ended first"))
                    await self._changed.wait()
        except trio.TooSlowError:
            raise AssertionError(self._failure(what, f"not within {timeout} s")) from None
        return value

    def _failure(self, what: str | Callable[[], str], why: str) -> str:
        wanted = what() if callable(what) else what
        return f"waited for {wanted or 'a condition'}: {why}; {self.describe()}"
