"""containerd's containers as the engine's `Container`s, with Kubernetes' metadata for the ones
that the CRI made.

The CRI (containerd's cri plugin, driven by kubelet) makes one sandbox container per pod
(label ``io.cri-containerd.kind=sandbox``): it holds the pod's network namespace, whose file is
the spec's network path (under /var/run/netns), and every other container of the pod joins it
(their specs name ``/proc/<sandbox pid>/ns/net``, and the annotation
``io.kubernetes.cri.sandbox-id`` names the sandbox). kubelet's labels say which pod and container
each one is; the pod's own labels are on the sandbox only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from engine.sources.containerd_api import ContainerRecord, TaskRecord
from engine.sources.containers import Container, K8s, ProcessNamespaces, shared_netns

KIND_LABEL = "io.cri-containerd.kind"
POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
CONTAINER_NAME = "io.kubernetes.container.name"
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
# Added to a pod's labels by kubelet and the CRI, not by the pod's author.
_NOT_POD_LABELS = (POD_NAME, POD_NAMESPACE, POD_UID, KIND_LABEL)


def is_sandbox(record: ContainerRecord) -> bool:
    return record.labels.get(KIND_LABEL) == "sandbox"


def sandbox_id(record: ContainerRecord) -> str | None:
    """The id of the pod sandbox whose namespaces a CRI container joins (None: not one)."""
    if is_sandbox(record) or record.labels.get(KIND_LABEL) != "container":
        return None
    return record.annotations.get(SANDBOX_ID) or None


def pod_labels(sandbox: ContainerRecord) -> dict[str, str]:
    """The pod's own labels, from its sandbox's."""
    return {k: v for k, v in sandbox.labels.items() if k not in _NOT_POD_LABELS}


def k8s_metadata(record: ContainerRecord, sandbox: ContainerRecord | None) -> K8s | None:
    """Where kubelet put the container; None for a container that the CRI did not make."""
    labels = record.labels
    if KIND_LABEL not in labels or POD_NAME not in labels:
        return None
    owner = record if is_sandbox(record) else sandbox
    return K8s(
        namespace=labels.get(POD_NAMESPACE, ""),
        pod=labels[POD_NAME],
        pod_uid=labels.get(POD_UID, ""),
        container=None if is_sandbox(record) else labels.get(CONTAINER_NAME, ""),
        labels=pod_labels(owner) if owner is not None else {},
    )


def container_from_containerd(
    record: ContainerRecord,
    task: TaskRecord,
    *,
    sandbox: ContainerRecord | None = None,
    proc: Path = Path("/proc"),
) -> Container:
    """The running container (`task` running); `sandbox` is the pod's, for a CRI container.

    Blocking: the namespaces are read from `proc`. Names: a pod's sandbox is named after the
    pod, its containers "<pod>/<container>", any other container by its containerd id.
    """
    k8s = k8s_metadata(record, sandbox)
    if k8s is None:
        name = record.id
    elif k8s.container is None:
        name = k8s.pod
    else:
        name = f"{k8s.pod}/{k8s.container}"
    joins = sandbox_id(record)
    if record.network is None:
        network_mode = "host"
    elif joins is not None:
        network_mode = f"container:{joins}"
    else:
        network_mode = "default"
    namespaces = ProcessNamespaces.of(task.pid, proc=proc)
    return Container(
        id=record.id,
        name=name,
        image=record.image,
        pid=task.pid,
        labels=record.labels,
        netns_inode=namespaces.netns_inode,
        netns_path=_netns_path(record, task, sandbox, proc),
        mntns_inode=namespaces.mntns_inode,
        cgroup_id=namespaces.cgroup_id,
        network_mode=network_mode,
        shares_netns_with=shared_netns(network_mode),
        paused=task.paused,
        runtime="containerd",
        k8s=k8s,
        containerd_namespace=record.namespace,
    )


def _netns_path(
    record: ContainerRecord, task: TaskRecord, sandbox: ContainerRecord | None, proc: Path
) -> str | None:
    """A path that reaches the container's netns: the pod's file (which outlives every process
    in the pod), else the one the spec names, else the process's."""
    for owner in (sandbox, record):
        if owner is not None and owner.network and not owner.network.startswith(str(proc)):
            return owner.network
    return str(proc / str(task.pid) / "ns" / "net") if task.pid > 0 else None


def by_sandbox_first(records: Mapping[str, ContainerRecord]) -> list[ContainerRecord]:
    """Sandboxes before the containers that join them, so that a pod's netns is named after
    the pod (the first container of a shared netns names it)."""
    return sorted(records.values(), key=lambda r: not is_sandbox(r))
