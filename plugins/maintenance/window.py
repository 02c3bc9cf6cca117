"""When the `maintenance` plugin acts: a daily window in a time zone, before `notBefore`
minus a margin."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


def plan_time(now: float, not_before: datetime, window: str, zone, margin: float) -> tuple[float, str]:
    """When to act (epoch seconds) and, when it is not inside a window, why.

    The first moment at or after `now` that is inside a window occurrence and before
    `not_before - margin`; with no such window, `not_before - margin` (or now, if that
    has passed already: late notice)."""
    deadline = not_before.timestamp() - margin
    if window == "now":
        if now <= deadline:
            return now, ""
        return now, f"less than the margin left before notBefore {not_before.isoformat()}: acting now"
    m = WINDOW.match(window)
    start_h, start_m, end_h, end_m = (int(x) for x in m.groups())
    day = datetime.fromtimestamp(now, zone).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    while day.timestamp() <= deadline:
        opens = day.replace(hour=start_h, minute=start_m)
        closes = day.replace(hour=end_h, minute=end_m)
        if closes <= opens:
            closes += timedelta(days=1)  # "22:00-04:00" crosses midnight
        begin, end = max(opens.timestamp(), now), min(closes.timestamp(), deadline)
        if begin < end:
            return begin, ""
        day += timedelta(days=1)
    if now < deadline:
        return deadline, (f"no {window} window before notBefore {not_before.isoformat()} minus the margin: "
                          f"acting at {_iso(deadline)}")
    return now, f"less than the margin left before notBefore {not_before.isoformat()}: acting now"


def zone(name: str):
    if name.upper() == "UTC":
        return timezone.utc
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"[plugins.maintenance] timezone: unknown time zone {name!r}") from None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")
