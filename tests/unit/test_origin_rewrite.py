"""The origin rewrite of a gadget's buffer writes (engine/gadget/origin.py): pure text, no bcc."""

from __future__ import annotations

import re

import pytest

from engine.errors import GadgetParseError
from engine.gadget.model import Gadget
from engine.gadget.origin import PERF, RING, OutputMap, output_maps, rewrite_outputs
from engine.gadget.scanner import SourceScan

TRACING = """\
struct small { u32 pid; u32 seq; };
BPF_RINGBUF_OUTPUT(out, 16);
BPF_PERF_OUTPUT(perf);
BPF_RINGBUF_OUTPUT(res, 16);

static __always_inline void emit(u32 n)
{
    struct small s = {.seq = n};
    out.ringbuf_output(&s,
                       sizeof(s),
                       0);
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    emit(1);
    struct small *r = res.ringbuf_reserve(sizeof(*r));
    if (!r)
        return 0;
    if (bpf_get_prandom_u32() & 1) {
        res.ringbuf_discard(r, 0);
        return 0;
    }
    res.ringbuf_submit(r, 0);
    struct small p = {.seq = 3};
    perf.perf_submit(ctx, &p, sizeof(p));  // out.ringbuf_output(in a comment)
    return 0;
}
"""


def rewrite(source: str) -> str:
    return rewrite_outputs(Gadget.from_source(source, "g.c")).gadget.source


def test_maps_are_numbered_in_declaration_order() -> None:
    assert output_maps(Gadget.from_source(TRACING, "g.c").scan) == {
        "out": OutputMap("out", 0, RING),
        "perf": OutputMap("perf", 1, PERF),
        "res": OutputMap("res", 2, RING),
    }


