"""Map records drawn for the live view: log2 histograms as bcc's ``print_log2_hist`` draws
them (a line per bucket, ``low -> high : count |***  |``), other maps as their largest
entries."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

STARS = 40
# bcc widens the columns (and halves the stars) once a histogram reaches past 2**32.
_NARROW = (
    "     {label:<19} : count     distribution",
    "{low:>10} -> {high:<10} : {count:<8} |{bar}|",
)
_WIDE = (
    "               {label:<29} : count     distribution",
    "{low:>20} -> {high:<20} : {count:<8} |{bar}|",
)
TOP_ENTRIES = 10


def log2_lines(buckets: Sequence[Mapping[str, int]], label: str = "value") -> list[str]:
    """One section of a histogram, bcc's way; nothing for a section without counts."""
    top = max((b["count"] for b in buckets), default=0)
    if not top:
        return []
    wide = buckets[-1]["high"].bit_length() > 32
    header, body = _WIDE if wide else _NARROW
    width = STARS // 2 if wide else STARS
    lines = [header.format(label=label)]
    for b in buckets:
        bar = "*" * min(width, width * b["count"] // top)
        lines.append(
            body.format(low=b["low"], high=b["high"], count=b["count"], bar=f"{bar:<{width}}")
        )
    return lines


def map_lines(record: Mapping[str, Any]) -> list[str]:
    """A map record as lines: each histogram section drawn, or the largest entries."""
    entries = record.get("entries") or []
    if record.get("kind") == "log2_histogram":
        lines: list[str] = []
        for section in entries:
            if section.get("key") is not None:
                lines.append(f"{record.get('map')} = {_text(section['key'])}")
            lines += log2_lines(section.get("value") or [], str(record.get("map")))
        return lines
    ranked = sorted(entries, key=_size, reverse=True)[:TOP_ENTRIES]
    return [f"{_text(e.get('key')):<40} {_text(e.get('value'))}" for e in ranked]


def _size(entry: Mapping[str, Any]) -> float:
    value = entry.get("value")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, Mapping):
        return float(sum(v for v in value.values() if isinstance(v, int | float)))
    return 0.0


def _text(value: Any) -> str:
    if isinstance(value, Mapping):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return value if isinstance(value, str) else json.dumps(value)
