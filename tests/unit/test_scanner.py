"""The one scan of gadget source: what is masked, what is kept, and the analyses built on it."""

from __future__ import annotations

import attrs
import pytest

from engine.errors import GadgetParseError
from engine.gadget.iter_output import expand_iter_output
from engine.gadget.maps import iter_source, iterator_only_maps, map_writers
from engine.gadget.model import Gadget
from engine.gadget.scanner import SourceScan
from engine.gadget.tc_returns import tc_return_warnings
from engine.kernel import skb_netns

TRICKY = """\
#define NOTE "events.perf_submit(ctx) in a macro"
#define LONG(x) \\
    events.perf_submit(x) \\
    // still the directive
/* SEC("kprobe/in_a_block_comment")
   events.perf_submit(ctx); */
BPF_PERF_OUTPUT(events);
BPF_PERF_OUTPUT(other);
// SEC("kprobe/in_a_line_comment") other.perf_submit(ctx);
SEC("tracepoint/a/b")
int tp(void *ctx)
{
    char *s = "other.perf_submit(ctx); } {";
    char c = '}';
    if (1) { { events.perf_submit(ctx, s, 1); } }
    // other.perf_submit(ctx, s, 1);
    return 0;
}
"""


def test_views_keep_every_offset_and_newline() -> None:
    scan = SourceScan.of(TRICKY)
    for view in (scan.text, scan.code, scan.with_directives):
        assert len(view) == len(TRICKY)
        assert [i for i, c in enumerate(view) if c == "\n"] == [
            i for i, c in enumerate(TRICKY) if c == "\n"
        ]


def test_what_each_view_masks() -> None:
    scan = SourceScan.of(TRICKY)
    # Comments go everywhere.
    for view in (scan.text, scan.code, scan.with_directives):
        assert "in_a_block_comment" not in view
        assert "in_a_line_comment" not in view
    # Directives, continuation lines included, go from `text` and `code` only.
    assert "#define" not in scan.text and "#define" not in scan.code
    assert "#define LONG(x)" in scan.with_directives
    assert "    events.perf_submit(x) \\" in scan.with_directives
    assert "still the directive" not in scan.with_directives  # a comment in it
    # Literal contents stay in `text` only; their quotes stay everywhere.
    assert '"other.perf_submit(ctx); } {"' in scan.text
    assert "other.perf_submit" not in scan.code
    assert "other.perf_submit" not in scan.with_directives
    assert "char c = ' ';" in scan.code
    assert 'SEC("tracepoint/a/b")' in scan.text
    assert 'SEC("              ")' in scan.code


def test_line_of_counts_from_one() -> None:
    scan = SourceScan.of(TRICKY)
    assert scan.line_of(0) == 1
    assert scan.line_of(TRICKY.index('SEC("tracepoint')) == 10
    assert scan.line_of(TRICKY.index("return 0")) == 17
    assert scan.line_of(len(TRICKY)) == TRICKY.count("\n") + 1


def test_body_spans_nested_braces_and_ignores_braces_in_literals() -> None:
    scan = SourceScan.of(TRICKY)
    span = scan.body_span("tp")
    assert span is not None
    start, end = span
    assert TRICKY[start - 1] == "{" and TRICKY[end - 1] == "}"
    assert TRICKY[end:] == "\n"  # the closing brace of the function, not one in a string
    body = scan.body("tp")
    assert body is not None and "events.perf_submit(ctx, s, 1)" in body
    assert scan.body("absent") is None


def test_body_is_the_definition_not_a_prototype_call_or_member() -> None:
    source = (
        "static int helper(int x);\n"
        "struct ops { int (*helper)(int); };\n"
        "int user(void) { if (helper(1)) { return 1; } return 0; }\n"
        "static int helper(int x) { return x + 1; }\n"
    )
    assert SourceScan.of(source).body("helper") == " return x + 1; }"


def test_calls_split_top_level_arguments() -> None:
    source = "int f(void) { g(a, h(b, c), (d, e)); g(); g(unclosed; }"
    scan = SourceScan.of(source)
    calls = list(scan.calls("g"))
    assert [[source[a:b].strip() for a, b in call.args] for call in calls[:2]] == [
        ["a", "h(b, c)", "(d, e)"],
        [""],
    ]
    assert source[calls[0].start : calls[0].end] == "g(a, h(b, c), (d, e))"
    # Unclosed: the call runs to the end and has no arguments.
    assert calls[2].args == () and calls[2].end == len(source)
    body = scan.body_span("f")
    assert body is not None
    assert len(list(scan.calls("h", within=body))) == 1
    assert list(scan.calls("h", within=(0, 5))) == []


def test_unterminated_comment_and_literal_stop_where_they_must() -> None:
    scan = SourceScan.of('char *s = "open\nint x; /* never closed\nint y;')
    assert "int x;" in scan.code  # a literal ends at its line
    assert "int y" not in scan.code  # an open comment runs to the end


