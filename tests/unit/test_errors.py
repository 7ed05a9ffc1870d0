"""Errors at the edge: a lone error reaches the caller as itself, several stay a group."""

from __future__ import annotations

from engine.errors import sole_exception


def test_a_lone_error_in_nested_groups_is_itself() -> None:
    error = ValueError("inside")
    nested = BaseExceptionGroup("outer", [ExceptionGroup("inner", [error])])
    assert sole_exception(nested) is error
    assert sole_exception(error) is error


def test_several_errors_stay_the_group() -> None:
    several = ExceptionGroup("outer", [ExceptionGroup("inner", [ValueError()]), KeyError()])
    assert sole_exception(several) is several
