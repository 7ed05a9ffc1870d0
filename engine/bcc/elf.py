"""Just enough of ELF to place uprobes: symbols, loadable segments and SystemTap USDT notes.

Pure reading of 64-bit little-endian ELF files (the only kind bcc runs on here). Uprobes are
placed by *file offset*, and the kernel's USDT semaphore counter (``ref_ctr_offset``) is a
file offset too, so addresses from the symbol tables and notes are translated through the
loadable segments.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import attrs

ET_EXEC = 2
ET_DYN = 3
_PT_LOAD = 1
_SHT_SYMTAB, _SHT_NOTE, _SHT_DYNSYM = 2, 7, 11
_STT_FUNC, _STT_GNU_IFUNC = 2, 10
_SHN_UNDEF = 0
_NT_STAPSDT = 3

_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_NOTE = struct.Struct("<III")


class ElfError(ValueError):
    """The file is not an ELF file this module can read."""


@attrs.frozen
class Segment:
    vaddr: int
    offset: int
    filesz: int


@attrs.frozen
class Section:
    name: str
    type: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


@attrs.frozen
class UsdtNote:
    """One USDT probe location as the compiler recorded it (addresses are link-time)."""

    provider: str
    name: str
    pc: int
    base: int
    semaphore: int
    args: str


@attrs.frozen
class ElfFile:
    path: Path
    type: int
    segments: tuple[Segment, ...]
    sections: tuple[Section, ...]
    data: bytes = attrs.field(repr=False)

    @classmethod
    def read(cls, path: str | Path) -> ElfFile:
        p = Path(path)
        data = p.read_bytes()
        if len(data) < _HEADER.size or data[:4] != b"\x7fELF":
            raise ElfError(f"{p} is not an ELF file")
        if data[4] != 2 or data[5] != 1:
            raise ElfError(f"{p} is not a 64-bit little-endian ELF file")
        (_, etype, _, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum, shstrndx) = (
            _HEADER.unpack_from(data)
        )
        segments = []
        for i in range(phnum):
            ptype, _, offset, vaddr, _, filesz, _, _ = _PHDR.unpack_from(
                data, phoff + i * phentsize
            )
            if ptype == _PT_LOAD:
                segments.append(Segment(vaddr, offset, filesz))
        raw_sections = [_SHDR.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
        names_at = raw_sections[shstrndx][4] if shnum else 0
        sections = tuple(
            Section(_cstr(data, names_at + s[0]), s[1], s[3], s[4], s[5], s[6], s[9])
            for s in raw_sections
        )
        return cls(p, etype, tuple(segments), sections, data)

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def file_offset(self, vaddr: int) -> int:
        """Where the byte the program sees at ``vaddr`` (link-time address) lies in the file."""
        for seg in self.segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return vaddr - seg.vaddr + seg.offset
        raise ElfError(f"{self.path}: address {vaddr:#x} is in no loadable segment")

    def function_symbols(self) -> Iterator[tuple[str, int]]:
        """Defined function symbols (name without @version, address) of .symtab and .dynsym."""
        for table in self.sections:
            if table.type not in (_SHT_SYMTAB, _SHT_DYNSYM) or not table.entsize:
                continue
            strings = self.sections[table.link].offset
            for at in range(table.offset, table.offset + table.size, table.entsize):
                name_off, info, _, shndx, value, _ = _SYM.unpack_from(self.data, at)
                if info & 0xF in (_STT_FUNC, _STT_GNU_IFUNC) and shndx != _SHN_UNDEF and value:
                    yield _cstr(self.data, strings + name_off).partition("@")[0], value

    def usdt_notes(self) -> Iterator[UsdtNote]:
        note = self.section(".note.stapsdt")
        if note is None or note.type != _SHT_NOTE:
            return
        at, end = note.offset, note.offset + note.size
        while at + _NOTE.size <= end:
            namesz, descsz, ntype = _NOTE.unpack_from(self.data, at)
            name_at = at + _NOTE.size
            desc_at = name_at + _align4(namesz)
            if ntype == _NT_STAPSDT and self.data[name_at : name_at + namesz] == b"stapsdt\0":
                pc, base, semaphore = struct.unpack_from("<QQQ", self.data, desc_at)
                strings = self.data[desc_at + 24 : desc_at + descsz].split(b"\0")
                provider, name, args = (s.decode(errors="replace") for s in strings[:3])
                yield UsdtNote(provider, name, pc, base, semaphore, args)
            at = desc_at + _align4(descsz)

    def stapsdt_base(self) -> int | None:
        base = self.section(".stapsdt.base")
        return None if base is None else base.addr


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _cstr(data: bytes, at: int) -> str:
    end = data.find(b"\0", at)
    return data[at:end].decode(errors="replace")
