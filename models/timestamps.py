"""RFC 3339 timestamps as the event contract allows them, and back."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

# RFC 3339 with a mandatory offset and at most microsecond precision. Python's
# fromisoformat accepts far more (no offset, week dates, 9 fraction digits), so the
# shape is checked first and the calendar by datetime itself.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,  # else \d matches any Unicode digit (Arabic-Indic, fullwidth, ...)
)


# What a mistyped timestamp may look like; only such text is quoted back in an error,
# since the value of a wrong field can be anything (a comment, a customer id).
_QUOTABLE = re.compile(r"[0-9TtZz:.+\- /]{1,40}", re.ASCII)


class TimestampError(ValueError):
    """An `occurred_at` value that is not an RFC 3339 timestamp with an offset."""


def parse_rfc3339(text: str) -> float:
    """Return the epoch seconds of an RFC 3339 timestamp with an offset."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        got = (repr(text) if _QUOTABLE.fullmatch(text)
               else f"{len(text)} characters that are not one")
        raise TimestampError(
            "expected RFC 3339 with an offset and at most 6 fraction digits, "
            f"e.g. 2026-11-22T09:30:00Z; got {got}"
        )
    year, month, day, hour, minute, second, frac, zulu, sign, oh, om = match.groups()
    if zulu:
        tz = UTC
    else:
        if int(oh) > 23 or int(om) > 59:
            raise TimestampError(f"offset out of range in {text!r}")
        delta = timedelta(hours=int(oh), minutes=int(om))
        tz = timezone(-delta if sign == "-" else delta)
    micros = int(frac.ljust(6, "0")) if frac else 0
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tz
        )
    except ValueError as exc:
        raise TimestampError(f"not a calendar time: {text!r} ({exc})") from None
    return moment.timestamp()


def format_rfc3339(epoch: float) -> str:
    """Format epoch seconds as RFC 3339 UTC with `Z`; microseconds only when present."""
    moment = datetime.fromtimestamp(epoch, UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
