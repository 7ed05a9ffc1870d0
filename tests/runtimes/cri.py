"""kubelet's side of the CRI, for tests: pods made on the tests' own containerd the way kubelet
makes them (RunPodSandbox with its netns from CNI, CreateContainer, StartContainer,
StopPodSandbox, RemovePodSandbox), with kubelet's labels, namespace modes and cgroup parent.

Blocking (grpcio's synchronous channel): call from a worker thread in trio tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path

import attrs
import grpc

from tests.runtimes import cri_pb2 as cri
from tests.runtimes import cri_pb2_grpc as cri_grpc

# scripts/start-containerd brings it up; the images are imported there.
SOCKET = os.environ.get(
    "ENGINE_TEST_CONTAINERD_SOCKET", "/run/engine-test-containerd/containerd.sock"
)
CONFIG = "/etc/engine-test/containerd.toml"
IMAGE = "docker.io/library/" + os.environ.get("ENGINE_TEST_IMAGE", "engine-test:latest")
LOG_ROOT = Path("/tmp/engine-test-pods")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# A container's PID 1 ignores SIGTERM unless it handles it.
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]
_TIMEOUT = 30.0


@attrs.frozen
class Pod:
    id: str
    name: str
    namespace: str
    uid: str
    config: cri.PodSandboxConfig

    @property
    def cgroup_parent(self) -> str:
        return self.config.linux.cgroup_parent


def kubelet_labels(name: str, namespace: str, uid: str) -> dict[str, str]:
    return {
        "io.kubernetes.pod.name": name,
        "io.kubernetes.pod.namespace": namespace,
        "io.kubernetes.pod.uid": uid,
    }


class Cri:
    """A CRI client; `made` remembers every pod, so that `remove_all` leaves nothing."""

    def __init__(self, socket: str = SOCKET) -> None:
        self._channel = grpc.insecure_channel(f"unix://{socket}")
        self.runtime = cri_grpc.RuntimeServiceStub(self._channel)
        self.made: list[Pod] = []

    def version(self) -> cri.VersionResponse:
        return self.runtime.Version(cri.VersionRequest(version="v1"), timeout=5)

    def run_pod(self, name: str, namespace: str, labels: Mapping[str, str] | None = None) -> Pod:
        """RunPodSandbox as kubelet does it for a pod with its own network."""
        uid = str(uuid.uuid4())
        config = cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
            hostname=name,
            log_directory=str(LOG_ROOT / f"{namespace}_{name}_{uid}"),
            labels={**(labels or {}), **kubelet_labels(name, namespace, uid)},
            annotations={"kubernetes.io/config.source": "api"},
            linux=cri.LinuxPodSandboxConfig(
                cgroup_parent=f"/kubepods/besteffort/pod{uid}",
                security_context=cri.LinuxSandboxSecurityContext(namespace_options=_POD_NAMESPACES),
            ),
        )
        reply = self.runtime.RunPodSandbox(
            cri.RunPodSandboxRequest(config=config), timeout=_TIMEOUT
        )
        pod = Pod(reply.pod_sandbox_id, name, namespace, uid, config)
        self.made.append(pod)
        return pod

    def start_container(self, pod: Pod, name: str, command: list[str] | None = None) -> str:
        """CreateContainer + StartContainer, with kubelet's labels; the container's id."""
        config = cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name=name, attempt=0),
            image=cri.ImageSpec(image=IMAGE),
            command=command or SLEEPER,
            log_path=f"{name}/0.log",
            labels={
                "io.kubernetes.container.name": name,
                **kubelet_labels(pod.name, pod.namespace, pod.uid),
            },
            annotations={"io.kubernetes.container.restartCount": "0"},
            linux=cri.LinuxContainerConfig(
                security_context=cri.LinuxContainerSecurityContext(
                    namespace_options=_POD_NAMESPACES
                )
            ),
        )
        created = self.runtime.CreateContainer(
            cri.CreateContainerRequest(
                pod_sandbox_id=pod.id, config=config, sandbox_config=pod.config
            ),
            timeout=_TIMEOUT,
        )
        self.runtime.StartContainer(
            cri.StartContainerRequest(container_id=created.container_id), timeout=_TIMEOUT
        )
        return created.container_id

    def remove_pod(self, pod: Pod) -> None:
        """StopPodSandbox + RemovePodSandbox (which removes its containers too), then what
        kubelet removes itself: the pod's cgroups and logs."""
        self.runtime.StopPodSandbox(
            cri.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=_TIMEOUT
        )
        self.runtime.RemovePodSandbox(
            cri.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=_TIMEOUT
        )
        for hierarchy in CGROUP_ROOT.iterdir():
            pod_cgroup = hierarchy / pod.cgroup_parent.lstrip("/")
            if pod_cgroup.is_dir():
                pod_cgroup.rmdir()
        shutil.rmtree(pod.config.log_directory, ignore_errors=True)
        if pod in self.made:
            self.made.remove(pod)

    def remove_all(self) -> None:
        for pod in list(self.made):
            self.remove_pod(pod)

    def close(self) -> None:
        self._channel.close()


# kubelet's defaults for a pod: its own network and IPC, a PID namespace per container.
_POD_NAMESPACES = cri.NamespaceOption(
    network=cri.NamespaceMode.POD, pid=cri.NamespaceMode.CONTAINER, ipc=cri.NamespaceMode.POD
)


def ctr(*args: str, namespace: str = "default") -> str:
    """containerd's own client against the tests' daemon; fails the test on an error."""
    done = subprocess.run(
        ["ctr", "--connect-timeout", "2s", "-a", SOCKET, "-n", namespace, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"ctr {' '.join(args)}: {done.stderr}"
    return done.stdout


def ctr_remove(container_id: str, namespace: str = "default") -> None:
    """Kill and remove a `ctr run` container, whatever state it is in."""
    base = ["ctr", "--connect-timeout", "2s", "-a", SOCKET, "-n", namespace]
    subprocess.run([*base, "task", "rm", "-f", container_id], capture_output=True, check=False)
    subprocess.run([*base, "containers", "rm", container_id], capture_output=True, check=False)


def daemon_pid() -> int | None:
    """The pid of the tests' containerd, if it runs."""
    found = subprocess.run(
        ["pgrep", "-f", f"^containerd --config {CONFIG}"],
        capture_output=True,
        text=True,
        check=False,
    )
    pids = found.stdout.split()
    return int(pids[0]) if pids else None
