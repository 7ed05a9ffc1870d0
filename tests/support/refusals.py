"""Bad input to an option: one error, starting with the option and the text it was given."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.errors import ExpressionError


def refusal(
    error: type[ExpressionError], call: Callable[[], object], given: str | None = None
) -> str:
    """Runs `call`, which must refuse its input with `error`; gives back the message, checked
    to begin with the option and the expression refused (``--fields 'pid,,comm': ...``):
    `given`, or the error's own where one call is given several."""
    with pytest.raises(error) as raised:
        call()
    message = str(raised.value)
    expression = raised.value.expression if given is None else given
    assert message.startswith(f"{error.OPTION} {expression!r}: "), message
    return message