def test_sec_in_comments_strings_and_macros_is_not_a_program() -> None:
    gadget = Gadget.from_source(
        "#define SEC(name) __attribute__((section(name), used))\n"
        '// SEC("kprobe/line")\n'
        '/* SEC("kprobe/block") */\n'
        'char *note = "SEC(\\"kprobe/string\\")";\n'
        'SEC("tracepoint/a/b")\n'
        "int tp(void *ctx) { return 0; }\n"
    )
    assert [(p.function, p.line) for p in gadget.programs] == [("tp", 5)]


def test_sec_argument_must_be_one_literal() -> None:
    with pytest.raises(GadgetParseError) as caught:
        Gadget.from_source('SEC(NAME)\nint a(void) { return 0; }\nSEC("x", "y")\nint b(void);\n')
    assert [p.line for p in caught.value.problems] == [1, 3]


def test_comment_or_string_naming_a_map_is_not_a_use() -> None:
    gadget = Gadget.from_source(TRICKY)
    assert map_writers(gadget, "events") == "tp"
    assert map_writers(gadget, "other") is None


def test_iterator_record_map_read_from_code_only() -> None:
    gadget = Gadget.from_source(
        "BPF_PERF_OUTPUT(tasks);\nBPF_PERF_OUTPUT(notes);\n"
        'SEC("iter/task")\nint it(struct bpf_iter__task *ctx) {\n'
        "    // notes.perf_submit(ctx, &r, 4);\n"
        '    char *s = "notes.perf_submit(ctx)";\n'
        "    ITER_OUTPUT(tasks, ctx, &r);\n    return 0;\n}\n"
        'SEC("iter/task")\nint text(struct bpf_iter__task *ctx) { /* tasks.perf_submit() */ }\n'
    )
    first, second = gadget.programs
    assert iter_source(gadget, first) == "tasks"
    assert iter_source(gadget, second) == "text"
    assert iterator_only_maps(gadget) == frozenset({"tasks"})


def test_iter_output_expanded_in_code_only_on_the_same_lines() -> None:
    source = (
        "// ITER_OUTPUT(tasks, ctx, &rec);\n"
        'char *s = "ITER_OUTPUT(tasks, ctx, &rec)";\n'
        "ITER_OUTPUT(tasks, ctx, &rec);\n"
    )
    out = expand_iter_output(SourceScan.of(source)).source
    assert out.count("\n") == source.count("\n")
    first, second, third = out.splitlines()
    assert (first, second) == tuple(source.splitlines()[:2])
    assert third.startswith("do { if (0) tasks.perf_submit(ctx, &rec,")
    untouched = SourceScan.of("int x;\n")
    assert expand_iter_output(untouched) is untouched


def test_tc_return_in_a_string_or_comment_is_not_a_verdict() -> None:
    gadget = Gadget.from_source(
        'SEC("classifier/ingress/a")\nint a(struct __sk_buff *skb) {\n'
        '    char *s = "return TC_ACT_SHOT;";\n'
        "    /* return TC_ACT_OK; */\n"
        "    return TC_ACT_OK;\n}\n",
        "tc.c",
    )
    assert [(w.line, w.value) for w in tc_return_warnings(gadget)] == [(5, "TC_ACT_OK")]


def test_skb_helper_needed_for_a_call_in_code_or_macro_not_in_a_string() -> None:
    program = 'SEC("socket")\nint f(struct __sk_buff *skb) { return 0; }\n'
    in_string = Gadget.from_source('char *s = "engine_skb_netns_id(skb)";\n' + program)
    in_macro = Gadget.from_source("#define NS(s) engine_skb_netns_id(s)\n" + program)
    in_code = Gadget.from_source(program.replace("return 0", "return engine_skb_netns_id(skb)"))
    assert not skb_netns.calls_helper(in_string)
    assert skb_netns.extra_source(in_string) == []  # and no BTF read for it
    assert skb_netns.calls_helper(in_macro)
    assert skb_netns.calls_helper(in_code)


def test_the_scan_follows_the_source() -> None:
    gadget = Gadget.from_source('SEC("tracepoint/a/b")\nint tp(void *ctx) { return 0; }\n')
    assert gadget.scan is gadget.scan  # computed once
    other = attrs.evolve(gadget, scan=SourceScan.of(gadget.source.replace("0;", "1;")))
    assert other.source != gadget.source
    assert other.scan.body("tp") == " return 1; }"
    with pytest.raises(TypeError):
        attrs.evolve(gadget, source="int x;")  # type: ignore[call-arg]


def test_definitions_are_top_level_functions_with_their_parameters() -> None:
    source = """\
struct s { int (*fn)(int); };
static int table[2] = {1, 2};
static __always_inline void emit(struct __sk_buff *skb, u32 n)
{
    if (n) { helper(skb); }
}
int proto(void);
SEC("x")
int prog(void *ctx) { emit(0, 1); return 0; }
"""
    scan = SourceScan.of(source)
    found = [
        (d.function, source[d.params[0] : d.params[1]], scan.line_of(d.body[0]))
        for d in scan.definitions()
    ]
    assert found == [("emit", "struct __sk_buff *skb, u32 n", 4), ("prog", "void *ctx", 9)]
    inside = source.index("helper")
    definition = scan.definition_at(inside)
    assert definition is not None and definition.function == "emit"
    assert scan.definition_at(source.index("table")) is None
