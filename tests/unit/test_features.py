"""The pure parts of feature probing: config parsing, the decision and its wording, output."""

from __future__ import annotations

import errno
import json

import attrs
import pytest

from engine.gadget.sections import Kind
from engine.kernel.features import (
    KernelConfig,
    KernelFeatures,
    KindSupport,
    ProbeFacts,
    decide,
    features_main,
    parse_lsm_list,
)
from engine.kernel.probe_loads import Refusal

KIND_NAMES = [
    "kprobe",
    "kretprobe",
    "tracepoint",
    "raw_tracepoint",
    "socket",
    "iter",
    "fentry",
    "fexit",
    "classifier",
    "uprobe",
    "uretprobe",
    "usdt",
    "lsm",
]

CONFIG_6_18 = """\
#
# Automatically generated file; DO NOT EDIT.
#
CONFIG_BPF_LSM=y
CONFIG_UPROBES=y
# CONFIG_KPROBES is not set
CONFIG_HAVE_KPROBES=y
CONFIG_NET_CLS_BPF=m
CONFIG_NET_SCH_INGRESS=y
CONFIG_LSM="landlock,lockdown,yama,bpf"
"""

ALL_LOADED: dict[str, Refusal | None] = {
    name: None
    for name in (
        "kprobe",
        "tracepoint",
        "raw_tracepoint",
        "socket",
        "classifier",
        "iter",
        "fentry",
        "fexit",
        "lsm",
    )
}


def good_facts() -> ProbeFacts:
    """A kernel on which everything works."""
    return ProbeFacts(
        config=KernelConfig.parse(
            CONFIG_6_18.replace("# CONFIG_KPROBES is not set", "CONFIG_KPROBES=y")
        ),
        is_root=True,
        tracefs_files=frozenset({"events", "kprobe_events", "uprobe_events"}),
        pmus=frozenset({"kprobe", "uprobe", "tracepoint"}),
        active_lsms=("lockdown", "capability", "bpf"),
        loads=ALL_LOADED,
    )


def eperm(description: str) -> Refusal:
    return Refusal(errno.EPERM, f"the kernel refused a {description} program (EPERM)")


def reasons(facts: ProbeFacts) -> dict[str, str | None]:
    """Kind name -> reason when unavailable, None when available."""
    return {s.kind.value: None if s.available else s.reason for s in decide(facts)}


def test_config_parse_reads_set_unset_and_quoted_options() -> None:
    config = KernelConfig.parse(CONFIG_6_18)
    assert config.options is not None
    assert config.options["CONFIG_KPROBES"] == "n"
    assert config.options["CONFIG_UPROBES"] == "y"
    assert config.options["CONFIG_NET_CLS_BPF"] == "m"
    assert config.options["CONFIG_LSM"] == "landlock,lockdown,yama,bpf"
    assert "Automatically generated file; DO NOT EDIT." not in str(config.options)


def test_config_lacks_only_what_it_knows_is_missing() -> None:
    config = KernelConfig.parse(CONFIG_6_18)
    assert config.lacks("CONFIG_KPROBES")
    assert not config.lacks("CONFIG_UPROBES")
    # Built as a module is built.
    assert not config.lacks("CONFIG_NET_CLS_BPF")
    # Absent from a .config means its dependencies were not met: not built.
    assert config.lacks("CONFIG_KPROBE_EVENTS")
    # No /proc/config.gz: the test loads decide, not the config.
    assert not KernelConfig(None).lacks("CONFIG_KPROBES")


def test_everything_available_on_a_complete_kernel() -> None:
    assert reasons(good_facts()) == dict.fromkeys(KIND_NAMES)


def test_kprobes_not_built_says_so_in_plain_words() -> None:
    facts = attrs.evolve(good_facts(), config=KernelConfig.parse(CONFIG_6_18))
    got = reasons(facts)
    expected = "kprobes are not built into this kernel (CONFIG_KPROBES)"
    assert got["kprobe"] == expected
    assert got["kretprobe"] == expected
    # uprobes share the kprobe program type but not the missing option.
    assert got["uprobe"] is None


def test_refused_trampolines_are_named_together() -> None:
    loads = {
        **ALL_LOADED,
        "fentry": eperm("tracing (fentry)"),
        "fexit": eperm("tracing (fexit)"),
        "lsm": eperm("BPF LSM"),
    }
    got = reasons(attrs.evolve(good_facts(), loads=loads))
    assert got["fentry"] == (
        "the kernel refused a tracing (fentry) program (EPERM): fentry/fexit/lsm are blocked here"
    )
    assert got["fexit"] == (
        "the kernel refused a tracing (fexit) program (EPERM): fentry/fexit/lsm are blocked here"
    )
    assert got["lsm"] == (
        "the kernel refused a BPF LSM program (EPERM): fentry/fexit/lsm are blocked here"
    )
    assert got["iter"] is None


