"""``connectycube-exporter check``: is the key right, and do the settings match the API?

The first command a new user runs with a real key. With the daemon's settings and config
file it asks each app's API a bounded set of questions and prints one line per finding:

1. access: the key is accepted and the plan allows the Admin API;
2. endpoints: each of the four endpoints answers, and what (counts, never keys);
3. consistency: over seven past days the totals equal the sums of the per-day counts;
4. zone: the API cuts its days at midnight in ``CONNECTYCUBE_TIMEZONE``, found by asking
   for the per-day messages of short windows over the last day and reading where the
   API's date flips.

Every question sends the same ``start_date`` and ``end_date`` to the endpoints it
compares, or reads answers only for what they prove whatever the API's bounds are, so that
no bound semantics can raise a false alarm.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import FrameType
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo

from exporter.backfill import Interrupted
from exporter.cli import PROG, ArgumentParser, add_settings_arguments, settings_from
from exporter.client import (
    MESSAGES,
    APIConnectionError,
    APIError,
    APIInvalidResponse,
    APIStatusError,
    Kind,
    StatsClient,
    endpoint_path,
    limits_from,
    open_http,
)
from exporter.config import AppConfig, ConfigError, Settings, env_name, load_apps
from exporter.days import all_time_window, day_start, days_window, local_day
from exporter.poller import endpoint_label

T = TypeVar("T")

COMMAND = f"{PROG} check"
MAX_REQUESTS = 60
"""API calls per app, all questions together: the plan below needs about 50."""
MAX_SECONDS = 60.0
"""Time per app, retries included."""
APP_CONCURRENCY = 4
"""Requests at once per app: quick, and gentle on the API's rate limit."""
PAGE_DAYS = 100
"""The ``limit`` asked of per-day endpoints: the API's page size."""
RECENT_DAYS = 7
SCAN_HOURS = 25
HOUR = 3600
QUARTER = 900
"""Every zone's offset from UTC is a multiple of 15 minutes, so its midnights are too."""
MIN_OFFSET, MAX_OFFSET = -12 * HOUR, 14 * HOUR
"""The offsets zones have (Etc/GMT+12 to Pacific/Kiritimati)."""
WINDOW_HOURS = (1, 2, 3, 4, 6, 8, 12, 24, 48)
"""Window lengths a scan may use when the budget cannot pay for hours."""
REFINE_ROUNDS = 4
"""Rounds of two narrow windows that pin the API's midnight to the quarter hour."""
REFINE_RESERVE = 2 * REFINE_ROUNDS
# Zones at fractional offsets without daylight saving time, to suggest by name; each is
# checked against the offset found before it is printed.
FRACTIONAL_ZONES = (
    "Asia/Tehran",
    "Asia/Kabul",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Yangon",
    "Australia/Eucla",
    "Australia/Darwin",
    "Pacific/Marquesas",
)

Level = Literal["ok", "FAIL", "note"]
_CONTROL = dict.fromkeys((*range(32), 127), " ")


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    """One line of the report; a note is inconclusive and never fails the run."""

    level: Level
    text: str


@dataclass
class Report:
    app: AppConfig
    findings: list[Finding] = field(default_factory=list)

    def add(self, level: Level, text: str) -> None:
        self.findings.append(Finding(level, text))

    @property
    def problems(self) -> int:
        return sum(finding.level == "FAIL" for finding in self.findings)

    def lines(self) -> list[str]:
        # Each line names its app, so that a grep or a log keeps its meaning; a newline in
        # an API's error message must not split a finding or forge another.
        return [
            f"{f.level:<4} {self.app.name}: {f.text}".translate(_CONTROL) for f in self.findings
        ]


def summary(reports: Sequence[Report]) -> str:
    failed = [report for report in reports if report.problems]
    if not failed:
        return f"check: {len(reports)} app(s) checked, all consistent"
    problems = sum(report.problems for report in failed)
    return f"check: {problems} problem(s) in {len(failed)} app(s)"


# --------------------------------------------------------------------------- requests


