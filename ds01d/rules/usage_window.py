"""The days a usage report covers, from `--since` and `--until`.

The usage table counts GPU-seconds per UTC day, so a report covers whole days: from
`since_day` up to, not including, `until_day`.  Each end is either a duration back from
now (`30d`) or a UTC date (`2026-10-01`).  A date is where a lab's month begins and ends,
so `--since 2026-10-01 --until 2026-11-01` is October and nothing of November 1st.  A
duration names the day its moment falls in, and that day is counted at either end:
`--since 30d` begins on the day 30 days ago, and the default `--until` (now) counts today.
The CLI (reading the database itself) and the daemon (answering through the socket) both
resolve the window here, so the two paths can never disagree about a day.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Union

from ds01d.config.quantities import parse_duration

#: How far back a duration may reach: ten years (a longer one is a typo, and would
#: overflow the date arithmetic long before it meant anything).
MAX_BACK_S = 10 * 366 * 86400
DEFAULT_SINCE_S = 30 * 86400
#: What `--by` groups a report on (the store maps each to its column).
USAGE_KEYS = ("user", "group")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
#: A UTC date, or a number of seconds back from now.
Point = Union[dt.date, int]


def parse_point(text: str) -> Point:
    """A date (`2026-10-01`) or a duration back from now (`30d`); ValueError with the reason.

    Only the one date form is taken (not `20261001`, which Python would also read) so a
    value is never a date by accident.
    """
    if DATE.fullmatch(text.strip()):
        return parse_date(text.strip())
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise ValueError(f"{printable_short(text)} is neither a duration back from now (like 30d) "
                         "nor a UTC date (like 2026-10-01)") from None
    return check_back(seconds)


def parse_date(text: str) -> dt.date:
    """A `YYYY-MM-DD` that is a real day (not 2026-02-30)."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{printable_short(text)} is not a date (write it like 2026-10-01)") from None


def check_back(seconds: int) -> int:
    """A duration back from now no longer than MAX_BACK_S."""
    if not 0 <= seconds <= MAX_BACK_S:
        raise ValueError(f"a duration back from now is at most {MAX_BACK_S // 86400}d")
    return seconds


def first_day(point: Point, now: float) -> dt.date:
    """The first day counted for a `--since` of `point`."""
    return point if isinstance(point, dt.date) else _day_of(now - point)


def end_day(point: Point | None, now: float) -> dt.date:
    """The first day not counted for an `--until` of `point` (None: now, so today is counted)."""
    if isinstance(point, dt.date):
        return point
    return _day_of(now - (point or 0)) + dt.timedelta(days=1)


def window(since: Point, until: Point | None, now: float,
           names: tuple[str, str] = ("since", "until")) -> tuple[dt.date, dt.date]:
    """(first day counted, first day not counted); ValueError when no day would be counted
    (an empty report would look like a lab that used nothing)."""
    start, end = first_day(since, now), end_day(until, now)
    if end <= start:
        raise ValueError(f"{names[1]} ({end}) is not after {names[0]} ({start}), so no day would be counted")
    return start, end


def _day_of(ts: float) -> dt.date:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).date()


def printable_short(text: str) -> str:
    """`text` quoted for an error sentence: escaped, and cut short if it is long."""
    return repr(text if len(text) <= 40 else text[:40] + "...")
