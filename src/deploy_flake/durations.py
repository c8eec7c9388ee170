"""Human durations on the command line: 90s, 5m, 1h30m, 2.5s, or plain seconds."""

from __future__ import annotations

import re

from deploy_flake.errors import UsageError

_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in `text`; raises UsageError for anything else."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    pos, total = 0, 0.0
    for m in _PART.finditer(t):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(t) or not t:
        raise UsageError(f"invalid duration {text!r}: use a number with a unit, like 90s, 5m or 1h30m")
    return total


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"
