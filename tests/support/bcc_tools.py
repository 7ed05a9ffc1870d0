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
