"""What of the host the engine uses besides its capabilities (engine.kernel.security): the
paths it reads and writes, and the namespaces it must share. Running in a container (a
DaemonSet's pod: deploy/daemonset.yaml, checked against this list by a unit test), each of
these must be the host's own, at the same path.

The paths come from the modules that use them, so that the list follows the code.
"""

from __future__ import annotations

import attrs

from engine.bcc.targets import TRACEFS
from engine.kernel.headers import MODULES_DIR, SOURCES_DIR
from engine.sources import containerd_api, podman
from engine.sources.netns_paths import NAMED_NETNS_DIR, RUNTIME_NETNS_DIRS

BPFFS = "/sys/fs/bpf"


@attrs.frozen
class HostPath:
    """A host folder the engine needs at the same path.

    ``writable``: it writes there. ``follow_mounts``: mounts made on the host later must show
    inside (netns files are bind mounts made as containers start).
    """

    path: str
    why: str
    writable: bool = False
    follow_mounts: bool = False


HOST_PATHS = (
    HostPath(str(TRACEFS), "tracepoint ids; bcc writes uprobe and kprobe events", writable=True),
    HostPath(BPFFS, "maps that gadgets pin (BPF_TABLE_PINNED)", writable=True),
    HostPath(NAMED_NETNS_DIR, "named netns: CNI's pods (cni-*), podman's", follow_mounts=True),
    *(
        HostPath(folder, "Docker's netns files", follow_mounts=True)
        for folder in RUNTIME_NETNS_DIRS
    ),
    HostPath(str(MODULES_DIR), "kernel headers for bcc (build, source links)"),
    HostPath(str(SOURCES_DIR), "kernel headers for bcc (where the links lead, on Debian)"),
    # The runtimes' sockets, by their folders: a socket missing at start (the runtime comes
    # later) must not be made a folder by the mount. A read-only mount still lets a client
    # connect to a socket.
    HostPath(containerd_api.DEFAULT_SOCKET.rpartition("/")[0], "containerd's socket"),
    HostPath(podman.DEFAULT_SOCKET.rpartition("/")[0], "podman's API service socket"),
)

# /proc must show every process of the host (their namespaces, /proc/PID/ns/*), and the
# engine's netns must be the host's (the host-side veths, the netns ids it asks the kernel).
HOST_NAMESPACES = ("pid", "network")
