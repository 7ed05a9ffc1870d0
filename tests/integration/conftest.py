"""Every test here leaves nothing of ours behind (tests/support/leaks.py)."""

from tests.support.leaks import nothing_left

__all__ = ["nothing_left"]
