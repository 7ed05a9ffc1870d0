"""Network namespaces made by a test, outside any container runtime."""

from __future__ import annotations

import os
import uuid

import attrs

from tests.support.commands import run


@attrs.define
class NamedNetns:
    """A netns made with `ip netns add`'s layout, with a veth whose other end stays in the
    host."""

    name: str
    host_if: str
    inner_if: str

    @classmethod
    def named(cls) -> NamedNetns:
        """Names only: ``create()`` makes it."""
        t = uuid.uuid4().hex[:6]
        return cls(f"engine-test-{t}", f"eth{t}", f"ein{t}")

    @property
    def staging(self) -> str:
        return f"/tmp/{self.name}.net"

    def create(self) -> None:
        """Built complete out of sight, then published in /run/netns in one bind mount, so
        that whoever watches /run/netns never sees it half made."""
        run("touch", self.staging)
        run("unshare", f"--net={self.staging}", "true")
        run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.inner_if)
        # A netns given as a path (it holds a "/") is opened as such by iproute2.
        run("ip", "link", "set", self.inner_if, "netns", self.staging)
        run("nsenter", f"--net={self.staging}", "ip", "link", "set", self.inner_if, "up")
        run("ip", "link", "set", self.host_if, "up")
        os.makedirs("/run/netns", exist_ok=True)
        run("touch", f"/run/netns/{self.name}")
        run("mount", "--bind", self.staging, f"/run/netns/{self.name}")

    @property
    def inode(self) -> int:
        # The staging mount outlives `ip netns del`, so the inode can still be read then.
        return os.stat(self.staging).st_ino

    def remove(self) -> None:
        run("ip", "link", "del", self.host_if, check=False)
        run("ip", "netns", "del", self.name, check=False)
        run("umount", self.staging, check=False)
        run("rm", "-f", self.staging, check=False)
