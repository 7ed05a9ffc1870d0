"""Plain kernel structs through true layouts: what is renamed, what is followed, what a missing
member says, and that nothing changes when the headers match."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.bcc import loader
from engine.gadget.model import Gadget
from engine.gadget.scanner import SourceScan
from engine.kernel.btf import VMLINUX_BTF, Btf
from engine.kernel.headers import KernelHeaders
from engine.kernel.layouts import generate
from engine.kernel.plain_structs import explain, plain_names, rewrite_plain_structs
from tests.support.requirements import unavailable
from tests.unit.test_btf import Encoder


def _btf() -> Btf:
    enc = Encoder()
    s32 = enc.integer("int", 4, signed=True)
    u32 = enc.integer("unsigned int", 4)
    mm = enc.composite("mm_struct", 8, [("arg_start", enc.integer("long", 8), 0, 0)])
    files = enc.composite("files_struct", 4, [("count", s32, 0, 0)])
    mm_ptr, files_ptr = enc.ptr(mm), enc.ptr(files)
    task_ptr = enc.ptr(len(enc.records) + 2)  # to the struct that comes next
    enc.composite(
        "task_struct",
        40,
        [
            ("pid", s32, 0, 0),
            ("flags", u32, 32, 3),
            ("real_parent", task_ptr, 64, 0),
            ("mm", mm_ptr, 128, 0),
            ("files", files_ptr, 192, 0),
        ],
    )
    enc.composite("pt_regs", 8, [("di", u32, 0, 0)])
    enc.composite("data_t", 4, [("pid", u32, 0, 0)])
    return Btf.from_bytes(enc.blob())


GADGET = """\
#include <linux/sched.h>
#define PARENT(t) ((struct task_struct *)(t))->real_parent
struct data_t { u32 pid; };  /* struct task_struct in a comment stays */
int kprobe__f(struct pt_regs *ctx, struct task_struct *t)
{
    char *s = "struct task_struct";
    struct unknown_to_btf *u = 0;
    struct data_t d = {t->real_parent->pid};
    return t->mm->arg_start + sizeof(struct  task_struct);
}
"""


def test_kernel_structs_known_to_btf_are_renamed_on_their_own_lines() -> None:
    btf = _btf()
    scan = SourceScan.of(GADGET)
    assert plain_names(scan, btf) == {"task_struct"}
    rewritten = rewrite_plain_structs(scan, btf).source
    assert rewritten.splitlines() == [
        "#include <linux/sched.h>",
        "#define PARENT(t) ((struct task_struct__btf *)(t))->real_parent",
        "struct data_t { u32 pid; };  /* struct task_struct in a comment stays */",
        "int kprobe__f(struct pt_regs *ctx, struct task_struct__btf *t)",
        "{",
        '    char *s = "struct task_struct";',
        "    struct unknown_to_btf *u = 0;",
        "    struct data_t d = {t->real_parent->pid};",
        "    return t->mm->arg_start + sizeof(struct  task_struct__btf);",
        "}",
    ]


def test_a_struct_whose_bitfields_are_read_keeps_the_headers_layout() -> None:
    scan = SourceScan.of("int f(struct task_struct *t) { return t->flags & 1; }")
    assert plain_names(scan, _btf()) == frozenset()


def test_nothing_to_rename_is_the_same_scan() -> None:
    scan = SourceScan.of("struct data_t { u32 pid; };\nstruct pt_regs *r;\nstruct __sk_buff *skb;")
    assert rewrite_plain_structs(scan, _btf()) is scan


def test_members_gone_through_with_an_arrow_have_their_pointees_defined() -> None:
    btf = _btf()
    scan = rewrite_plain_structs(SourceScan.of(GADGET), btf)
    text = generate(btf, scan)
    # Through t->mm->...: defined; t->files is never followed: only declared.
    assert "struct mm_struct__btf {\n" in text
    assert "struct files_struct__btf;\n" in text
    assert "struct files_struct__btf {" not in text
    assert "    struct task_struct__btf *real_parent;\n" in text


def test_a_missing_member_names_struct_member_and_kernel() -> None:
    messages = [
        "g.c:3:12: error: no member named 'comm2' in 'struct task_struct__btf'",
        "g.c:4:12: error: no member named 'flags' in 'struct task_struct__btf'",
        "g.c:5:1: error: incomplete definition of type 'struct files_struct__btf'",
        "1 error generated.",
    ]
    release = os.uname().release
    assert list(explain(messages, _btf())) == [
        messages[0],
        f"engine: struct task_struct has no member 'comm2' in the running kernel ({release})",
        messages[1],
        f"engine: task_struct.flags is a bitfield in the running kernel ({release}), which true "
        "layouts leave out; read the bytes that hold it",
        messages[2],
        "engine: struct files_struct is only declared here: the engine defines the structs a "
        "gadget names and those it reaches with '->'; name it (struct files_struct *p = ...) "
        "to read it",
        messages[3],
    ]


EXIT = """\
TRACEPOINT_PROBE(sched, sched_process_exit)
{
    struct task_struct *t = 0;
    return 0;
}
"""


def _headers(monkeypatch: pytest.MonkeyPatch, release: str) -> None:
    headers = KernelHeaders(Path("/h"), release, os.uname().release)
    monkeypatch.setattr(loader, "process_headers", lambda: headers)


def test_matching_headers_leave_the_gadget_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    _headers(monkeypatch, os.uname().release)
    text = loader.full_source(Gadget.from_source(EXIT, "exit.c"))
    assert text.endswith('#line 1 "exit.c"\n' + EXIT)


def test_other_headers_read_the_running_kernels_layouts(monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.access(VMLINUX_BTF, os.R_OK):
        unavailable(f"needs a readable {VMLINUX_BTF}")
    _headers(monkeypatch, "6.1.0-other")
    text = loader.full_source(Gadget.from_source(EXIT, "exit.c"))
    assert text.endswith('#line 1 "exit.c"\n' + EXIT.replace("task_struct", "task_struct__btf"))
    assert "\nstruct task_struct__btf {\n" in text