class OutOfBudget(Exception):
    """The app's requests or time are spent; the message says which."""

    def __init__(self, message: str, level: Level) -> None:
        super().__init__(message)
        self.level = level


class CheckProblem(Exception):
    """An answer that contradicts the API's own documentation; one line for the user."""


class Session:
    """One app's requests: counted, never more than ``MAX_REQUESTS``, all before its deadline."""

    def __init__(self, client: StatsClient, app: AppConfig) -> None:
        self.client = client
        self.app = app
        self.requests = 0
        self.deadline = time.monotonic() + MAX_SECONDS
        self._slots = asyncio.Semaphore(APP_CONCURRENCY)

    @property
    def left(self) -> int:
        return MAX_REQUESTS - self.requests

    async def _call(self, request: Callable[[], Awaitable[T]]) -> T:
        async with self._slots:
            # Counted when sent, under the semaphore: concurrent calls cannot overshoot.
            if time.monotonic() >= self.deadline:
                raise OutOfBudget(f"not finished within {MAX_SECONDS:.0f} s", "FAIL")
            if self.requests >= MAX_REQUESTS:
                raise OutOfBudget(f"the budget of {MAX_REQUESTS} requests is spent", "note")
            self.requests += 1
            return await request()

    async def total(self, kind: Kind, start: int, end: int) -> int:
        app, deadline = self.app, self.deadline
        return await self._call(lambda: self.client.total(app, kind, start, end, deadline=deadline))

    async def page(self, kind: Kind, start: int, end: int, offset: int = 0) -> dict[date, int]:
        app, deadline = self.app, self.deadline
        return await self._call(
            lambda: self.client.per_day(
                app, kind, start, end, limit=PAGE_DAYS, offset=offset, deadline=deadline
            )
        )

    async def days(
        self,
        kind: Kind,
        start: int,
        end: int,
        until: date | None,
        counts: dict[date, int] | None = None,
    ) -> tuple[dict[date, int], bool]:
        """Per-day counts, page by page, and whether the read ended on an empty page.

        A server may cap ``limit``, so a short page proves nothing: this reads on until an
        empty page, a page with no new day, or the day ``until``. ``offset`` counts the
        days read; an API that counts calendar days instead answers some days again, which
        is fine as long as it answers them alike. ``counts`` resumes a read.
        """
        counts = dict(counts or {})
        while True:
            page = await self.page(kind, start, end, offset=len(counts))
            if not page:
                return counts, True
            changed = sorted(day for day in page.keys() & counts.keys() if page[day] != counts[day])
            if changed:
                raise CheckProblem(
                    f"{_label(kind, per_day=True)}: the page at offset {len(counts)} gives "
                    f"{changed[0]} another count than the page before"
                )
            if page.keys() <= counts.keys():
                return counts, False
            counts.update(page)
            if until is not None and max(page) >= until:
                return counts, False


async def gather_all(requests: Iterable[Awaitable[T]]) -> list[T]:
    """Every result, or the first error once all requests are over (none left running)."""
    results = await asyncio.gather(*requests, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]  # no exception left among them


def _label(kind: Kind, per_day: bool) -> str:
    return endpoint_label(endpoint_path(kind, per_day))


def _kinds(app: AppConfig) -> tuple[Kind, ...]:
    return (MESSAGES, *app.dialog_types)


def _kind_name(app: AppConfig, kind: Kind) -> str:
    return "messages" if kind == MESSAGES else app.type_name(int(kind))


def _failure(exc: Exception) -> str:
    if isinstance(exc, APIError):
        return f"{endpoint_label(exc.endpoint)}: {exc.reason}"
    return str(exc)


# --------------------------------------------------------------------------- 1. access


def key_setting(settings: Settings, app: AppConfig) -> str:
    """The setting that holds this app's key, named for the user to fix."""
    if settings.config_file is not None:
        return (
            f"the api_key (or api_key_file) of app {app.name!r} in "
            f"{env_name('config_file')} ({settings.config_file})"
        )
    if settings.api_key_file is not None:
        return f"{env_name('api_key_file')} ({settings.api_key_file})"
    return env_name("api_key")


