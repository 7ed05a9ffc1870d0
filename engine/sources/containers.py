"""What the engine knows about a container (its lifecycle records are in engine.records).

`Container` is frozen. `Container.from_docker` is the only place that reads the host
(`/proc/PID/...`), and it is blocking: call it off the trio thread.

Cgroup ids: `bpf_get_current_cgroup_id()` always answers with the id of the task's cgroup in the
*unified* (v2) hierarchy, which is the inode number of that cgroup's directory in a cgroup2 mount.
On a pure cgroup v2 host that directory is the container's own cgroup. On a cgroup v1 host the
container is identified by its path in the v1 controllers (`/docker/<id>` in `/proc/PID/cgroup`),
which no BPF helper reports; the helper then only helps when a cgroup2 hierarchy is mounted as
well ("hybrid", e.g. `/sys/fs/cgroup/unified`) and the runtime placed the container in it (runc
does: `0::/docker/<id>`). When the container sits at the root of the unified hierarchy (or none is
mounted) every task reports the same root id, so `cgroup_id` is None: match by mount namespace.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

logger = logging.getLogger(__name__)

SHORT_ID_LENGTH = 12


def _labels(value: Mapping[str, str] | tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Labels as sorted pairs: hashable, and equal whatever order Docker gave them in."""
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(k), str(v)) for k, v in items))


@attrs.frozen
class Container:
    """A running (or paused) container as the engine sees it.

    `shares_netns_with` is "host" for `--network host`, the full id of the other container for
    `--network container:<id>`, and None when the container has a netns of its own.
    """

    id: str
    name: str
    image: str
    pid: int
    labels: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_labels)
    netns_inode: int | None = None
    netns_path: str | None = None
    mntns_inode: int | None = None
    cgroup_id: int | None = None
    network_mode: str = "default"
    shares_netns_with: str | None = None
    paused: bool = False
    runtime: str = "docker"

    @property
    def short_id(self) -> str:
        return self.id[:SHORT_ID_LENGTH]

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @classmethod
    def from_docker(cls, inspect: Mapping[str, Any], *, proc: Path = Path("/proc")) -> Container:
        """Build from one `docker inspect` object; namespaces and cgroup are read from `proc`.

        A process that is already gone leaves the namespace and cgroup fields None.
        """
        state = inspect.get("State") or {}
        config = inspect.get("Config") or {}
        host_config = inspect.get("HostConfig") or {}
        network = inspect.get("NetworkSettings") or {}
        pid = int(state.get("Pid") or 0)
        network_mode = str(host_config.get("NetworkMode") or "default")
        sandbox = str(network.get("SandboxKey") or "")
        ns_dir = proc / str(pid) / "ns"
        netns_path = sandbox or (str(ns_dir / "net") if pid > 0 else None)
        return cls(
            id=str(inspect["Id"]),
            name=str(inspect.get("Name") or "").lstrip("/"),
            image=str(config.get("Image") or inspect.get("Image") or ""),
            pid=pid,
            labels=config.get("Labels") or {},
            netns_inode=_inode(ns_dir / "net") if pid > 0 else None,
            netns_path=netns_path,
            mntns_inode=_inode(ns_dir / "mnt") if pid > 0 else None,
            cgroup_id=_cgroup_v2_id(proc, pid) if pid > 0 else None,
            network_mode=network_mode,
            shares_netns_with=_shared_netns(network_mode),
            paused=bool(state.get("Paused")),
        )

    def to_json(self) -> dict[str, object]:
        """The object that records (`container_added`, gadget events) carry."""
        return {
            "id": self.id,
            "short_id": self.short_id,
            "name": self.name,
            "image": self.image,
            "labels": self.label_map,
            "pid": self.pid,
            "netns": self.netns_inode,
            "mntns": self.mntns_inode,
            "cgroup_id": self.cgroup_id,
            "runtime": self.runtime,
            "shares_netns_with": self.shares_netns_with,
            "paused": self.paused,
        }


def _shared_netns(network_mode: str) -> str | None:
    if network_mode == "host":
        return "host"
    prefix = "container:"
    if network_mode.startswith(prefix):
        return network_mode[len(prefix) :]
    return None


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError as exc:
        logger.debug("cannot stat %s: %s", path, exc)
        return None


def _cgroup_v2_id(proc: Path, pid: int) -> int | None:
    """The id bpf_get_current_cgroup_id() reports for `pid`, when it tells containers apart."""
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
        mountinfo = (proc / "self" / "mountinfo").read_text().splitlines()
    except OSError as exc:
        logger.debug("cannot read cgroups of pid %d: %s", pid, exc)
        return None
    unified = next((line[3:] for line in lines if line.startswith("0::")), None)
    mount = _cgroup2_mount(mountinfo)
    if unified is None or unified == "/" or mount is None:
        return None
    return _inode(Path(mount + unified))


def _cgroup2_mount(mountinfo: list[str]) -> str | None:
    # Fields: id parent major:minor root mountpoint options [optional...] - fstype source ...
    for line in mountinfo:
        before, sep, after = line.partition(" - ")
        fields = before.split()
        if sep and after.split()[:1] == ["cgroup2"] and len(fields) > 4 and fields[3] == "/":
            return fields[4]
    return None
