"""The synthetic churn's load: network namespaces made and removed at a fixed rate, by netlink.

``python -m benchmarks.netns_gen CONFIG.json OUT.jsonl`` (run by benchmarks/netns_churn.py).
Each netns is made as ``ip netns add`` and Docker make theirs: a file in /run/netns, then a
new netns bind-mounted on it; then a veth pair, its host end up on the generator's bridge; its
other end in the netns as eth0 (made there, or made in the host and moved in: ``veth``), up,
with an address and a permanent neighbour entry for the bridge's, so that an ICMP echo request
to the bridge leaves at once, without ARP. After ``lifetime`` seconds the file is unmounted and
removed (and the veth deleted first with ``delete_veth``; otherwise it goes with the netns).
One line per netns goes to OUT: its name, inode, address and the monotonic times
(CLOCK_MONOTONIC, shared by every process) of each step.

All of it runs in worker threads (``workers`` of them), none the process's main one: a netns
entered there is never the one /proc/PID/ns/net shows, so the engine finds each netns through
its file only.

With ``baseline`` set, each netns also gets what a bare attacher does, timed in thread CPU
seconds: a TC filter on each hook of the host end (one pyroute2 IPRoute per worker, for the
whole run) and an AF_PACKET socket with a program attached, made inside the netns; both
removed before the netns is.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import resource
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import attrs

from benchmarks import netlink

NETNS_DIR = "/run/netns"
PREFIX_LEN = 16
BRIDGE_ADDRESS = "10.231.0.1"
BRIDGE_MAC = bytes.fromhex("02000ae70001")  # locally administered
SO_ATTACH_BPF = 50
ETH_P_ALL = 0x0003
TC_INGRESS, TC_EGRESS = 0xFFFFFFF2, 0xFFFFFFF3


def address(k: int) -> str:
    """The k-th netns's address on the bridge's /16."""
    return f"10.231.{1 + k // 250}.{1 + k % 250}"


@attrs.define
class Live:
    index: int
    name: str
    path: str
    ns_fd: int
    inner: netlink.Rtnl
    icmp: socket.socket
    host_ifindex: int = 0
    address: str = ""
    packet: socket.socket | None = None  # the baseline's
    times: dict[str, Any] = attrs.Factory(dict)


@attrs.define
class Baseline:
    """A bare attacher: the least the work of attaching costs with pyroute2 and a socket."""

    host_fd: int
    ipr: Any = None
    socket_prog: int = -1
    tc_prog: int = -1

    def open(self) -> None:
        from pyroute2 import IPRoute

        self.ipr = IPRoute()
        self.socket_prog = netlink.load_return(netlink.SOCKET_FILTER, 0)
        self.tc_prog = netlink.load_return(netlink.SCHED_CLS, -1)

    def close(self) -> None:
        if self.ipr is not None:
            self.ipr.close()
        for fd in (self.socket_prog, self.tc_prog):
            if fd >= 0:
                os.close(fd)

    def attach(self, live: Live) -> None:
        cpu, wall = time.thread_time(), time.monotonic()
        self.ipr.tc("add", "clsact", live.host_ifindex)
        for parent in (TC_INGRESS, TC_EGRESS):
            self._tc_filter(
                "add-filter", live, parent, fd=self.tc_prog, name="baseline", direct_action=True
            )
        netlink.setns(live.ns_fd)
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        finally:
            netlink.setns(self.host_fd)
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, self.socket_prog)
        live.packet = sock
        live.times["baseline_attach_s"] = time.monotonic() - wall
        live.times["baseline_cpu_s"] = time.thread_time() - cpu

    def detach(self, live: Live) -> None:
        cpu = time.thread_time()
        for parent in (TC_INGRESS, TC_EGRESS):
            self._tc_filter("del-filter", live, parent)
        if live.packet is not None:
            live.packet.close()
        live.times["baseline_cpu_s"] += time.thread_time() - cpu

    def _tc_filter(self, command: str, live: Live, parent: int, **extra: Any) -> None:
        """pyroute2's tc filter request for the baseline's filter on ``parent``."""
        self.ipr.tc(
            command,
            "bpf",
            live.host_ifindex,
            1,
            parent=parent,
            prio=0xC000,
            protocol=ETH_P_ALL,
            **extra,
        )


@attrs.define
class Bridge:
    """The generator's bridge: made before the workers start, deleted after they end."""

    name: str
    index: int = 0
    mac: bytes = b""

    def make(self, host: netlink.Rtnl) -> None:
        self.mac = BRIDGE_MAC
        self.index = host.add_bridge(self.name, self.mac)
        host.add_address(self.index, BRIDGE_ADDRESS, PREFIX_LEN)