def url_setting(settings: Settings, app: AppConfig) -> str:
    if settings.config_file is not None:
        return f"{env_name('api_url')} or the api_url of app {app.name!r}"
    return env_name("api_url")


async def check_access(session: Session, settings: Settings, report: Report, today: date) -> int:
    """The all-time message total, the one question every key and plan must answer.

    Raises ``APIError`` after reporting it: nothing else can be asked then.
    """
    try:
        total = await session.total(MESSAGES, *all_time_window(today, settings.zone))
    except APIStatusError as exc:
        report.add("FAIL", _refusal(exc, settings, session.app))
        raise
    except APIError as exc:
        hint = ""
        if isinstance(exc, APIConnectionError | APIInvalidResponse):
            hint = f": check {url_setting(settings, session.app)}"
        report.add("FAIL", f"the API did not answer the first request: {_failure(exc)}{hint}")
        raise
    report.add("ok", "key accepted")
    report.add("ok", "Admin API allowed for the plan")
    return total


def _refusal(exc: APIStatusError, settings: Settings, app: AppConfig) -> str:
    if exc.status == 401:
        return f"API key rejected ({exc.reason}): check {key_setting(settings, app)}"
    if exc.status == 403:
        return (
            f"the key was recognised but access was refused ({exc.reason}): the Admin API "
            "needs the Advanced plan or higher"
        )
    hints = {
        404: f": check {url_setting(settings, app)}",
        429: ": rate limited, run check again in a minute",
    }
    return f"the API refused the first request: {_failure(exc)}{hints.get(exc.status, '')}"


# --------------------------------------------------------------------------- 2. endpoints


async def check_endpoints(
    session: Session, report: Report, zone: ZoneInfo, today: date, messages_total: int
) -> None:
    """One line per endpoint: the all-time totals, and yesterday's and today's counts."""
    app = session.app
    yesterday = today - timedelta(days=1)
    window = days_window(yesterday, today, zone)

    async def totals() -> str:
        start, end = all_time_window(today, zone)
        counts = await gather_all(session.total(code, start, end) for code in app.dialog_types)
        named = [f"{app.type_name(c)} {n}" for c, n in zip(app.dialog_types, counts, strict=True)]
        return f"{', '.join(named)} all time"

    async def recent(kind: Kind) -> str:
        counts, _ = await session.days(kind, *window, until=today)
        # The window may reach a second into the days either side: read only the two.
        return f"{counts.get(yesterday, 0)} yesterday, {counts.get(today, 0)} today"

    async def per_type() -> str:
        lines = await gather_all(recent(code) for code in app.dialog_types)
        return "; ".join(
            f"{app.type_name(c)} {line}" for c, line in zip(app.dialog_types, lines, strict=True)
        )

    async def messages_total_line() -> str:
        return f"{messages_total} all time"

    questions: list[tuple[str, Awaitable[str]]] = [
        (_label(MESSAGES, per_day=False), messages_total_line()),
        (_label(MESSAGES, per_day=True), recent(MESSAGES)),
        (_label(1, per_day=False), totals()),
        (_label(1, per_day=True), per_type()),
    ]
    answers = await asyncio.gather(*(answer for _, answer in questions), return_exceptions=True)
    for (label, _), answer in zip(questions, answers, strict=True):
        if isinstance(answer, str):
            report.add("ok", f"{label} answered: {answer}")
        elif isinstance(answer, Exception):
            _report_failure(report, None, answer)
        else:
            raise answer


def _report_failure(report: Report, what: str | None, exc: Exception) -> None:
    """One line for a question that got no answer; ``what`` names the question, if not
    the endpoint that failed."""
    if isinstance(exc, APIError) and what is None:
        report.add("FAIL", f"{endpoint_label(exc.endpoint)} failed: {exc.reason}")
    elif isinstance(exc, OutOfBudget | APIError | CheckProblem):
        level = exc.level if isinstance(exc, OutOfBudget) else "FAIL"
        report.add(level, f"{what or 'a request'}: {_failure(exc)}")
    else:
        raise exc


