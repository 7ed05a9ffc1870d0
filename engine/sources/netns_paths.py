"""Where network namespace files are, and which of them may be a container's.

Container runtimes bind-mount the netns of their containers on files: Docker in its own
folder, and CNI (containerd's cri plugin: "cni-<uuid>") and podman ("netns-<uuid>") as named
netns, in the folder of `ip netns`. The netns source watches these folders.
"""

from __future__ import annotations

import re

NAMED_NETNS_DIR = "/run/netns"
RUNTIME_NETNS_DIRS = ("/run/docker/netns",)
# The same folders as paths may spell them (/var/run is /run).
_RUNTIME_PREFIXES = ("/run/docker/netns/", "/var/run/docker/netns/")
_NAMED_FOLDERS = ("/run/netns/", "/var/run/netns/")
_RUNTIME_NAMES = ("cni-", "netns-")
_PROCESS_NETNS = re.compile(r"/proc/(\d+)/ns/net")


def process_of(path: str) -> int | None:
    """The pid of a process's netns path (``/proc/PID/ns/net``), or None for any other."""
    found = _PROCESS_NETNS.fullmatch(path)
    return None if found is None else int(found[1])


def is_runtime_netns(path: str) -> bool:
    """Whether a netns reached by ``path`` may be a container's that the runtime has not
    reported yet: a runtime's netns file, or a process's netns. Under load the netns source
    often finds a new container's netns through its first process, before the runtime's bind
    mount is in place (seen with 11 containers started at once: 3 of them). Other ``ip netns
    add`` names are never a container's."""
    if path.startswith(_RUNTIME_PREFIXES) or process_of(path) is not None:
        return True
    folder, _, name = path.rpartition("/")
    return folder + "/" in _NAMED_FOLDERS and name.startswith(_RUNTIME_NAMES)
