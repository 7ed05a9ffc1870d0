"""Section names: what kind of program a SEC("...") declares and where it attaches.

Pure code, no I/O. The accepted forms follow Inspektor Gadget's program-type conventions.
A leading ``?`` (as libbpf uses for programs that are not loaded by default) marks a program
*optional*: when this kernel cannot run its kind, it is skipped with a warning instead of
failing the gadget.
"""

from __future__ import annotations

import enum

import attrs

ACCEPTED_FORMS = (
    "kprobe/<function>",
    "kretprobe/<function>",
    "tracepoint/<category>/<name>",
    "raw_tracepoint/<name>",
    "raw_tp/<name>",
    "socket[...]",
    "iter/task",
    "iter/tcp",
    "iter/udp",
    "fentry/<function>",
    "fexit/<function>",
    "classifier/ingress/<program_name>",
    "classifier/egress/<program_name>",
    "uprobe/<file_path>:<symbol>",
    "uretprobe/<file_path>:<symbol>",
    "usdt/<file_path>:<provider>:<probe>",
    "lsm/<hook>",
)


class Kind(enum.Enum):
    """A kind of program, named as in `engine features`."""

    KPROBE = "kprobe"
    KRETPROBE = "kretprobe"
    TRACEPOINT = "tracepoint"
    RAW_TRACEPOINT = "raw_tracepoint"
    SOCKET = "socket"
    ITER = "iter"
    FENTRY = "fentry"
    FEXIT = "fexit"
    CLASSIFIER = "classifier"
    UPROBE = "uprobe"
    URETPROBE = "uretprobe"
    USDT = "usdt"
    LSM = "lsm"


ITER_TARGETS = ("task", "tcp", "udp")
# Iterators over sockets list the sockets of the netns that creates them: per netns.
PER_NETNS_ITER_TARGETS = frozenset({"tcp", "udp"})
TC_DIRECTIONS = ("ingress", "egress")


@attrs.frozen
class Section:
    """A parsed section name.

    ``parts`` holds the attach target split into its pieces, by kind:
    kprobe/kretprobe/fentry/fexit: (function,); tracepoint: (category, name);
    raw_tracepoint: (name,); socket: (); iter: (target,); classifier: (direction, name);
    uprobe/uretprobe: (file_path, symbol); usdt: (file_path, provider, probe); lsm: (hook,).
    """

    text: str
    kind: Kind
    parts: tuple[str, ...]
    optional: bool = False

    @property
    def target(self) -> str:
        """The attach target as a person reads it."""
        if self.kind is Kind.TRACEPOINT:
            return "/".join(self.parts)
        if self.kind in (Kind.UPROBE, Kind.URETPROBE, Kind.USDT):
            return ":".join(self.parts)
        if self.kind is Kind.CLASSIFIER:
            return self.parts[0]
        if self.kind is Kind.SOCKET:
            return "all interfaces"
        return self.parts[0]

    @property
    def per_netns(self) -> bool:
        """Attached once per network namespace (as containers come and go), not once."""
        if self.kind in (Kind.SOCKET, Kind.CLASSIFIER):
            return True
        return self.kind is Kind.ITER and self.parts[0] in PER_NETNS_ITER_TARGETS


class SectionSyntaxError(ValueError):
    """What is wrong with a section name (the caller adds file and line)."""


def _need(value: str, what: str) -> str:
    if not value:
        raise SectionSyntaxError(f"empty {what}")
    if any(c.isspace() for c in value):
        raise SectionSyntaxError(f"white space in {what} {value!r}")
    return value


def _identifier(value: str, what: str) -> str:
    _need(value, what)
    if not (value.replace("_", "a").replace(".", "a").isalnum() and value.isascii()):
        raise SectionSyntaxError(f"{what} {value!r} is not a valid name")
    return value


def _path_and(rest: str, count: int, what: str) -> tuple[str, ...]:
    """Split ``<file_path>:<a>[:<b>]``; the path itself may not contain ':'."""
    pieces = rest.split(":")
    if len(pieces) != count + 1:
        raise SectionSyntaxError(f"expected <file_path>:{what}")
    path = _need(pieces[0], "file path")
    if not (path.startswith("/") or "/" not in path):
        raise SectionSyntaxError(
            f"file path {path!r} must be absolute or a library name such as 'libc'"
        )
    names = tuple(_need(p, n) for p, n in zip(pieces[1:], what.split(":"), strict=True))
    return (path, *names)


_SIMPLE_FUNCTION_KINDS = {
    "kprobe": Kind.KPROBE,
    "kretprobe": Kind.KRETPROBE,
    "fentry": Kind.FENTRY,
    "fexit": Kind.FEXIT,
    "raw_tracepoint": Kind.RAW_TRACEPOINT,
    "raw_tp": Kind.RAW_TRACEPOINT,
    "lsm": Kind.LSM,
}
_WHAT = {
    Kind.KPROBE: "kernel function",
    Kind.KRETPROBE: "kernel function",
    Kind.FENTRY: "kernel function",
    Kind.FEXIT: "kernel function",
    Kind.RAW_TRACEPOINT: "raw tracepoint name",
    Kind.LSM: "LSM hook",
}


def parse_section(text: str) -> Section:
    """Parse one section name, or raise SectionSyntaxError saying what is wrong."""
    optional = text.startswith("?")
    body = text[1:] if optional else text
    if not body:
        raise SectionSyntaxError("empty section name")
    if body.startswith("socket"):
        return Section(text, Kind.SOCKET, (), optional)
    prefix, slash, rest = body.partition("/")
    if not slash:
        raise SectionSyntaxError(f"unknown section type {prefix!r}")
    if prefix in _SIMPLE_FUNCTION_KINDS:
        kind = _SIMPLE_FUNCTION_KINDS[prefix]
        if "/" in rest:
            raise SectionSyntaxError(f"unexpected '/' in {_WHAT[kind]} {rest!r}")
        return Section(text, kind, (_identifier(rest, _WHAT[kind]),), optional)
    if prefix == "tracepoint":
        category, slash2, name = rest.partition("/")
        if not slash2 or "/" in name:
            raise SectionSyntaxError("expected tracepoint/<category>/<name>")
        parts = (_identifier(category, "tracepoint category"), _identifier(name, "tracepoint"))
        return Section(text, Kind.TRACEPOINT, parts, optional)
    if prefix == "iter":
        if rest not in ITER_TARGETS:
            raise SectionSyntaxError(
                f"unknown iterator {rest!r} (expected one of: {', '.join(ITER_TARGETS)})"
            )
        return Section(text, Kind.ITER, (rest,), optional)
    if prefix == "classifier":
        direction, slash2, name = rest.partition("/")
        if direction not in TC_DIRECTIONS:
            raise SectionSyntaxError(f"classifier direction {direction!r} is not ingress or egress")
        if not slash2 or "/" in name:
            raise SectionSyntaxError(f"expected classifier/{direction}/<program_name>")
        return Section(
            text, Kind.CLASSIFIER, (direction, _identifier(name, "program name")), optional
        )
    if prefix in ("uprobe", "uretprobe"):
        kind = Kind.UPROBE if prefix == "uprobe" else Kind.URETPROBE
        return Section(text, kind, _path_and(rest, 1, "<symbol>"), optional)
    if prefix == "usdt":
        return Section(text, Kind.USDT, _path_and(rest, 2, "<provider>:<probe>"), optional)
    raise SectionSyntaxError(f"unknown section type {prefix!r}")
