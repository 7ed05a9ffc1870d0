"""Record decoding by field name and type."""

from __future__ import annotations

import struct

from engine.events.decode import Field, build_decoder

# A field for every decoding rule (docs/events.md); tests/unit/test_jsonlines.py encodes them.
EVERY_RULE = [
    Field("pid", "u32"),
    Field("dport", "__be16"),
    Field("sport", "u16"),
    Field("daddr", "u32"),
    Field("saddr6", "unsigned __int128"),
    Field("comm", "char[16]"),
    Field("mac", "u8[6]"),
    Field("ok", "bool"),
    Field("ts", "u64"),
    Field("arr", "int[3]"),
    Field("e", "enum (unnamed enum at x.c:1:2)"),
]


def test_layout_and_conversions() -> None:
    decoder = build_decoder(EVERY_RULE)
    # The same struct as C lays it out on x86-64.
    raw = struct.pack(
        "<IHHI4x16s16s6B?xQ3ii",
        4242,
        int.from_bytes((8080).to_bytes(2, "big"), "little"),
        53,
        int.from_bytes(bytes([172, 17, 0, 2]), "little"),
        bytes(15) + b"\x01",
        b"sh\0garbage\0\0\0\0\0\0",
        *[0x02, 0x42, 0xAC, 0x11, 0x00, 0x02],
        True,
        123456789,
        1,
        -2,
        3,
        1,
    )
    assert decoder.struct.size == len(raw)
    assert decoder.decode(raw) == {
        "pid": 4242,
        "dport": 8080,
        "sport": 53,
        "daddr": "172.17.0.2",
        "saddr6": "::1",
        "comm": "sh",
        "mac": "02:42:ac:11:00:02",
        "ok": True,
        "ts": 123456789,
        "arr": [1, -2, 3],
        "e": 1,
    }


def test_unknown_type_stops_decoding_there() -> None:
    decoder = build_decoder([Field("a", "u32"), Field("in", "struct inner"), Field("b", "u32")])
    assert decoder.undecoded == ("in", "b")
    assert decoder.decode(struct.pack("<I", 7) + bytes(12)) == {"a": 7}


def test_short_record_is_padded() -> None:
    decoder = build_decoder([Field("a", "u32"), Field("b", "u64")])
    assert decoder.decode(struct.pack("<I", 9)) == {"a": 9, "b": 0}


def test_invalid_utf8_is_replaced() -> None:
    decoder = build_decoder([Field("s", "char[4]")])
    assert decoder.decode(b"a\xffb\0") == {"s": "a\ufffdb"}


def test_padding_members_are_layout_not_data() -> None:
    fields = [
        Field("pid", "u32"),
        Field("pad", "u32"),
        Field("ts", "u64"),
        Field("_pad1", "u8[3]"),
        Field("__pad_2", "char[5]"),
        Field("padded", "u8"),  # a name that only starts so is data
    ]
    raw = struct.pack("<IIQ3s5sB7x", 7, 99, 8, b"abc", b"defgh", 1)
    assert build_decoder(fields).decode(raw) == {"pid": 7, "ts": 8, "padded": 1}
    kept = build_decoder(fields, padding=True)
    assert kept.struct.size == len(raw)
    assert kept.decode(raw) == {
        "pid": 7,
        "pad": 99,
        "ts": 8,
        "_pad1": [97, 98, 99],
        "__pad_2": "defgh",
        "padded": 1,
    }