# --------------------------------------------------------------------------- 3. consistency


async def check_consistency(session: Session, report: Report, zone: ZoneInfo, today: date) -> None:
    """Totals against the sum of per-day counts, over the same seven past days.

    Both endpoints get the same ``start_date`` and ``end_date``, so whatever the API's
    bounds are they apply to both: the comparison is exact. The window ends a second
    before today, in the past, so no event arrives between the two answers, and no event
    of today is counted, whether the end is inclusive or not.
    """
    app = session.app
    first, last = today - timedelta(days=RECENT_DAYS), today - timedelta(days=1)
    start, end = day_start(first, zone), day_start(today, zone) - 1

    async def compare(kind: Kind) -> tuple[int, int]:
        total = await session.total(kind, start, end)
        counts, complete = await session.days(kind, start, end, until=last)
        if sum(counts.values()) != total and not complete:
            # Stopped at the last day: a later page could still hold days the API dates
            # after it (another zone). Read on before calling it a disagreement.
            counts, _ = await session.days(kind, start, end, until=None, counts=counts)
        return total, sum(counts.values())

    kinds = _kinds(app)
    try:
        results = await gather_all(compare(kind) for kind in kinds)
    except Exception as exc:
        _report_failure(report, "could not compare totals with per-day sums", exc)
        return
    period = f"{first} to {last} in {zone.key}"
    wrong = [(k, t, s) for k, (t, s) in zip(kinds, results, strict=True) if t != s]
    if not wrong:
        figures = ", ".join(
            f"{_kind_name(app, k)} {t}" for k, (t, _) in zip(kinds, results, strict=True)
        )
        report.add(
            "ok",
            f"totals agree with per-day sums over the last {RECENT_DAYS} days ({period}: "
            f"{figures})",
        )
        return
    for kind, total, summed in wrong:
        report.add(
            "FAIL",
            f"{_kind_name(app, kind)}: {_label(kind, per_day=False)} says {total} for the last "
            f"{RECENT_DAYS} days ({period}) but {_label(kind, per_day=True)} sums to {summed} "
            "for the same start_date and end_date: the daily and all-time figures will not add "
            "up (if the API rounds the window to whole days in its own zone, this is a time "
            "zone mismatch: see the zone finding)",
        )


# --------------------------------------------------------------------------- 4. zone


@dataclass(frozen=True)
class Window:
    """A per-day answer for a short window: the API's dates of the events in it.

    ``end`` is the window's last second, sent as ``end_date``: an inclusive end stays
    inside the window, an exclusive one loses a second. Either way every event counted
    happened in ``[start, end]``, so the dates are those of events in it.
    """

    start: int
    end: int
    days: frozenset[date]


def allowed(window: Window, zone: ZoneInfo) -> bool:
    """Whether ``zone``'s calendar could date the window's events as the API did."""
    first, last = local_day(window.start, zone), local_day(window.end, zone)
    return all(first <= day <= last for day in window.days)


