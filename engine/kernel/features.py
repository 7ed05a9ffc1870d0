"""Which kinds of program this kernel can run, probed once into a frozen value.

The kernel configuration alone cannot tell: a kernel may be built with fentry support and
still refuse trampolines, or have BPF LSM built in but not active. So, besides reading
``/proc/config.gz``, tracefs and securityfs, the probe loads the smallest possible program
(``r0 = 0; exit``) of each type through bpf(2) and closes it at once (engine.kernel.probe_loads).
Nothing is attached.

The probe never raises: anything unexpected makes the kinds it concerns unavailable, with
the reason in plain words.
"""

from __future__ import annotations

import errno
import gzip
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from engine.gadget.sections import Kind
from engine.kernel.probe_loads import Refusal, try_loads

log = logging.getLogger(__name__)

TRACEFS = Path("/sys/kernel/tracing")
LSM_LIST = Path("/sys/kernel/security/lsm")
KERNEL_CONFIG = Path("/proc/config.gz")
PMU_DEVICES = Path("/sys/bus/event_source/devices")

# Trampoline-based kinds: a kernel that refuses one usually refuses them all.
_TRAMPOLINE_KINDS = (Kind.FENTRY, Kind.FEXIT, Kind.LSM)


@attrs.frozen
class KindSupport:
    """Whether programs of one kind can run here; ``reason`` says why (or what proved it)."""

    kind: Kind
    available: bool
    reason: str


@attrs.frozen
class KernelFeatures:
    """The outcome of `probe_features`: one `KindSupport` per kind, in `Kind` order."""

    release: str
    kinds: tuple[KindSupport, ...]

    def supports(self, kind: Kind | str) -> KindSupport:
        """The support for ``kind`` (a `Kind` or its name, e.g. "kprobe")."""
        wanted = Kind(kind)
        for support in self.kinds:
            if support.kind is wanted:
                return support
        raise LookupError(f"{wanted.value} was not probed")

    def to_json(self) -> list[dict[str, str | bool]]:
        return [
            {"kind": s.kind.value, "available": s.available, "reason": s.reason} for s in self.kinds
        ]

    def format_table(self) -> str:
        rows = [("kind", "available", "reason")]
        rows += [(s.kind.value, "yes" if s.available else "no", s.reason) for s in self.kinds]
        kind_width = max(len(r[0]) for r in rows)
        available_width = max(len(r[1]) for r in rows)
        lines = [f"kernel {self.release}"]
        lines += [
            f"{kind:<{kind_width}}  {available:<{available_width}}  {reason}".rstrip()
            for kind, available, reason in rows
        ]
        return "\n".join(lines)


@attrs.frozen
class KernelConfig:
    """The kernel's build options, or nothing known when ``/proc/config.gz`` is missing."""

    options: Mapping[str, str] | None

    @classmethod
    def parse(cls, text: str) -> KernelConfig:
        """Read a kernel .config: ``CONFIG_X=y`` lines and ``# CONFIG_X is not set`` lines."""
        options: dict[str, str] = {}
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("# CONFIG_") and line.endswith(" is not set"):
                options[line[2 : -len(" is not set")]] = "n"
            elif line.startswith("CONFIG_") and "=" in line:
                name, _, value = line.partition("=")
                options[name] = value.strip('"')
        return cls(options)

    def lacks(self, option: str) -> bool:
        """True only when the configuration is known and ``option`` is neither y nor m.

        An option absent from a .config was not set (its dependencies were not met).
        """
        if self.options is None:
            return False
        return self.options.get(option, "n") not in ("y", "m")


@attrs.frozen
class ProbeFacts:
    """Everything the decision needs, gathered from the kernel; the decision itself is pure."""

    config: KernelConfig
    is_root: bool
    tracefs_files: frozenset[str]
    pmus: frozenset[str]
    active_lsms: tuple[str, ...] | None
    # Program kind of each test load -> None when the kernel accepted it.
    loads: Mapping[str, Refusal | None]


def probe_features() -> KernelFeatures:
    """Probe this kernel (as root for meaningful answers); takes a few milliseconds."""
    facts = gather_facts()
    features = KernelFeatures(release=os.uname().release, kinds=decide(facts))
    for support in features.kinds:
        log.debug("%s: %s (%s)", support.kind.value, support.available, support.reason)
    return features


def features_main(as_json: bool) -> int:
    """`engine features [--json]`: print what this kernel supports."""
    features = probe_features()
    if as_json:
        print(json.dumps(features.to_json(), indent=2))
    else:
        print(features.format_table())
    return 0


def decide(facts: ProbeFacts) -> tuple[KindSupport, ...]:
    """Turn the gathered facts into one `KindSupport` per kind."""
    return tuple(_decide_kind(kind, facts) for kind in Kind)


