"""Every test here leaves nothing of ours behind (tests/support/leaks.py); the other runtimes'
test containers (tests/support/runtimes.py)."""

from tests.support.leaks import nothing_left
from tests.support.runtimes import cri, ctr_containers, podman_containers

__all__ = ["cri", "ctr_containers", "nothing_left", "podman_containers"]