def test_every_line_keeps_its_number() -> None:
    text = rewrite(TRACING)
    before, after = TRACING.splitlines(), text.splitlines()
    assert len(after) == len(before)
    changed = [i + 1 for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    # The three-line call became one line and two empty ones; each other call, its own line.
    assert changed == [9, 10, 11, 18, 22, 25, 27]
    assert (after[9], after[10]) == ("", ";")
    assert after[27] == before[27]  # "return 0;" after them, unmoved


def test_tracing_writes_get_the_task_origin_and_keep_a_typed_copy() -> None:
    text = rewrite(TRACING)
    lines = text.splitlines()
    assert "engine_begin_task(0, &__engine_o)" in lines[8]  # out: map 0
    assert "if (0) out.ringbuf_output((&s) + 0, sizeof(s), 0);" in lines[8]
    assert "engine_begin_task(2, &__engine_o)" in lines[17]  # res.ringbuf_reserve
    assert "if (0) res.ringbuf_submit((r) + 0, 0);" in lines[24]
    assert "engine_stage_release(ENGINE_STAGE_OF(r))" in lines[21]
    assert "engine_begin_task(1, &__engine_o)" in lines[26]
    assert "if (0) perf.perf_submit(ctx, (&p) + 0, sizeof(p));" in lines[26]
    assert "// out.ringbuf_output(in a comment)" in lines[26]  # left alone
    # Live writes pass untyped pointers: only the dead copies tell bcc the record type.
    code = SourceScan.of(text).code
    live = re.findall(r"(?<!if \(0\) )\b(?:out|res|perf)\.(\w+)\(([^,]*)", code)
    assert {arg.strip() for method, arg in live if method != "ringbuf_reserve"} <= {
        "engine_raw(&__engine_s->o)",
        "__engine_p",
        "ctx",
    }


PACKETS = """\
struct pkt { u32 len; u32 dir; };
BPF_RINGBUF_OUTPUT(packets, 16);
BPF_PERF_OUTPUT(perfpkts);

static __always_inline void note(struct __sk_buff *skb, u32 dir)
{
    struct pkt p = {.len = skb->len, .dir = dir};
    packets.ringbuf_output(&p, sizeof(p), 0);
}

SEC("classifier/ingress/into")
int into(struct __sk_buff *skb) { note(skb, 0); return TC_ACT_UNSPEC; }

SEC("socket")
int seen(struct __sk_buff *s)
{
    struct pkt p = {.len = s->len};
    perfpkts.perf_submit(s, &p, sizeof(p));
    return 0;
}
"""


def test_packet_writes_get_the_packet_origin() -> None:
    lines = rewrite(PACKETS).splitlines()
    # A classifier only: the host-side veth (skb->ifindex) names it, no netns read.
    assert "engine_begin_skb(&__engine_o, ((struct __sk_buff *)(skb)), 0)" in lines[7]
    # A socket filter: the netns of the packet's device, from perf_submit's own context.
    assert "engine_skb_netns_id(((struct __sk_buff *)(s)))" in lines[17]


def test_iterator_output_is_left_as_written() -> None:
    source = """\
struct rec { u32 pid; };
BPF_PERF_OUTPUT(tasks);
SEC("iter/task")
int list_tasks(struct bpf_iter__task *ctx)
{
    struct rec r = {};
    if (0)
        tasks.perf_submit(ctx, &r, sizeof(r));
    return 0;
}
"""
    rewritten = rewrite_outputs(Gadget.from_source(source, "g.c"))
    assert rewritten.calls == 0
    assert rewritten.gadget.source == source
    assert rewritten.maps == {"tasks": OutputMap("tasks", 0, PERF)}


def problems(source: str) -> list[str]:
    with pytest.raises(GadgetParseError) as caught:
        rewrite_outputs(Gadget.from_source(source, "g.c"))
    return [str(p) for p in caught.value.problems]


def emitter(parameter: str, record: str) -> str:
    """A gadget's first lines: a ring buffer and a helper that writes `record` (line 6)."""
    return f"""\
struct e {{ u32 n; }};
BPF_RINGBUF_OUTPUT(out, 16);
static __always_inline void emit({parameter})
{{
    struct e x = {record};
    out.ringbuf_output(&x, sizeof(x), 0);
}}
"""


def test_a_function_run_by_packet_and_tracing_programs_is_refused_at_its_line() -> None:
    source = (
        emitter("struct __sk_buff *skb", "{}")
        + """\
SEC("socket")
int s(struct __sk_buff *skb) { emit(skb); return 0; }
SEC("tracepoint/a/b")
int t(void *ctx) { emit(0); return 0; }
"""
    )
    [problem] = problems(source)
    assert problem.startswith("g.c:6: function 'emit' runs in packet programs and in others")


def test_a_packet_write_needs_the_packet() -> None:
    source = (
        emitter("u32 n", "{.n = n}")
        + """\
SEC("classifier/egress/e")
int c(struct __sk_buff *skb) { emit(1); return TC_ACT_UNSPEC; }
"""
    )
    [problem] = problems(source)
    assert problem.startswith("g.c:6: out.ringbuf_output in 'emit', which a packet program runs")


def test_raw_helpers_and_misused_maps_are_refused_each_at_its_line() -> None:
    source = """\
struct e { u32 n; };
BPF_RINGBUF_OUTPUT(out, 16);
BPF_PERF_OUTPUT(perf);
SEC("tracepoint/a/b")
int t(void *ctx)
{
    struct e x = {};
    bpf_ringbuf_output(&out, &x, sizeof(x), 0);
    perf.ringbuf_output(&x, sizeof(x), 0);
    out.ringbuf_output(&x, sizeof(x));
    return 0;
}
"""
    found = problems(source)
    assert [p.split(":")[1] for p in found] == ["8", "9", "10"]
    assert "bpf_ringbuf_output() writes a record the engine cannot give an origin to" in found[0]
    assert "perf is a perf buffer: it has no ringbuf_output" in found[1]
    assert "out.ringbuf_output takes 3 arguments, not 2" in found[2]


def test_a_gadget_without_buffers_is_untouched() -> None:
    source = 'SEC("tracepoint/a/b")\nint t(void *ctx) { return 0; }\n'
    rewritten = rewrite_outputs(Gadget.from_source(source, "g.c"))
    assert rewritten.gadget.source == source and rewritten.maps == {}


def test_compiler_messages_show_the_users_line_once() -> None:
    source = """\
struct e { u32 n; };
BPF_RINGBUF_OUTPUT(out, 16);
SEC("tracepoint/a/b")
int t(void *ctx)
{
    struct e x = {};
    out.ringbuf_output(&x, sizeof(nope), 0);
    return nope;
}
"""
    rewritten = rewrite_outputs(Gadget.from_source(source, "g.c"))
    expansion = rewritten.gadget.source.splitlines()[6]
    messages = [
        "g.c:7:166: error: use of undeclared identifier 'nope'",
        expansion,
        " " * 165 + "^",
        "g.c:7:1238: error: use of undeclared identifier 'nope'",
        expansion,
        "g.c:8:12: error: use of undeclared identifier 'nope'",
        "    return nope;",
        "           ^",
        "2 errors generated.",
    ]
    assert rewritten.user_messages(messages) == [
        "g.c:7: error: use of undeclared identifier 'nope'",
        "    out.ringbuf_output(&x, sizeof(nope), 0);",
        "g.c:8:12: error: use of undeclared identifier 'nope'",
        "    return nope;",
        "           ^",
        "2 errors generated.",
    ]