def _decide_kind(kind: Kind, facts: ProbeFacts) -> KindSupport:
    for problem in _problems(kind, facts):
        if problem is not None:
            return KindSupport(kind, False, problem)
    return KindSupport(kind, True, _evidence(kind))


def _problems(kind: Kind, facts: ProbeFacts) -> Iterable[str | None]:
    """The checks for one kind, cheapest and most explanatory first; None means passed."""
    config = facts.config
    if kind in (Kind.KPROBE, Kind.KRETPROBE):
        if config.lacks("CONFIG_KPROBES"):
            yield "kprobes are not built into this kernel (CONFIG_KPROBES)"
        yield _load_problem("kprobe", facts)
        yield _attach_point_problem("kprobe", facts)
    elif kind in (Kind.UPROBE, Kind.URETPROBE, Kind.USDT):
        if config.lacks("CONFIG_UPROBES"):
            yield "uprobes are not built into this kernel (CONFIG_UPROBES)"
        yield _load_problem("kprobe", facts)
        yield _attach_point_problem("uprobe", facts)
    elif kind is Kind.TRACEPOINT:
        yield _load_problem("tracepoint", facts)
        if "events" not in facts.tracefs_files:
            yield f"tracefs is not mounted at {TRACEFS} (mount -t tracefs tracefs {TRACEFS})"
    elif kind is Kind.CLASSIFIER:
        for option, what in (
            ("CONFIG_NET_CLS_BPF", "cls_bpf"),
            ("CONFIG_NET_SCH_INGRESS", "clsact"),
        ):
            if config.lacks(option):
                yield f"the {what} traffic control module is not built ({option})"
        yield _load_problem("classifier", facts)
    elif kind is Kind.LSM:
        if config.lacks("CONFIG_BPF_LSM"):
            yield "BPF LSM is not built into this kernel (CONFIG_BPF_LSM)"
        yield _load_problem("lsm", facts)
        yield _lsm_problem(facts.active_lsms)
    else:
        yield _load_problem(kind.value, facts)


def _load_problem(name: str, facts: ProbeFacts) -> str | None:
    refusal = facts.loads.get(name, Refusal(0, "it was not probed"))
    if refusal is None:
        return None
    if refusal.errno != errno.EPERM:
        return refusal.problem
    if not facts.is_root:
        return f"{refusal.problem}: run as root"
    # Name every trampoline kind the kernel refused, as they usually fail together.
    blocked = [
        k.value
        for k in _TRAMPOLINE_KINDS
        if (r := facts.loads.get(k.value)) is not None and r.errno == errno.EPERM
    ]
    if name in blocked:
        return f"{refusal.problem}: {'/'.join(blocked)} are blocked here"
    return refusal.problem


def _attach_point_problem(probe: str, facts: ProbeFacts) -> str | None:
    """bcc attaches through the perf PMU when there is one, else through tracefs."""
    if probe in facts.pmus or f"{probe}_events" in facts.tracefs_files:
        return None
    if not facts.tracefs_files:
        return (
            f"there is no {probe} perf PMU and tracefs is not mounted at {TRACEFS}"
            f" (mount -t tracefs tracefs {TRACEFS})"
        )
    return f"there is neither a {probe} perf PMU nor {TRACEFS}/{probe}_events"


def _lsm_problem(active_lsms: tuple[str, ...] | None) -> str | None:
    if active_lsms is None:
        return (
            f"cannot tell whether BPF LSM is active: {LSM_LIST} is unreadable"
            " (mount -t securityfs securityfs /sys/kernel/security)"
        )
    if "bpf" not in active_lsms:
        return f"BPF LSM is not active (bpf is not in {LSM_LIST}; boot with lsm=...,bpf)"
    return None


def _evidence(kind: Kind) -> str:
    if kind is Kind.LSM:
        return "a test program loaded and bpf is an active LSM"
    return "a test program loaded"


def parse_lsm_list(text: str) -> tuple[str, ...]:
    return tuple(name for name in text.strip().split(",") if name)


def gather_facts() -> ProbeFacts:
    """Read what the kernel says about itself and try each test load."""
    return ProbeFacts(
        config=_read_config(),
        is_root=os.geteuid() == 0,
        tracefs_files=_list_dir(TRACEFS),
        pmus=_list_dir(PMU_DEVICES),
        active_lsms=_read_lsms(),
        loads=try_loads(),
    )


def _read_config() -> KernelConfig:
    try:
        return KernelConfig.parse(gzip.decompress(KERNEL_CONFIG.read_bytes()).decode())
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        log.info("kernel configuration unknown (%s): relying on test loads only", exc)
        return KernelConfig(None)


def _list_dir(path: Path) -> frozenset[str]:
    try:
        return frozenset(os.listdir(path))
    except OSError:
        return frozenset()


def _read_lsms() -> tuple[str, ...] | None:
    try:
        return parse_lsm_list(LSM_LIST.read_text())
    except OSError:
        return None
