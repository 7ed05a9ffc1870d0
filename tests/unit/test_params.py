"""Gadget parameters without the kernel: declarations found by the scanner (located errors),
values parsed and range-checked, ``--param`` resolved against several gadgets, the C text,
``engine check`` listing them and ``engine run --param`` refusing bad ones before compiling."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import engine
from engine.bcc.params import params_source
from engine.cli.main import main
from engine.errors import GadgetParseError, ParamError
from engine.gadget.model import Gadget
from engine.gadget.param_values import parse_assignments, resolve_values
from engine.gadget.params import TYPES
from tests.support.refusals import refusal

ROOT = Path(__file__).resolve().parents[2]
READ_SIZES = str(ROOT / "examples" / "read_sizes.c")
PROGRAM = 'SEC("tracepoint/syscalls/sys_enter_getpid")\nint f(void *ctx) { return 0; }\n'

DECLARED = f"""\
// ENGINE_PARAM(u8, in_a_comment, 1, "not a parameter");
ENGINE_PARAM(u64, min_latency_ns, 1000000, "report only calls slower than this");
ENGINE_PARAM(s32, offset, -0x10, "added to \\"every\\" value");
ENGINE_PARAM( unsigned   int , mask, 0xffffffffU, "a mask; with, commas");
ENGINE_PARAM(bool, verbose, false, "say more");
const char *text = "ENGINE_PARAM(u8, in_a_string, 1, \\"x\\");";
{PROGRAM}"""


def gadget(text: str, name: str = "g") -> Gadget:
    return Gadget.from_source(text + ("" if "SEC(" in text else PROGRAM), f"{name}.c")


def test_declarations_in_file_order_with_types_defaults_and_descriptions() -> None:
    params = Gadget.from_source(DECLARED, "g.c").params
    assert [(p.name, p.type.name, p.default, p.description, p.line) for p in params] == [
        ("min_latency_ns", "u64", 1000000, "report only calls slower than this", 2),
        ("offset", "s32", -16, 'added to "every" value', 3),
        ("mask", "unsigned int", 0xFFFFFFFF, "a mask; with, commas", 4),
        ("verbose", "bool", False, "say more", 5),
    ]


BAD = [
    ('ENGINE_PARAM(float, x, 1, "d");', r"type 'float' is not supported \(one of: bool, u8"),
    ("ENGINE_PARAM(u8, x, 1);", r'needs 4 arguments: \(TYPE, NAME, DEFAULT, "DESCRIPTION"\)'),
    ('ENGINE_PARAM(u8, 2x, 1, "d");', r"'2x' is not a C identifier"),
    ("ENGINE_PARAM(u8, x, 1, d);", r"the description must be one string literal"),
    ('ENGINE_PARAM(u8, x, 256, "d");', r"default of 'x': 256 is out of range for u8 \(0..255\)"),
    ('ENGINE_PARAM(s8, x, -129, "d");', r"-129 is out of range for s8 \(-128..127\)"),
    ('ENGINE_PARAM(u32, x, 010, "d");', r"'010' is not an integer"),
    ('ENGINE_PARAM(u32, x, MAX, "d");', r"'MAX' is not an integer"),
    ('ENGINE_PARAM(bool, x, 2, "d");', r"'2' is not a bool"),
    ('ENGINE_PARAM(u8, x, 1, "d")\n', r"end the declaration with ';'"),
    (
        'int f(void *c) { ENGINE_PARAM(u8, x, 1, "d"); return 0; }\n',
        r"declare parameters at file scope, not inside a function",
    ),
    # The error is on the last line of these.
    ('ENGINE_PARAM(u8, x, 1, "d");\nENGINE_PARAM(u16, x, 1, "d");', r"'x' is already declared"),
    (
        'ENGINE_PARAM(u8, x, 1, "d");\nSEC("tracepoint/a/b")\n'
        "int f(void *c) { return ENGINE_PARAM_GET(y); }",
        r"ENGINE_PARAM_GET\(y\): no such parameter \(declared: x\)",
    ),
]


@pytest.mark.parametrize(("text", "problem"), BAD)
def test_a_malformed_declaration_is_a_located_error(text: str, problem: str) -> None:
    with pytest.raises(GadgetParseError) as info:
        gadget(text)
    message = str(info.value)
    line = text.rstrip("\n").count("\n") + 1
    assert re.search(rf"^g\.c:{line}: ENGINE_PARAM\w*(: |\()", message), message
    assert re.search(problem, message), message


def test_a_malformed_declaration_is_reported_once_not_at_each_get(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.c"
    path.write_text(
        'ENGINE_PARAM(u8, level, 300, "how loud");\n'
        'SEC("tracepoint/syscalls/sys_enter_getpid")\n'
        "int f(void *ctx) { return ENGINE_PARAM_GET(level); }\n"
    )
    located = f"{path}:1: ENGINE_PARAM: default of 'level': 300 is out of range for u8 (0..255)"
    assert main(["check", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [located]


def test_parameter_and_section_problems_are_reported_together() -> None:
    text = 'ENGINE_PARAM(u8, x, 300, "d");\nSEC("nonsense/x")\nint f(void *c) { return 0; }\n'
    with pytest.raises(GadgetParseError) as info:
        Gadget.from_source(text, "g.c")
    assert [p.line for p in info.value.problems] == [1, 2]


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        ("u64", "18446744073709551615", 2**64 - 1),
        ("u64", "0x10", 16),
        ("u64", " 42ULL ", 42),
        ("s64", "-9223372036854775808", -(2**63)),
        ("__s16", "-32768", -32768),
        ("long", "-1", -1),
        ("bool", "TRUE", True),
        ("bool", "0", False),
    ],
)
def test_values_are_read_as_c_reads_them(kind: str, text: str, value: int) -> None:
    assert TYPES[kind].parse(text) == value


@pytest.mark.parametrize(
    ("kind", "given", "problem"),
    [
        ("u64", "-1", "-1 is out of range for u64"),
        ("u16", "65536", "65536 is out of range for u16 (0..65535)"),
        ("int", "2147483648", "out of range for int (-2147483648..2147483647)"),
        ("u32", "1.5", "'1.5' is not an integer"),
        ("u32", "", "'' is not an integer"),
        ("bool", "maybe", "'maybe' is not a bool"),
        ("u32", True, "True is not an integer"),
    ],
)
def test_bad_values_say_what_is_wrong(kind: str, given: object, problem: str) -> None:
    with pytest.raises((TypeError, ValueError), match=re.escape(problem)):
        TYPES[kind].value_of(given)


TWO = [
    gadget('ENGINE_PARAM(u32, limit, 1, "d");\nENGINE_PARAM(bool, on, true, "d");', "a"),
    gadget('ENGINE_PARAM(u8, limit, 2, "d");', "b"),
    gadget("", "c"),
]


def test_values_by_name_or_gadget_and_name() -> None:
    given = parse_assignments(["on=false", "a:limit=0x20", "b:limit=7"])
    assert resolve_values(given, TWO) == {"a": {"on": False, "limit": 32}, "b": {"limit": 7}}
    assert resolve_values({"b:limit": 3}, TWO) == {"b": {"limit": 3}}


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["limit=3"], "'limit' is declared by several gadgets: give a:limit or b:limit"),
        (["b:limit=256"], "256 is out of range for u8 (0..255), for b:limit"),
        (["lim=1"], "no gadget declares parameter 'lim': a has limit (u32), on (bool);"),
        (["c:limit=1"], "no parameter 'limit': c has no parameters"),
        (["d:limit=1"], "no gadget 'd' (gadgets: a, b, c)"),
        (["on"], "is not NAME=VALUE or GADGET:NAME=VALUE"),
        (["on=1", "on=0"], "on is given twice"),
    ],
)
def test_bad_assignments_name_the_expression(texts: list[str], message: str) -> None:
    refused = refusal(ParamError, lambda: resolve_values(parse_assignments(texts), TWO))
    assert message in refused, refused


def test_the_c_text_has_a_member_and_a_reader_per_parameter() -> None:
    (text,) = params_source(gadget('ENGINE_PARAM(s64, low, -9223372036854775808, "d");').params)
    assert "    s64 low;\n" in text
    assert "BPF_ARRAY(engine_params, struct engine_params, 1);" in text
    assert "return p ? p->low : (s64)(-9223372036854775807LL - 1);" in text
    assert params_source(()) == []


def test_check_lists_the_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", READ_SIZES]) == 0
    out = capsys.readouterr().out.splitlines()
    description = "report only reads of at least this many bytes"
    assert out[-1] == f"{READ_SIZES}:22: parameter min_size u64 = 1: {description}"
    assert main(["check", "--json", READ_SIZES]) == 0
    (plan,) = json.loads(capsys.readouterr().out)
    assert plan["function"] == "on_read"
    assert plan["params"] == [
        {
            "name": "min_size",
            "type": "u64",
            "default": 1,
            "description": "report only reads of at least this many bytes",
            "line": 22,
        }
    ]


def test_run_with_a_bad_param_is_one_line_and_exit_2_before_compiling(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", READ_SIZES, "--param", "min_size=-5"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "engine: --param 'min_size=-5': -5 is out of range for u64"
        " (0..18446744073709551615), for read_sizes:min_size"
    ]


async def test_open_engine_refuses_a_bad_value_before_compiling() -> None:
    with pytest.raises(ParamError, match=r"'min_size=lots': 'lots' is not an integer"):
        async with engine.open_engine(READ_SIZES, containers=False, params={"min_size": "lots"}):
            pass
