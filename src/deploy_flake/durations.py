"""Human durations on the command line: 90s, 5m, 1h30m, 30d, 2.5s, or plain seconds."""

from __future__ import annotations

import re
from fractions import Fraction

from deploy_flake.errors import UsageError

_UNITS = {
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "sec": Fraction(1),
    "m": Fraction(60),
    "min": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),
}
_NUMBER = r"\d+(?:\.\d+)?"
_PART = re.compile(rf"({_NUMBER})\s*(ms|sec|min|s|m|h|d)")


def _exact(text: str) -> Fraction:
    """The exact number of seconds in `text` (no float rounding: 1500ms is exactly 3/2)."""
    t = text.strip().lower()
    if re.fullmatch(_NUMBER, t):
        return Fraction(t)
    pos, total = 0, Fraction(0)
    for m in _PART.finditer(t):
        if m.start() != pos:
            break
        total += Fraction(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(t) or not t:
        raise UsageError(f"invalid duration {text!r}: use a number with a unit, like 90s, 5m or 1h30m")
    return total


def parse_duration(text: str) -> float:
    """Seconds in `text`; raises UsageError for anything else."""
    return float(_exact(text))


def parse_whole_seconds(text: str, *, minimum: int) -> int:
    """Whole seconds in `text`, at least `minimum`; raises UsageError for anything else.

    Stage timeouts travel to the host as whole seconds (`timeout N`), where 0
    means no limit at all: a fraction must not be rounded away silently.
    """
    try:
        seconds = _exact(text)
    except UsageError:
        raise UsageError(
            f"{text!r} is not a duration: use whole seconds, like 90s, 5m, 1h30m or 30"
        ) from None
    if seconds < minimum:
        raise UsageError(f"{text!r} is less than {minimum}s: use whole seconds, at least {minimum}s")
    if seconds.denominator != 1:
        raise UsageError(f"{text!r} is not a whole number of seconds: use whole seconds, like 90s or 5m")
    return int(seconds)


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"
