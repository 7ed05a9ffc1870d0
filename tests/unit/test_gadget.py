"""Finding programs in gadget files: file:line errors, all problems at once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.errors import GadgetError, GadgetParseError
from engine.gadget.model import Gadget
from engine.gadget.sections import Kind

GOOD = """\
#include <linux/sched.h>
// SEC("kprobe/commented_out") is ignored
/* SEC("iter/foo") too */
struct data_t { u32 pid; };
BPF_RINGBUF_OUTPUT(events, 8);

SEC("tracepoint/syscalls/sys_enter_execve")
int on_exec(struct tracepoint__syscalls__sys_enter_execve *args)
{
    return 0;
}

static __always_inline int helper(void) { return 1; }

SEC("classifier/ingress/count")
int count_in(struct __sk_buff *skb) { return TC_ACT_UNSPEC; }

SEC("?kprobe/do_sys_openat2") int
maybe(struct pt_regs *ctx) { return 0; }
"""


def test_programs_in_file_order_with_lines() -> None:
    gadget = Gadget.from_source(GOOD, "good.c")
    assert [(p.function, p.kind, p.line) for p in gadget.programs] == [
        ("on_exec", Kind.TRACEPOINT, 7),
        ("count_in", Kind.CLASSIFIER, 15),
        ("maybe", Kind.KPROBE, 18),
    ]
    assert gadget.programs[2].optional
    assert gadget.programs[1].per_netns
    assert gadget.programs[0].plan() == {
        "function": "on_exec",
        "kind": "tracepoint",
        "target": "syscalls/sys_enter_execve",
        "section": "tracepoint/syscalls/sys_enter_execve",
        "line": 7,
        "attach": "static",
        "optional": False,
    }


def test_every_problem_reported_with_file_and_line() -> None:
    source = """\
SEC("classifier/sideways/x")
int a(void *ctx) { return 0; }
SEC("uprobe/libc")
int b(void *ctx) { return 0; }
SEC("tracepoint/sched/sched_switch")
int a2(void *ctx) { return 0; }
SEC("tracepoint/sched/sched_wakeup")
int a2(void *ctx) { return 0; }
SEC("iter/task")
struct not_a_function;
SEC(kprobe/x)
int c(void *ctx) { return 0; }
SEC("iter/task")
"""
    with pytest.raises(GadgetParseError) as info:
        Gadget.from_source(source, "bad.c")
    lines = str(info.value).splitlines()
    assert len(info.value.problems) == 6
    assert lines[0].startswith('bad.c:1: SEC("classifier/sideways/x") classifier direction')
    assert "accepted forms:" in lines[0]
    assert lines[1].startswith('bad.c:3: SEC("uprobe/libc") expected <file_path>:<symbol>')
    assert lines[2].startswith("bad.c:7: SEC(\"tracepoint/sched/sched_wakeup\") function 'a2'")
    assert "line 5" in lines[2]
    assert lines[3] == 'bad.c:9: SEC("iter/task") is not followed by a function definition'
    assert lines[4].startswith("bad.c:11: SEC needs one string literal")
    assert lines[5] == 'bad.c:13: SEC("iter/task") is not followed by a function definition'


def test_prototype_is_not_a_program() -> None:
    with pytest.raises(GadgetParseError, match="not followed by a function definition"):
        Gadget.from_source('SEC("iter/task")\nint f(void *ctx);\n', "p.c")


def test_no_programs() -> None:
    with pytest.raises(GadgetParseError, match=r"e\.c:1: no programs"):
        Gadget.from_source("int x;\n", "e.c")


def test_string_with_comment_marker_is_text() -> None:
    source = 'char *s = "/* not a comment";\nSEC("socket")\nint f(void *skb) { return 0; }\n'
    gadget = Gadget.from_source(source, "s.c")
    assert [p.function for p in gadget.programs] == ["f"]


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(GadgetError, match="no such file"):
        Gadget.from_file(tmp_path / "missing.c")
    with pytest.raises(GadgetError, match="is a directory"):
        Gadget.from_file(tmp_path)
    bad = tmp_path / "latin1.c"
    bad.write_bytes(b"int x;\n// caf\xe9\n")
    with pytest.raises(GadgetError, match=r"latin1\.c:2: is not UTF-8"):
        Gadget.from_file(bad)


def test_unreadable(tmp_path: Path) -> None:
    f = tmp_path / "secret.c"
    f.write_text("x")
    f.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(GadgetError, match="permission denied"):
            Gadget.from_file(f)
        return
    # Root reads anything: check as an unprivileged user in a child process.
    pid = os.fork()
    if pid == 0:
        os.setgid(65534)
        os.setuid(65534)
        try:
            Gadget.from_file(f)
        except GadgetError as exc:
            os._exit(0 if "permission denied" in str(exc) else 1)
        os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_name_is_file_stem() -> None:
    assert Gadget.from_source(GOOD, "/x/execsnoop.c").name == "execsnoop"
