"""deploy/daemonset.yaml asks for what the engine needs and no more: its capabilities
(engine.kernel.security), host paths and namespaces (engine.kernel.host), so that they cannot
drift apart."""

from __future__ import annotations

import re
from typing import Any

import yaml

from engine.cli.parser import build_parser
from engine.kernel.host import HOST_NAMESPACES, HOST_PATHS
from engine.kernel.security import REQUIRED
from tests.support.constants import ROOT

DEPLOY = ROOT / "deploy"
IMAGE_EXAMPLES = "/opt/engine/examples/"
NODE_IP = "192.0.2.10"


def daemonset() -> dict[str, Any]:
    documents = list(yaml.safe_load_all((DEPLOY / "daemonset.yaml").read_text()))
    (found,) = [d for d in documents if d["kind"] == "DaemonSet"]
    assert isinstance(found, dict)
    return found


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = daemonset()["spec"]["template"]["spec"]
    return spec


def engine_container() -> dict[str, Any]:
    (container,) = pod_spec()["containers"]
    assert isinstance(container, dict)
    return container


def host_mounts() -> dict[str, dict[str, Any]]:
    """The container's mounts of host paths, by mount path, with the host path they show."""
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    out = {}
    for mount in engine_container()["volumeMounts"]:
        host = volumes[mount["name"]].get("hostPath")
        if host is not None:
            out[mount["mountPath"]] = {**mount, "host": host["path"]}
    return out


def test_the_capabilities_are_the_engine_s_and_no_more() -> None:
    security = engine_container()["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"]
    # Not SYS_NICE: `engine run` leaves the attach path's priority as it is (priority.py).
    needed = {c.name.removeprefix("CAP_") for c in REQUIRED}
    assert set(security["capabilities"]["add"]) == needed
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False


def test_the_host_namespaces_are_the_engine_s() -> None:
    spec = pod_spec()
    shared = {
        name for name, key in (("pid", "hostPID"), ("network", "hostNetwork")) if spec.get(key)
    }
    assert shared == set(HOST_NAMESPACES)
    assert not spec.get("hostIPC")


def test_every_host_path_the_engine_needs_is_mounted_as_it_needs_it() -> None:
    mounts = host_mounts()
    for needed in HOST_PATHS:
        mount = mounts.get(needed.path)
        assert mount is not None, f"{needed.path} ({needed.why}) is not mounted"
        assert mount["host"] == needed.path, "the host's path, at the same path"
        assert mount.get("readOnly", False) is not needed.writable, needed.path
        propagation = mount.get("mountPropagation", "None")
        assert propagation == ("HostToContainer" if needed.follow_mounts else "None"), needed.path
    # And nothing of the host that the engine does not need.
    assert set(mounts) == {p.path for p in HOST_PATHS}


def test_the_command_line_is_the_engine_s() -> None:
    container = engine_container()
    # kubelet expands $(VAR) from the container's environment (here, the node's address).
    argv = [a.replace("$(NODE_IP)", NODE_IP) for a in container["args"]]
    args = build_parser().parse_args(argv)
    assert args.command == "run"
    assert args.output == "json"  # JSON lines on stdout, for the cluster's log pipeline
    for gadget in args.gadgets:
        assert gadget.startswith(IMAGE_EXAMPLES)
        assert (ROOT / "examples" / gadget.removeprefix(IMAGE_EXAMPLES)).is_file()
    # Each runtime's socket is in a mounted host folder.
    mounted = host_mounts()
    for socket in (args.containerd_socket, args.podman_socket):
        assert socket.rpartition("/")[0] in mounted, socket
    # The metrics port is the one the pod declares, on the node's address.
    host, port = args.metrics
    assert host == NODE_IP
    (declared,) = container["ports"]
    assert (declared["name"], declared["containerPort"]) == ("metrics", port)
    node_ip = next(e for e in container["env"] if e["name"] == "NODE_IP")
    assert node_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"


def test_the_image_holds_the_gadgets_and_runs_the_engine() -> None:
    recipe = (DEPLOY / "Containerfile").read_text()
    assert re.search(rf"^COPY examples {IMAGE_EXAMPLES.rstrip('/')}$", recipe, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["engine"\]$', recipe, re.MULTILINE)
    assert re.search(r"apt-get install .*\bpython3-bpfcc\b", recipe.replace("\\\n", " "))