def test_eperm_without_root_asks_for_root() -> None:
    loads = {**ALL_LOADED, "socket": eperm("socket filter"), "fentry": eperm("tracing (fentry)")}
    got = reasons(attrs.evolve(good_facts(), is_root=False, loads=loads))
    assert got["socket"] == "the kernel refused a socket filter program (EPERM): run as root"
    assert got["fentry"] == "the kernel refused a tracing (fentry) program (EPERM): run as root"


def test_other_errors_keep_the_refusal_text() -> None:
    refusal = Refusal(errno.EINVAL, "the kernel refused a task iterator program (EINVAL)")
    got = reasons(attrs.evolve(good_facts(), loads={**ALL_LOADED, "iter": refusal}))
    assert got["iter"] == "the kernel refused a task iterator program (EINVAL)"


def test_lsm_needs_bpf_in_the_active_list() -> None:
    got = reasons(attrs.evolve(good_facts(), active_lsms=("lockdown", "capability")))
    assert got["lsm"] == (
        "BPF LSM is not active (bpf is not in /sys/kernel/security/lsm; boot with lsm=...,bpf)"
    )
    unknown = reasons(attrs.evolve(good_facts(), active_lsms=None))
    assert unknown["lsm"] is not None
    assert unknown["lsm"].startswith("cannot tell whether BPF LSM is active")
    assert "mount -t securityfs" in unknown["lsm"]


def test_bpf_lsm_not_built() -> None:
    config = KernelConfig.parse("CONFIG_KPROBES=y\nCONFIG_UPROBES=y\n# CONFIG_BPF_LSM is not set\n")
    got = reasons(attrs.evolve(good_facts(), config=config))
    assert got["lsm"] == "BPF LSM is not built into this kernel (CONFIG_BPF_LSM)"


def test_attach_points_fall_back_from_pmu_to_tracefs() -> None:
    tracefs_only = attrs.evolve(good_facts(), pmus=frozenset())
    assert reasons(tracefs_only)["kprobe"] is None
    assert reasons(tracefs_only)["uprobe"] is None
    nothing = attrs.evolve(good_facts(), pmus=frozenset(), tracefs_files=frozenset())
    got = reasons(nothing)
    assert got["kprobe"] is not None
    assert "no kprobe perf PMU and tracefs is not mounted" in got["kprobe"]
    assert got["usdt"] is not None
    assert "no uprobe perf PMU" in got["usdt"]
    assert got["tracepoint"] == (
        "tracefs is not mounted at /sys/kernel/tracing"
        " (mount -t tracefs tracefs /sys/kernel/tracing)"
    )
    no_events = attrs.evolve(
        good_facts(), pmus=frozenset({"uprobe"}), tracefs_files=frozenset({"events"})
    )
    assert reasons(no_events)["kprobe"] == (
        "there is neither a kprobe perf PMU nor /sys/kernel/tracing/kprobe_events"
    )


def test_classifier_needs_cls_bpf_and_clsact() -> None:
    config = KernelConfig.parse("CONFIG_NET_CLS_BPF=y\n# CONFIG_NET_SCH_INGRESS is not set\n")
    got = reasons(attrs.evolve(good_facts(), config=config))
    assert got["classifier"] == (
        "the clsact traffic control module is not built (CONFIG_NET_SCH_INGRESS)"
    )


def test_parse_lsm_list() -> None:
    assert parse_lsm_list("lockdown,capability,landlock,bpf") == (
        "lockdown",
        "capability",
        "landlock",
        "bpf",
    )
    assert parse_lsm_list("") == ()


def sample_features() -> KernelFeatures:
    return KernelFeatures(release="6.18.0-test", kinds=decide(good_facts()))


def test_supports_takes_a_kind_or_its_name() -> None:
    features = sample_features()
    assert features.supports("usdt") == features.supports(Kind.USDT)
    assert features.supports("usdt").kind is Kind.USDT
    with pytest.raises(ValueError, match="kprobes"):
        features.supports("kprobes")


def test_json_shape() -> None:
    rows = sample_features().to_json()
    assert [row["kind"] for row in rows] == KIND_NAMES
    for row in rows:
        assert set(row) == {"kind", "available", "reason"}
        assert isinstance(row["available"], bool)
        assert isinstance(row["reason"], str)
        assert row["reason"]
    assert json.loads(json.dumps(rows)) == rows


def test_table_is_aligned() -> None:
    features = KernelFeatures(
        release="6.18.0-test",
        kinds=(
            KindSupport(
                Kind.KPROBE, False, "kprobes are not built into this kernel (CONFIG_KPROBES)"
            ),
            KindSupport(Kind.RAW_TRACEPOINT, True, "a test program loaded"),
        ),
    )
    lines = features.format_table().splitlines()
    assert lines[0] == "kernel 6.18.0-test"
    header, kprobe, raw = lines[1:]
    assert header.split() == ["kind", "available", "reason"]
    column = header.index("available")
    assert kprobe.index("no") == column
    assert raw.index("yes") == column
    assert kprobe.index("kprobes are") == raw.index("a test") == header.index("reason")


def test_features_main_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    # Unprivileged or not, the probe reports every kind and never raises.
    assert features_main(as_json=True) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["kind"] for row in rows] == KIND_NAMES
