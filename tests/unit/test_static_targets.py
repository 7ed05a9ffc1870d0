"""Pure parts of static targets: library names, ELF symbols and USDT notes, argument readers,
ITER_OUTPUT expansion. Reading this machine's own binaries needs no root."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from engine.bcc.elf import ElfFile
from engine.bcc.targets import (
    TargetMissing,
    UsdtLocation,
    UsdtTarget,
    find_uprobe,
    find_usdt,
    resolve_library,
)
from engine.bcc.usdt import Operand, argument_readers, parse_operand
from engine.gadget.iter_output import expand_iter_output
from engine.gadget.maps import iterator_only_maps
from engine.gadget.model import Gadget
from engine.gadget.scanner import SourceScan
from tests.support.requirements import unavailable

CACHE = [
    ("libc.so.6", Path("/lib/x86_64-linux-gnu/libc.so.6")),
    ("libstdc++.so.6", Path("/lib/x86_64-linux-gnu/libstdc++.so.6")),
    ("libssl.so.3", Path("/lib/x86_64-linux-gnu/libssl.so.3")),
    ("libz.so.1", Path("/lib/x86_64-linux-gnu/libz.so.1")),
]
PYTHON = Path("/usr/bin/python3.11")


@pytest.mark.parametrize(
    ("name", "soname"),
    [
        ("libc", "libc.so.6"),
        ("c", "libc.so.6"),
        ("libstdc++", "libstdc++.so.6"),
        ("libstdcxx", "libstdc++.so.6"),
        ("libssl", "libssl.so.3"),
        ("ssl", "libssl.so.3"),
        ("libz.so.1", "libz.so.1"),
    ],
)
def test_library_names_resolve_like_the_dynamic_linker(name: str, soname: str) -> None:
    assert resolve_library(name, CACHE) == dict(CACHE)[soname]


def test_a_missing_library_names_what_was_searched() -> None:
    with pytest.raises(TargetMissing) as raised:
        resolve_library("nosuch", CACHE)
    message = str(raised.value)
    assert "no library 'nosuch'" in message
    assert "'nosuch', 'libnosuch'" in message
    assert "ldconfig -p" in message


def test_absolute_paths_must_exist(tmp_path: Path) -> None:
    with pytest.raises(TargetMissing, match="no file"):
        resolve_library(str(tmp_path / "nothing"), CACHE)


def _readelf_symbol(path: Path, name: str) -> int:
    out = subprocess.run(
        ["readelf", "-sW", path], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 8 and cols[3] == "FUNC" and cols[7].partition("@")[0] == name:
            return int(cols[1], 16)
    raise AssertionError(f"readelf does not list {name}")


def test_uprobe_offsets_agree_with_readelf() -> None:
    libc = resolve_library("libc")
    target = find_uprobe("libc", "getaddrinfo")
    # libc is linked at 0: the file offset of its text is the symbol's address.
    elf = ElfFile.read(libc)
    assert target.offset == elf.file_offset(_readelf_symbol(libc, "getaddrinfo"))
    assert target.path == libc


def test_a_missing_symbol_is_named() -> None:
    with pytest.raises(TargetMissing, match="no function symbol 'no_such_fn' in /"):
        find_uprobe("libc", "no_such_fn")


def test_python_usdt_probe_with_its_semaphore() -> None:
    if not PYTHON.exists():
        unavailable(f"needs {PYTHON} (with its USDT probes)")
    notes = subprocess.run(
        ["readelf", "-n", PYTHON], capture_output=True, text=True, check=True
    ).stdout
    block = notes[notes.index("Name: function__entry") :]
    found = re.search(
        r"Location: (0x[0-9a-f]+), Base: 0x[0-9a-f]+, Semaphore: (0x[0-9a-f]+)", block
    )
    assert found is not None
    location, semaphore = int(found.group(1), 16), int(found.group(2), 16)
    target = find_usdt(str(PYTHON), "python", "function__entry")
    elf = ElfFile.read(PYTHON)
    assert target.position_dependent
    assert [loc.offset for loc in target.locations] == [elf.file_offset(location)]
    assert target.locations[0].args == "8@%rbp 8@%r12 -4@%eax"
    assert target.semaphore_offset == elf.file_offset(semaphore)


def test_a_missing_usdt_probe_lists_what_the_file_has() -> None:
    if not PYTHON.exists():
        unavailable(f"needs {PYTHON} (with its USDT probes)")
    with pytest.raises(TargetMissing) as raised:
        find_usdt(str(PYTHON), "python", "nope")
    assert "no USDT probe python:nope in /usr/bin/python3.11" in str(raised.value)
    assert "python:function__entry" in str(raised.value)


@pytest.mark.parametrize(
    ("text", "operand"),
    [
        ("8@%rbp", Operand("u64", register="bp")),
        ("-4@%eax", Operand("s32", register="ax")),
        ("1@%r12b", Operand("u8", register="r12")),
        ("8@$-5", Operand("u64", constant=-5)),
        ("-8@-24(%rbp)", Operand("s64", register="bp", offset=-24, memory=True)),
        ("4@(%rdi)", Operand("u32", register="di", offset=0, memory=True)),
    ],
)
def test_usdt_operands(text: str, operand: Operand) -> None:
    assert parse_operand(text) == operand


@pytest.mark.parametrize("text", ["8@%xmm0", "3@%rax", "8@foo(%rip,%rax,8)"])
def test_unreadable_usdt_operands_are_refused(text: str) -> None:
    with pytest.raises(TargetMissing):
        parse_operand(text)


def _target(*args: str, fixed: bool) -> UsdtTarget:
    locations = tuple(UsdtLocation(0x100 * i, 0x400000 + i, a) for i, a in enumerate(args))
    return UsdtTarget(Path("/bin/x"), "p", "n", locations, 0, fixed)


def test_argument_readers_for_one_layout() -> None:
    code = argument_readers("fn", _target("-4@%eax 8@8(%rsp)", "-4@%eax 8@8(%rsp)", fixed=False))
    assert "_bpf_readarg_fn_1(struct pt_regs *ctx, void *dest, size_t len)" in code
    assert "s32 v; if (len != sizeof(v)) return -1; v = (s32)ctx->ax;" in code
    assert "bpf_probe_read_user(&v, sizeof(v), (void *)(ctx->sp + (8)))" in code
    assert "ctx->ip" not in code


def test_argument_readers_tell_locations_apart_by_address() -> None:
    code = argument_readers("fn", _target("8@%rdi", "8@%rsi", fixed=True))
    assert "if (ctx->ip == 0x400000)" in code
    assert "if (ctx->ip == 0x400001)" in code


def test_differing_layouts_in_position_independent_code_are_refused() -> None:
    with pytest.raises(TargetMissing, match="different argument layouts"):
        argument_readers("fn", _target("8@%rdi", "8@%rsi", fixed=False))


def test_iter_output_expands_on_the_same_line() -> None:
    source = "int a;\n    if (x) ITER_OUTPUT(tasks, ctx, &rec);\nint b;\n"
    out = expand_iter_output(SourceScan.of(source)).source
    assert out.count("\n") == source.count("\n")
    assert "if (x) do { if (0) tasks.perf_submit(ctx, &rec, sizeof(*(&rec)));" in out
    assert "bpf_seq_write((ctx)->meta->seq, &rec, sizeof(*(&rec))); } while (0);" in out


def test_maps_only_iterators_name_get_no_reader() -> None:
    gadget = Gadget.from_source(
        "BPF_PERF_OUTPUT(tasks);\nBPF_PERF_OUTPUT(events);\n"
        'SEC("iter/task")\nint it(struct bpf_iter__task *ctx) { ITER_OUTPUT(tasks, ctx, &r); '
        "return 0; }\n"
        'SEC("tracepoint/a/b")\nint tp(void *args) { events.perf_submit(args, &r, 4); return 0; }\n'
    )
    assert iterator_only_maps(gadget) == frozenset({"tasks"})
