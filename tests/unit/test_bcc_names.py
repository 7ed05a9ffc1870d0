"""bcc's naming conventions as program kinds: names, defining macros, with and without SEC."""

from __future__ import annotations

import pytest

from engine.errors import GadgetParseError
from engine.gadget.bcc_names import section_of_name
from engine.gadget.model import Gadget
from engine.gadget.scanner import SourceScan
from engine.gadget.sections import Kind

MIXED = """\
#include <linux/sched.h>
BPF_HASH(counts, u32, u64);
// int kprobe__in_a_comment(struct pt_regs *ctx) { return 0; }
static int kprobe__helper(int x) { return x; }
int kprobe__prototype(struct pt_regs *ctx);

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u32 key = 0;
    counts.increment(key);
    return 0;
}

int kretprobe__sys_clone(struct pt_regs *ctx) { return 0; }

SEC("tracepoint/sched/sched_process_exit")
int by_section(void *ctx) { return 0; }

SEC("raw_tp/sched_switch")
int raw_tracepoint__sched_switch(struct bpf_raw_tracepoint_args *ctx) { return 0; }

RAW_TRACEPOINT_PROBE(sched_wakeup) { return 0; }
KFUNC_PROBE(do_unlinkat, int dfd, struct filename *name) { return 0; }
KRETFUNC_PROBE(do_unlinkat, int dfd, struct filename *name, long ret) { return 0; }
LSM_PROBE(file_open, struct file *file) { return 0; }

#ifdef LATENCY
int kprobe__tcp_v4_connect(struct pt_regs *ctx) { return 1; }
#else
int kprobe__tcp_v4_connect(struct pt_regs *ctx) { return 0; }
#endif
"""


def test_names_and_macros_are_programs_in_file_order() -> None:
    gadget = Gadget.from_source(MIXED, "mixed.c")
    assert [(p.function, p.section.text, p.line) for p in gadget.programs] == [
        ("tracepoint__sched__sched_process_exit", "tracepoint/sched/sched_process_exit", 7),
        ("kretprobe__sys_clone", "kretprobe/__x64_sys_clone", 14),
        ("by_section", "tracepoint/sched/sched_process_exit", 16),
        # One program: the SEC's, which agrees with the name.
        ("raw_tracepoint__sched_switch", "raw_tp/sched_switch", 19),
        ("raw_tracepoint__sched_wakeup", "raw_tracepoint/sched_wakeup", 22),
        ("kfunc__do_unlinkat", "fentry/do_unlinkat", 23),
        ("kretfunc__do_unlinkat", "fexit/do_unlinkat", 24),
        ("lsm__file_open", "lsm/file_open", 25),
        # Defined in both branches of an #if: one program, at its first definition.
        ("kprobe__tcp_v4_connect", "kprobe/tcp_v4_connect", 28),
    ]
    kinds = {p.function: p.kind for p in gadget.programs}
    assert kinds["kfunc__do_unlinkat"] is Kind.FENTRY
    assert kinds["lsm__file_open"] is Kind.LSM


def test_the_plan_of_a_named_program_is_that_of_its_section() -> None:
    named = Gadget.from_source("TRACEPOINT_PROBE(sched, sched_process_exit) { return 0; }")
    marked = Gadget.from_source(
        'SEC("tracepoint/sched/sched_process_exit")\n'
        "int tracepoint__sched__sched_process_exit(void *args) { return 0; }"
    )
    assert named.programs[0].plan() == marked.programs[0].plan()


def test_macro_defined_body_is_the_functions_body() -> None:
    scan = SourceScan.of(MIXED)
    body = scan.body("tracepoint__sched__sched_process_exit")
    assert body is not None and "counts.increment(key)" in body
    assert scan.body("kfunc__do_unlinkat") == " return 0; }"


def test_a_section_disagreeing_with_the_name_is_an_error() -> None:
    source = 'SEC("kprobe/tcp_v4_connect")\nint kprobe__tcp_v6_connect(void *ctx) { return 0; }\n'
    with pytest.raises(GadgetParseError) as raised:
        Gadget.from_source(source, "g.c")
    assert str(raised.value) == (
        'g.c:1: SEC("kprobe/tcp_v4_connect") disagrees with the name of its function '
        "'kprobe__tcp_v6_connect', which bcc's naming convention reads as "
        "kprobe/tcp_v6_connect; make them agree or rename the function"
    )


def test_bad_names_are_reported_with_file_and_line() -> None:
    source = (
        "int tracepoint__sched(void *ctx) { return 0; }\nint kprobe__(void *ctx) { return 0; }\n"
    )
    with pytest.raises(GadgetParseError) as raised:
        Gadget.from_source(source, "g.c")
    assert str(raised.value).splitlines() == [
        "g.c:1: function name 'tracepoint__sched': expected tracepoint__<category>__<name>",
        "g.c:2: function name 'kprobe__': nothing follows 'kprobe__'",
    ]


def test_no_programs_names_both_styles() -> None:
    with pytest.raises(GadgetParseError, match=r"or name it the bcc way \(kprobe__\.\.\."):
        Gadget.from_source("static int kprobe__x(void) { return 0; }")


@pytest.mark.parametrize(
    ("name", "section"),
    [
        ("kprobe__tcp_v4_connect", "kprobe/tcp_v4_connect"),
        ("kprobe__sys_openat", "kprobe/__x64_sys_openat"),
        ("kretprobe__do_sys_openat2", "kretprobe/do_sys_openat2"),
        ("tracepoint__raw_syscalls__sys_enter", "tracepoint/raw_syscalls/sys_enter"),
        ("raw_tracepoint__sched_switch", "raw_tracepoint/sched_switch"),
        ("kfunc__vfs_read", "fentry/vfs_read"),
        ("kretfunc__vfs_read", "fexit/vfs_read"),
        ("lsm__bprm_check_security", "lsm/bprm_check_security"),
        ("trace_exit", None),
        ("bpf_iter__task", None),
    ],
)
def test_section_of_name(name: str, section: str | None) -> None:
    assert section_of_name(name) == section
