"""bcc's own tools, as Debian installs them (``bpfcc-tools``: ``/usr/sbin/NAME-bpfcc``): the C
text inside each Python script, read at test time, with the substitutions the tool makes
when run without options."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

import attrs

from tests.support.requirements import unavailable

TOOLS = Path("/usr/sbin")


@attrs.frozen
class Tool:
    """How a tool builds its C text: which of its string constants, joined in order, then
    each ``(placeholder, text)`` replaced, as the script does with no options."""

    name: str
    parts: Sequence[str]
    replacements: Sequence[tuple[str, str]] = ()

    @property
    def script(self) -> Path:
        return TOOLS / f"{self.name}-bpfcc"

    def text(self) -> str:
        if not self.script.is_file():
            unavailable(f"needs {self.script} (apt-get install bpfcc-tools)")
        strings = _string_constants(self.script.read_text())
        missing = [p for p in self.parts if p not in strings]
        assert not missing, f"{self.script} has no string {missing} any more"
        text = "".join(strings[p] for p in self.parts)
        for placeholder, replacement in self.replacements:
            assert placeholder in text, f"{self.name}: no {placeholder} in its text"
            text = text.replace(placeholder, replacement)
        return text

    def write(self, folder: Path) -> Path:
        """The C text as ``folder/NAME.c``, a gadget file for ``engine run``."""
        path = folder / f"{self.name}.c"
        path.write_text(self.text())
        return path


def _string_constants(script: str) -> dict[str, str]:
    """Each name first assigned a string literal anywhere in the script, with that string."""
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(script)):
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            found.setdefault(node.targets[0].id, node.value.value)
    return found


# Each tool as it builds its text with no options. Where a tool picks a variant by asking
# bcc about the kernel (a tracepoint that exists, raw tracepoint support, a task_struct
# member), the same question is asked here.
_CONNECTION_FILTERS = [("FILTER_DPORT", ""), ("FILTER_LPORT", ""), ("FILTER_FAMILY", "")]


def exitsnoop() -> Tool:
    return Tool(
        "exitsnoop",
        ["c"],
        [
            ("EBPF_COMMENT", ""),
            ("FILTER_PID", "task->pid != task->tgid"),
            ("FILTER_EXIT_CODE", "0"),
            ("PROCESS_START_TIME_NS", "task->start_time"),
        ],
    )


def _set_state_part(*, kprobe: bool | None = None) -> str:
    """tcpstates' and tcplife's choice: the tracepoint if it exists, else the kprobe."""
    if kprobe is None:
        from bcc import BPF

        kprobe = not BPF.tracepoint_exists("sock", "inet_sock_set_state")
    return "bpf_text_kprobe" if kprobe else "bpf_text_tracepoint"


def tcpstates(*, kprobe: bool | None = None) -> Tool:
    return Tool("tcpstates", ["bpf_header", _set_state_part(kprobe=kprobe)], _CONNECTION_FILTERS)


def tcplife(*, kprobe: bool | None = None) -> Tool:
    filters = [("FILTER_PID", ""), *_CONNECTION_FILTERS]
    return Tool("tcplife", ["bpf_text", _set_state_part(kprobe=kprobe)], filters)


def syscount() -> Tool:
    return Tool("syscount", ["text"])


def runqlat() -> Tool:
    from bcc import BPF

    state = "__state" if BPF.kernel_struct_has_field(b"task_struct", b"__state") == 1 else "state"
    part = "bpf_text_raw_tp" if BPF.support_raw_tracepoint() else "bpf_text_kprobe"
    return Tool(
        "runqlat",
        ["bpf_text", part],
        [
            ("STATE_FIELD", state),
            ("FILTER", "0"),
            ("FACTOR", "delta /= 1000;"),
            ("STORAGE", "BPF_HISTOGRAM(dist);"),
            ("STORE", "dist.atomic_increment(bpf_log2l(delta));"),
        ],
    )


def softirqs() -> Tool:
    return Tool(
        "softirqs",
        ["bpf_text", "bpf_text_time"],
        [
            ("STORE", "key.vec = valp->vec; dist.atomic_increment(key, delta);"),
            ("FILTER_CPU", ""),
        ],
    )