def _utc_midnight(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


@dataclass(frozen=True)
class Flip:
    """Where the API's ``day`` begins: after ``after``, at ``upto`` at the latest."""

    day: date
    after: int
    upto: int

    @property
    def candidates(self) -> list[int]:
        """The quarter hours in range at which a zone's midnight starts ``day``."""
        midnight = _utc_midnight(self.day)  # ``day`` begins at midnight - offset
        low = max(self.after + 1, midnight - MAX_OFFSET)
        high = min(self.upto, midnight - MIN_OFFSET)
        first = -(-low // QUARTER) * QUARTER
        return list(range(first, high + 1, QUARTER))

    def offset(self, moment: int) -> int:
        """The UTC offset of a zone whose ``day`` begins at ``moment``."""
        return _utc_midnight(self.day) - moment


def flip(windows: Sequence[Window], day: date) -> Flip | None:
    """Bounds on the start of the API's ``day``: after every event it dates earlier,
    at or before every event it dates ``day`` or later."""
    before = [w.start for w in windows if any(d < day for d in w.days)]
    since = [w.end for w in windows if any(d >= day for d in w.days)]
    if not before or not since:
        return None
    return Flip(day, max(before), min(since))


def best_flip(windows: Sequence[Window]) -> Flip | None:
    """The most precisely located start of a day the API dated (the latest among equals)."""
    days = sorted({day for window in windows for day in window.days})
    flips = [f for f in (flip(windows, day) for day in days[1:]) if f and f.candidates]
    if not flips:
        return None
    return min(reversed(flips), key=lambda f: len(f.candidates))


async def scan(session: Session, end: int, hours: int, budget: int) -> list[Window]:
    """The ``hours`` before ``end`` in windows of an hour, or longer if the budget is short."""
    if budget < 1:
        return []
    size = next(n for n in WINDOW_HOURS if -(-hours // n) <= budget) * HOUR
    starts = sorted(end - size * k for k in range(1, -(-hours // (size // HOUR)) + 1))
    # One request per window: a window holds at most two dates, and a capped page that
    # drops the later one only hides information, it never invents a date.
    return await gather_all(ask_single(session, start, start + size - 1) for start in starts)


async def ask_single(session: Session, start: int, end: int) -> Window:
    return Window(start, end, frozenset(await session.page(MESSAGES, start, end)))


async def refine(session: Session, windows: list[Window], day: date, keep: int) -> list[Window]:
    """Narrow where ``day`` begins to one quarter hour, two narrow windows a round.

    A round asks for the quarter hours either side of a candidate midnight: busy ones
    prove the API's date before and after it.
    """
    for _ in range(REFINE_ROUNDS):
        found = flip(windows, day)
        if found is None or len(found.candidates) <= 1 or session.left - keep < 2:
            break
        middle = _probe_point(found.candidates)
        windows = windows + await gather_all(
            [
                ask_single(session, middle - QUARTER, middle - 1),
                ask_single(session, middle, middle + QUARTER - 1),
            ]
        )
        narrowed = flip(windows, day)
        if narrowed is None or len(narrowed.candidates) == len(found.candidates):
            break  # quiet around the candidate: another round would not tell more
    return windows


def _probe_point(candidates: Sequence[int]) -> int:
    """The middle candidate, a whole hour if any is left: most zones' midnights are."""
    pool = [moment for moment in candidates if moment % HOUR == 0] or candidates
    return pool[len(pool) // 2]


async def check_zone(
    session: Session, report: Report, zone: ZoneInfo, now: float, keep: int
) -> None:
    """Where the API's date flips over the last day (or two), against ``zone``'s midnights.

    ``keep``: requests to leave in the budget for the questions after this one.
    """
    hour = int(now) // HOUR * HOUR  # whole hours only: the current one is not over
    try:
        # 25 hours: every zone's midnight falls inside, with a window either side of it.
        budget = session.left - keep - REFINE_RESERVE
        scanned = await scan(session, hour, SCAN_HOURS, budget)
        if best_flip(scanned) is None:  # too quiet, or all on one date: look further back
            earlier = scanned[0].start if scanned else hour
            budget = session.left - keep - REFINE_RESERVE
            scanned = [*await scan(session, earlier, 24, budget), *scanned]
        windows = scanned
        found = best_flip(windows)
        if found is not None:
            windows = await refine(session, windows, found.day, keep)
    except Exception as exc:
        _report_failure(report, "could not find the API's time zone", exc)
        return
    if not scanned:
        report.add("note", "cannot tell the API's zone: no requests left in the budget")
        return
    report.add(*zone_finding(windows, scanned, zone, now))


def zone_finding(
    windows: Sequence[Window], scanned: Sequence[Window], zone: ZoneInfo, now: float
) -> tuple[Level, str]:
    """The verdict on the windows asked; ``scanned`` are the regular ones among them."""
    setting = env_name("timezone")
    busy = sum(bool(window.days) for window in scanned)
    sizes = {(window.end + 1 - window.start) // HOUR for window in scanned}
    hours = (max(w.end for w in scanned) + 1 - min(w.start for w in scanned)) // HOUR
    activity = (
        f"{busy} of the last {hours} hours had messages"
        if sizes == {1}
        else f"messages in {busy} of {len(scanned)} windows over the last {hours} hours"
    )
    crowded = [w for w in windows if len(w.days) > (w.end - w.start) // (24 * HOUR) + 2]
    if crowded:
        # More dates than any zone has in the window: no flip can be read from the answers.
        first = crowded[0]
        return "FAIL", (
            f"{_label(MESSAGES, per_day=True)} answered {len(first.days)} dates for "
            f"{_utc_text(first.start)} to {_utc(first.end + 1)} UTC: the API seems to ignore "
            "start_date and end_date"
        )
    wrong = [window for window in windows if not allowed(window, zone)]
    found = best_flip(windows)
    here = f"{setting} ({zone.key}, {_offset_text(_zone_offset(zone, now))})"
    if not wrong:
        if found is None:
            return "note", (
                f"cannot tell the API's zone: too little activity in the last two days ({activity})"
            )
        if len(found.candidates) > 1:
            return "note", (
                f"the API's dates agree with {here} as far as seen, but too little activity "
                f"around midnight to be sure: its date changed {_when(found)} ({activity})"
            )
        return "ok", (
            f"the API cuts its days at midnight in {here}: its date changed {_when(found)}; "
            f"{activity}"
        )
    return "FAIL", _zone_mismatch(wrong[0], found, zone, setting)


def _zone_mismatch(wrong: Window, found: Flip | None, zone: ZoneInfo, setting: str) -> str:
    ours = f"{setting}={zone.key}"
    moments = found.candidates if found else []
    offsets = sorted(found.offset(moment) for moment in moments) if found else []
    cut = _zone_offset(zone, moments[0]) if moments else None
    if found is None or cut in offsets:
        # No flip located, or one the zone agrees with: show the window that proves it wrong.
        when = _utc_text(wrong.start)
        dates = " and ".join(str(day) for day in sorted(wrong.days))
        return (
            f"the API dated the messages of {when} to {_utc(wrong.end + 1)} UTC as {dates}, "
            f"but {ours} puts them on {local_day(wrong.start, zone)}: set {setting} to the "
            "API's zone"
        )
    tail = f"but {ours} cuts at 00:00 {_offset_text(cut or 0)}: set {setting} to the API's zone"
    if len(offsets) == 1:
        return (
            f"the API cuts its days at about 00:00 {_offset_text(offsets[0])} (its date "
            f"changed {_when(found)}), {tail} ({_suggest(offsets[0], moments[0])})"
        )
    return (
        f"the API cuts its days at 00:00 somewhere from {_offset_text(offsets[0])} to "
        f"{_offset_text(offsets[-1])} (its date changed {_when(found)}; too little activity "
        f"to be exact), {tail}"
    )


def _suggest(offset: int, moment: int) -> str:
    """A zone to set: Etc/GMT for whole hours (its sign inverted), a named one otherwise."""
    text = f"a zone at {_offset_text(offset)}"
    hours, rest = divmod(offset, HOUR)
    if offset == 0:
        return f"{text}, for example UTC"
    if rest == 0 and MIN_OFFSET <= offset <= MAX_OFFSET:
        return (
            f"{text}, for example Etc/GMT{-hours:+d}; Etc/GMT signs are inverted, and a "
            "zone with daylight saving time needs its region's name instead"
        )
    for name in FRACTIONAL_ZONES:
        if _zone_offset(ZoneInfo(name), moment) == offset:
            return f"{text}, for example {name}"
    return text


def _zone_offset(zone: ZoneInfo, moment: float) -> int:
    offset = datetime.fromtimestamp(moment, zone).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def _offset_text(offset: int) -> str:
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset) // 60, 60)
    return f"UTC{sign}{hours:02d}:{minutes:02d}"


def _utc(moment: int) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%H:%M")


def _utc_text(moment: int) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M")


def _when(found: Flip) -> str:
    moments = found.candidates
    if len(moments) == 1:
        return f"at {_utc(moments[0])} UTC"
    return f"between {_utc(found.after)} and {_utc(found.upto + 1)} UTC"


# --------------------------------------------------------------------------- one app


async def check_app(client: StatsClient, settings: Settings, app: AppConfig) -> Report:
    """Every question to one app; never raises but for cancellation."""
    report = Report(app)
    session = Session(client, app)
    zone = settings.zone
    now = time.time()
    today = local_day(now, zone)
    try:
        try:
            messages_total = await check_access(session, settings, report, today)
        except APIError:
            return report
        await check_endpoints(session, report, zone, today, messages_total)
        # The zone is asked before the totals are compared, though printed after: should a
        # server page one day at a time, the budget goes to the question users get wrong.
        zone_findings = Report(app)
        await check_zone(session, zone_findings, zone, now, keep=2 * len(_kinds(app)))
        await check_consistency(session, report, zone, today)
        report.findings += zone_findings.findings
    except Exception as exc:  # a bug or an answer nobody foresaw: one line, not a traceback
        report.add("FAIL", f"check stopped: unexpected {type(exc).__name__}")
    return report


# --------------------------------------------------------------------------- command


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=COMMAND,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Check every app's key and settings against the API, with the daemon's\n"
            "settings and config file: the key is accepted, the plan allows the Admin API,\n"
            "each endpoint answers (counts, never keys), totals agree with per-day sums\n"
            f"over the last {RECENT_DAYS} days, and the API cuts its days at midnight in\n"
            f"{env_name('timezone')} (read from where the API's date flips over the last\n"
            "day). Each finding is one line on stdout, apps in config order:\n\n"
            "  ok   APP: ...   consistent\n"
            "  FAIL APP: ...   wrong; the line names the setting to change\n"
            "  note APP: ...   inconclusive (e.g. too little activity); not a failure\n\n"
            "and a last line 'check: N app(s) checked, all consistent' or\n"
            "'check: N problem(s) in M app(s)'. Apps are checked at once, each with at\n"
            f"most {MAX_REQUESTS} API requests (plus the client's retries of transient\n"
            f"failures) and {MAX_SECONDS:.0f} s."
        ),
        epilog=(
            "Exit codes: 0 all consistent (notes allowed), 1 a finding failed, 2 bad input "
            "or configuration, 128+N stopped by signal N."
        ),
    )
    add_settings_arguments(parser.add_argument_group("settings (as for the daemon)"))
    return parser


async def check_all(settings: Settings, apps: Sequence[AppConfig]) -> list[Report]:
    """Check the apps at once; print each app's lines together, in config order."""
    limits = limits_from(settings)
    reports: list[Report] = []
    async with open_http(limits) as http, asyncio.TaskGroup() as group:
        client = StatsClient(http, limits)
        tasks = [group.create_task(check_app(client, settings, app)) for app in apps]
        for task in tasks:
            report = await task
            for line in report.lines():
                print(line, flush=True)
            reports.append(report)
    return reports


async def _run(settings: Settings, apps: Sequence[AppConfig]) -> list[Report]:
    # In the event loop a signal cancels the work, so that every request is closed.
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def stop(signum: int) -> None:
        received.append(signum)
        task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await check_all(settings, apps)
    except asyncio.CancelledError:
        if received:
            raise Interrupted(received[0]) from None
        raise
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        _handle_stop_signals()


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _handle_stop_signals() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _raise_interrupted)


def _fail(code: int, message: str) -> int:
    print(f"{COMMAND}: {message}", file=sys.stderr)
    return code


def main(argv: list[str]) -> int:
    """Run ``check`` with ``argv`` (the arguments after the word ``check``)."""
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    _handle_stop_signals()
    try:
        return _main(argv)
    except Interrupted as stop:
        return _fail(128 + stop.signum, f"stopped by {stop}")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
        apps = load_apps(settings)
    except ConfigError as exc:
        return _fail(2, f"configuration error: {exc}")
    reports = asyncio.run(_run(settings, apps))
    print(summary(reports), flush=True)
    return 1 if any(report.problems for report in reports) else 0
