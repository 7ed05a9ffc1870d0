"""C code that reads USDT probe arguments, for gadgets calling ``bpf_usdt_readarg``.

bcc generates these readers only for USDT contexts it enables itself, and it refuses to enable
probes that have a semaphore unless it is given a process id, which would miss processes
started later. The engine attaches USDT probes itself (with the kernel's semaphore support),
so it writes the readers too: bcc's rewriter turns ``bpf_usdt_readarg(N, ctx, &v)`` in
function ``F`` into a call of ``_bpf_readarg_F_N(ctx, &v, sizeof(v))``, which is defined here
from the SystemTap note's argument descriptions (x86-64 assembler operands such as
``-4@%eax``, ``8@-24(%rbp)`` or ``8@$5``).
"""

from __future__ import annotations

import re

import attrs

from engine.bcc.targets import TargetMissing, UsdtTarget

# x86-64 register names (any width) to the pt_regs member that holds them.
_REGISTERS = {
    **dict.fromkeys(("rax", "eax", "ax", "al"), "ax"),
    **dict.fromkeys(("rbx", "ebx", "bx", "bl"), "bx"),
    **dict.fromkeys(("rcx", "ecx", "cx", "cl"), "cx"),
    **dict.fromkeys(("rdx", "edx", "dx", "dl"), "dx"),
    **dict.fromkeys(("rsi", "esi", "si", "sil"), "si"),
    **dict.fromkeys(("rdi", "edi", "di", "dil"), "di"),
    **dict.fromkeys(("rbp", "ebp", "bp", "bpl"), "bp"),
    **dict.fromkeys(("rsp", "esp", "sp", "spl"), "sp"),
    "rip": "ip",
    **{f"r{n}{suffix}": f"r{n}" for n in range(8, 16) for suffix in ("", "d", "w", "b")},
}
_TYPES = {1: "u8", 2: "u16", 4: "u32", 8: "u64", -1: "s8", -2: "s16", -4: "s32", -8: "s64"}
_OPERAND = re.compile(
    r"^(?P<size>-?\d+)@(?:"
    r"\$(?P<const>-?\d+)"
    r"|%(?P<reg>\w+)"
    r"|(?P<off>-?\d+)?\(%(?P<base>\w+)\))$"
)


@attrs.frozen
class Operand:
    """Where one argument is: a constant, a register, or memory at register + offset."""

    ctype: str
    constant: int | None = None
    register: str | None = None
    offset: int = 0
    memory: bool = False

    def read(self) -> str:
        """C statements setting ``v`` (of type ``ctype``), or returning -1."""
        if self.constant is not None:
            return f"v = ({self.ctype}){self.constant};"
        if self.memory:
            address = f"(void *)(ctx->{self.register} + ({self.offset}))"
            return f"if (bpf_probe_read_user(&v, sizeof(v), {address})) return -1;"
        return f"v = ({self.ctype})ctx->{self.register};"


def parse_operand(text: str) -> Operand:
    match = _OPERAND.match(text)
    if match is None:
        raise TargetMissing(f"USDT argument {text!r} has a form the engine cannot read")
    size = int(match["size"])
    ctype = _TYPES.get(size)
    if ctype is None:
        raise TargetMissing(f"USDT argument {text!r} has an unusual size {size}")
    if match["const"] is not None:
        return Operand(ctype, constant=int(match["const"]))
    name = match["reg"] or match["base"]
    register = _REGISTERS.get(name)
    if register is None:
        raise TargetMissing(f"USDT argument {text!r} names an unknown register %{name}")
    if match["base"] is not None:
        return Operand(ctype, register=register, offset=int(match["off"] or 0), memory=True)
    return Operand(ctype, register=register)


def parse_arguments(args: str) -> list[Operand]:
    return [parse_operand(a) for a in args.split()]


def argument_readers(function: str, target: UsdtTarget) -> str:
    """C definitions of ``_bpf_readarg_<function>_<n>`` for every argument of the probe."""
    per_location = [parse_arguments(loc.args) for loc in target.locations]
    same = all(args == per_location[0] for args in per_location)
    if not same and not target.position_dependent:
        raise TargetMissing(
            f"USDT probe {target.provider}:{target.name} in {target.path} has "
            f"{len(target.locations)} locations with different argument layouts in a "
            "position-independent file: the engine cannot tell them apart"
        )
    count = max(len(args) for args in per_location)
    out = ["#include <uapi/linux/ptrace.h>\n"]
    for n in range(1, count + 1):
        body = []
        if same:
            body.append(_read_into(per_location[0], n))
        else:
            # A fixed-address executable: the program counter says which location fired.
            for loc, args in zip(target.locations, per_location, strict=True):
                body.append(f"  if (ctx->ip == {loc.vaddr:#x}) {{\n{_read_into(args, n)}  }}\n")
            body.append("  return -1;\n")
        out.append(
            f"static __always_inline int _bpf_readarg_{function}_{n}"
            "(struct pt_regs *ctx, void *dest, size_t len) {\n" + "".join(body) + "}\n"
        )
    return "".join(out)


def _read_into(args: list[Operand], n: int) -> str:
    if n > len(args):
        return "  return -1;\n"
    op = args[n - 1]
    return (
        f"  {{ {op.ctype} v; if (len != sizeof(v)) return -1; {op.read()}\n"
        f"    __builtin_memcpy(dest, &v, sizeof(v)); return 0; }}\n"
    )
