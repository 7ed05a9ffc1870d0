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
class K8s:
    """Where Kubernetes put a container that the CRI made (kubelet's labels on it).

    `container` is None for the pod's sandbox, which holds the pod's namespaces; `labels` are
    the pod's own labels, where the runtime knows them.
    """

    namespace: str
    pod: str
    pod_uid: str
    container: str | None
    labels: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_labels)

    def to_json(self) -> dict[str, object]:
        return {
            "namespace": self.namespace,
            "pod": self.pod,
            "pod_uid": self.pod_uid,
            "container": self.container,
            "labels": dict(self.labels),
        }


@attrs.frozen
class ProcessNamespaces:
    """What identifies a container's process to the kernel; None where it cannot be read
    (the process is gone, or its cgroup does not tell containers apart)."""

    netns_inode: int | None
    mntns_inode: int | None
    cgroup_id: int | None

    @classmethod
    def of(cls, pid: int, *, proc: Path = Path("/proc")) -> ProcessNamespaces:
        """Read from `proc` (blocking)."""
        if pid <= 0:
            return cls(None, None, None)
        ns_dir = proc / str(pid) / "ns"
        return cls(_inode(ns_dir / "net"), _inode(ns_dir / "mnt"), _cgroup_v2_id(proc, pid))


@attrs.frozen
class Container:
    """A running (or paused) container as the engine sees it.

    `shares_netns_with` is "host" for `--network host`, the full id of the other container for
    `--network container:<id>` (and, for a pod's containers, their sandbox's), and None when the
    container has a netns of its own. `runtime` is "docker", "containerd" or "podman";
    `containerd_namespace` is containerd's namespace of the container (``k8s.io``,
    ``default``...); `k8s` is set for the containers that the CRI made.
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
    k8s: K8s | None = None
    containerd_namespace: str | None = None

    @property
    def short_id(self) -> str:
        return self.id[:SHORT_ID_LENGTH]

    @property
    def key(self) -> str:
        """What tells this container from every other on the machine: ids are unique only
        within one runtime (and, for containerd, one of its namespaces)."""
        if self.containerd_namespace is None:
            return f"{self.runtime}/{self.id}"
        return f"{self.runtime}/{self.containerd_namespace}/{self.id}"

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @classmethod
    def from_docker(
        cls, inspect: Mapping[str, Any], *, runtime: str = "docker", proc: Path = Path("/proc")
    ) -> Container:
        """Build from one `docker inspect` object (Docker's, or podman's Docker-compatible API:
        `runtime` says which); namespaces and cgroup are read from `proc`.

        A process that is already gone leaves the namespace and cgroup fields None.
        """
        state = inspect.get("State") or {}
        config = inspect.get("Config") or {}
        host_config = inspect.get("HostConfig") or {}
        network = inspect.get("NetworkSettings") or {}
        pid = int(state.get("Pid") or 0)
        network_mode = str(host_config.get("NetworkMode") or "default")
        sandbox = str(network.get("SandboxKey") or "")
        netns_path = sandbox or (str(proc / str(pid) / "ns" / "net") if pid > 0 else None)
        namespaces = ProcessNamespaces.of(pid, proc=proc)
        return cls(
            id=str(inspect["Id"]),
            name=str(inspect.get("Name") or "").lstrip("/"),
            image=str(config.get("Image") or inspect.get("Image") or ""),
            pid=pid,
            labels=config.get("Labels") or {},
            netns_inode=namespaces.netns_inode,
            netns_path=netns_path,
            mntns_inode=namespaces.mntns_inode,
            cgroup_id=namespaces.cgroup_id,
            network_mode=network_mode,
            shares_netns_with=shared_netns(network_mode),
            paused=bool(state.get("Paused")),
            runtime=runtime,
        )

    def to_json(self) -> dict[str, object]:
        """The object that records (`container_added`, gadget events) carry; "k8s" only for
        the containers that the CRI made."""
        out: dict[str, object] = {
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
        if self.k8s is not None:
            out["k8s"] = self.k8s.to_json()
        return out


def shared_netns(network_mode: str) -> str | None:
    """`shares_netns_with` for a Docker-style network mode ("host", "container:<id>"...)."""
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