@attrs.define
class Worker:
    """Makes and removes the netns ``first, first + step, ...`` on schedule, in its own thread.

    Several of them: moving a veth between netns waits for an RCU grace period in the kernel,
    so that one thread alone cannot reach 100 netns/s.
    """

    config: dict[str, Any]
    bridge: Bridge
    first: int
    step: int
    start: float
    baseline: Baseline | None
    host_fd: int = -1
    host: netlink.Rtnl | None = None
    lines: list[dict[str, Any]] = attrs.Factory(list)
    live: dict[int, Live] = attrs.Factory(dict)

    def run(self) -> None:
        self.host_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.host = netlink.Rtnl()
        try:
            if self.baseline is not None:
                self.baseline.host_fd = self.host_fd
                self.baseline.open()
            self._schedule()
        finally:
            for index in list(self.live):
                self._remove(index)
            if self.baseline is not None:
                self.baseline.close()
            self.host.close()
            os.close(self.host_fd)

    def _schedule(self) -> None:
        """Make, send and remove, each when due (a worker falling behind catches up)."""
        rate, count = self.config["rate"], self.config["count"]
        due: list[tuple[float, int, str]] = [
            (self.start + i / rate, i, "make") for i in range(self.first, count, self.step)
        ]
        heapq.heapify(due)
        while due:
            when, index, step = heapq.heappop(due)
            time.sleep(max(0.0, when - time.monotonic()))
            if step == "make":
                if self._make(index, asked=when):
                    heapq.heappush(
                        due, (time.monotonic() + self.config["start_delay"], index, "send")
                    )
                heapq.heappush(due, (time.monotonic() + self.config["lifetime"], index, "remove"))
            elif step == "send":
                self._send(index)
            else:
                self._remove(index)

    def _make(self, index: int, *, asked: float) -> bool:
        """The netns, its file and its veth, eth0 up inside; False if that failed."""
        assert self.host is not None
        name = f"{self.config['prefix']}{index}"
        path = os.path.join(NETNS_DIR, name)
        times: dict[str, Any] = {"index": index, "name": name, "t_asked": asked}
        times["t_start"] = time.monotonic()
        # As ``ip netns add`` does: the file first, then the netns bind-mounted on it.
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
        try:
            netlink.unshare_net()
            try:
                inner = netlink.Rtnl()
                icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 1)
                ns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            finally:
                netlink.setns(self.host_fd)
        except BaseException:
            os.unlink(path)
            raise
        live = Live(index, name, path, ns_fd, inner, icmp, times=times)
        self.live[index] = live
        times["t_unshared"] = time.monotonic()
        netlink.bind_mount(f"/proc/self/fd/{ns_fd}", path)
        times["t_netns"] = time.monotonic()
        times["inode"] = os.fstat(ns_fd).st_ino
        tag = self.config["tag"]
        host_name, peer_name = f"{tag}{index}h", f"{tag}{index}p"
        try:
            if self.config["veth"] == "moved":
                # As Docker does: the pair made in the host, one end moved in afterwards.
                self.host.add_veth(host_name, peer_name, self.bridge.index)
                times["t_veth"] = time.monotonic()
                self.host.move(self.host.ifindex(peer_name), ns_fd, "eth0")
            else:
                # As CNI plugins do: the container's end made inside the netns at once.
                self.host.add_veth(host_name, "eth0", self.bridge.index, peer_netns=ns_fd)
                times["t_veth"] = time.monotonic()
            live.host_ifindex = self.host.ifindex(host_name)
            inside = inner.ifindex("eth0")
            live.address = address(self.config["first_address"] + index)
            inner.up_address_neighbour(
                inside, live.address, PREFIX_LEN, BRIDGE_ADDRESS, self.bridge.mac
            )
            times["t_ready"] = time.monotonic()
            times.update(
                address=live.address, host_ifname=host_name, host_ifindex=live.host_ifindex
            )
            if self.baseline is not None:
                self.baseline.attach(live)
        except OSError as exc:
            times["error"] = str(exc)
            return False
        return True

    def _send(self, index: int) -> None:
        live = self.live.get(index)
        if live is None:  # removed already: the worker fell that far behind
            return
        live.icmp.sendto(netlink.echo_request(index, 1), (BRIDGE_ADDRESS, 0))
        live.times["t_packet"] = time.monotonic()

    def _remove(self, index: int) -> None:
        assert self.host is not None
        live = self.live.pop(index)
        try:
            if self.baseline is not None and live.packet is not None:
                self.baseline.detach(live)
            if live.host_ifindex and self.config["delete_veth"]:
                self.host.delete(live.host_ifindex)
        except OSError as exc:
            live.times["error"] = str(exc)
        finally:
            with contextlib.suppress(OSError):  # a netns whose making failed half-way
                netlink.detach_mount(live.path)
            os.unlink(live.path)
            live.inner.close()
            live.icmp.close()
            os.close(live.ns_fd)
        live.times["t_removed"] = time.monotonic()
        self.lines.append(live.times)


def main() -> int:
    config = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    os.makedirs(NETNS_DIR, exist_ok=True)
    host = netlink.Rtnl()
    bridge = Bridge(config["bridge"])
    started = time.monotonic()
    failures: list[BaseException] = []
    workers = []
    try:
        bridge.make(host)
        # Started shortly after the workers are, whatever their number.
        start = time.monotonic() + 0.2
        step = config["workers"]
        for first in range(step):
            baseline = Baseline(-1) if config["baseline"] else None
            workers.append(Worker(config, bridge, first, step, start, baseline))

        def body(worker: Worker) -> None:
            try:
                worker.run()
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=body, args=(w,), name="netns gen") for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        if bridge.index:
            host.delete(bridge.index)
        host.close()
    lines = sorted((line for w in workers for line in w.lines), key=lambda t: t["index"])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    made = sorted(t["t_netns"] for t in lines if "t_netns" in t)
    achieved = (len(made) - 1) / (made[-1] - made[0]) if len(made) > 1 else 0.0
    summary = {
        "summary": True,
        "made": len(made),
        "achieved_per_s": achieved,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "wall_s": time.monotonic() - started,
        "failure": repr(failures[0]) if failures else None,
    }
    with out.open("w") as f:
        for line in [*lines, summary]:
            f.write(json.dumps(line) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
