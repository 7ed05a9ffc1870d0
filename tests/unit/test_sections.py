"""Section-name parsing: every accepted form and every kind of error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.gadget.sections import Kind, SectionSyntaxError, parse_section


@pytest.mark.parametrize(
    ("text", "kind", "parts", "per_netns"),
    [
        ("kprobe/do_sys_openat2", Kind.KPROBE, ("do_sys_openat2",), False),
        ("kretprobe/do_sys_openat2", Kind.KRETPROBE, ("do_sys_openat2",), False),
        (
            "tracepoint/syscalls/sys_enter_execve",
            Kind.TRACEPOINT,
            ("syscalls", "sys_enter_execve"),
            False,
        ),
        ("raw_tracepoint/sched_switch", Kind.RAW_TRACEPOINT, ("sched_switch",), False),
        ("raw_tp/sched_switch", Kind.RAW_TRACEPOINT, ("sched_switch",), False),
        ("socket", Kind.SOCKET, (), True),
        ("socket1", Kind.SOCKET, (), True),
        ("socket/dns", Kind.SOCKET, (), True),
        ("iter/task", Kind.ITER, ("task",), False),
        ("iter/tcp", Kind.ITER, ("tcp",), True),
        ("iter/udp", Kind.ITER, ("udp",), True),
        ("fentry/do_unlinkat", Kind.FENTRY, ("do_unlinkat",), False),
        ("fexit/do_unlinkat", Kind.FEXIT, ("do_unlinkat",), False),
        ("classifier/ingress/count", Kind.CLASSIFIER, ("ingress", "count"), True),
        ("classifier/egress/count", Kind.CLASSIFIER, ("egress", "count"), True),
        ("uprobe/libc:malloc", Kind.UPROBE, ("libc", "malloc"), False),
        (
            "uprobe//usr/lib/x86_64-linux-gnu/libc.so.6:malloc",
            Kind.UPROBE,
            ("/usr/lib/x86_64-linux-gnu/libc.so.6", "malloc"),
            False,
        ),
        ("uretprobe/libc:getaddrinfo", Kind.URETPROBE, ("libc", "getaddrinfo"), False),
        ("usdt/libstdcxx:libstdcxx:throw", Kind.USDT, ("libstdcxx", "libstdcxx", "throw"), False),
        (
            "usdt//usr/bin/python3.11:python:function__entry",
            Kind.USDT,
            ("/usr/bin/python3.11", "python", "function__entry"),
            False,
        ),
        ("lsm/file_open", Kind.LSM, ("file_open",), False),
    ],
)
def test_accepted_forms(text: str, kind: Kind, parts: tuple[str, ...], per_netns: bool) -> None:
    section = parse_section(text)
    assert section.kind is kind
    assert section.parts == parts
    assert section.per_netns is per_netns
    assert not section.optional


def test_question_mark_marks_optional() -> None:
    section = parse_section("?kprobe/do_sys_openat2")
    assert section.optional
    assert section.kind is Kind.KPROBE
    assert section.text == "?kprobe/do_sys_openat2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty section name"),
        ("?", "empty section name"),
        ("kprobe/", "empty kernel function"),
        ("kprobe", "unknown section type 'kprobe'"),
        ("kprobe/a/b", "unexpected '/'"),
        ("kprobe/do sys", "white space"),
        ("tracepoint/syscalls", "expected tracepoint/<category>/<name>"),
        ("tracepoint//x", "empty tracepoint category"),
        ("tracepoint/a/b/c", "expected tracepoint/<category>/<name>"),
        ("classifier/sideways/x", "is not ingress or egress"),
        ("classifier/ingress", "expected classifier/ingress/<program_name>"),
        ("classifier/ingress/", "empty program name"),
        ("uprobe/libc", "expected <file_path>:<symbol>"),
        ("uprobe/libc:", "empty <symbol>"),
        ("uprobe/:malloc", "empty file path"),
        ("uprobe/lib/libc.so:malloc", "must be absolute or a library name"),
        ("usdt/libc:provider", "expected <file_path>:<provider>:<probe>"),
        ("iter/foo", "unknown iterator 'foo'"),
        ("iter/", "unknown iterator ''"),
        ("lsm/", "empty LSM hook"),
        ("xdp/eth0", "unknown section type 'xdp'"),
        ("fentry/fn-name", "not a valid name"),
    ],
)
def test_rejected_forms(text: str, message: str) -> None:
    with pytest.raises(SectionSyntaxError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_section(text)


@given(st.text())
def test_parser_never_crashes(text: str) -> None:
    try:
        section = parse_section(text)
    except SectionSyntaxError as exc:
        assert str(exc)
    else:
        assert section.text == text
