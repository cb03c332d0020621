"""``connectycube-exporter check``: proof, on a user's own account, that the settings match
the API: the key and plan, every endpoint, totals against per-day sums, and the zone in which
the API cuts its days, asked with the client's exact questions so that neither the API's
bounds nor a cap on its pages can raise a false alarm.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

import httpx

from exporter import api, options
from exporter.api import MESSAGES, ONE_DAY, Kind, all_time_window, local_day
from exporter.client import (
    APIError,
    APIStatusError,
    APITimeout,
    ClientLimits,
    Days,
    StatsClient,
    limits_from,
    open_http,
)
from exporter.config import AppConfig, Settings, env_name, load_apps
from exporter.poller import refusal

T = TypeVar("T")
Level = Literal["ok", "FAIL", "note"]
Finding = tuple[Level, str]

COMMAND = f"{options.PROG} check"
MAX_REQUESTS = 100  # per app, retries aside: four dialog types take 74 if pages are not capped
MAX_SECONDS = 60.0  # per app, retries included
APP_CONCURRENCY = 4  # requests at once per app: quick, and gentle on the API's rate limit
RECENT_DAYS = 7
SCAN_HOURS = 25  # no zone has a longer day: the hours hold a midnight of every zone
HOUR, QUARTER = 3600, 900  # every zone's offset from UTC, and so its midnight, is in quarters
MIN_OFFSET, MAX_OFFSET = -12 * HOUR, 14 * HOUR  # Etc/GMT+12 to Pacific/Kiritimati
FRACTIONAL_ZONES = ("Asia/Tehran", "Asia/Kabul", "Asia/Kolkata", "Asia/Kathmandu")
_CONTROL = dict.fromkeys((*range(32), 127), " ")


@dataclass
class Report:
    """One app's findings, a line each; a note is inconclusive and never fails the run."""

    app: AppConfig
    findings: list[Finding] = field(default_factory=list)

    def add(self, level: Level, text: str) -> None:
        self.findings.append((level, text))

    @property
    def problems(self) -> int:
        return sum(level == "FAIL" for level, _ in self.findings)

    def lines(self) -> list[str]:
        # A newline in an API's error message must not split a finding or forge another.
        name = self.app.name
        return [f"{level:<4} {name}: {text}".translate(_CONTROL) for level, text in self.findings]


def summary(reports: Sequence[Report]) -> str:
    failed = [report for report in reports if report.problems]
    if not failed:
        return f"check: {len(reports)} app(s) checked, all consistent"
    problems = sum(report.problems for report in failed)
    return f"check: {problems} problem(s) in {len(failed)} app(s)"


class OutOfBudget(Exception):
    """The app's ``MAX_REQUESTS`` are spent: what is left unasked is inconclusive."""


class AppClient(StatsClient):
    """One app's client: ``APP_CONCURRENCY`` requests at once, and ``MAX_REQUESTS`` (retries
    aside; ``days`` and ``total_at_end_of`` ask through ``total`` and ``per_day``) within
    ``MAX_SECONDS`` of its creation."""

    def __init__(self, http: httpx.AsyncClient, limits: ClientLimits) -> None:
        cap = min(APP_CONCURRENCY, limits.max_concurrent_requests)
        super().__init__(http, replace(limits, max_concurrent_requests=cap))
        self.deadline = time.monotonic() + MAX_SECONDS
        self.sent = 0

    async def total(self, app: AppConfig, *args: Any, **kwargs: Any) -> int:
        return await self._spend(super().total, app, *args, **kwargs)

    async def per_day(self, app: AppConfig, *args: Any, **kwargs: Any) -> dict[date, int]:
        return await self._spend(super().per_day, app, *args, **kwargs)

    async def _spend(self, ask: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        if self.sent >= MAX_REQUESTS:
            raise OutOfBudget(f"the budget of {MAX_REQUESTS} requests is spent")
        self.sent += 1
        try:
            return await ask(*args, **{**kwargs, "deadline": self.deadline})
        except APITimeout as exc:  # waiting for a slot or an answer when time ran out
            if time.monotonic() < self.deadline - 0.01:
                raise
            raise APITimeout(exc.endpoint, f"not finished within {MAX_SECONDS:.0f} s") from None


async def gather_all(requests: Iterable[Awaitable[T]]) -> list[T]:
    """Every result, or the first error once all requests are over (none left running)."""
    results = await asyncio.gather(*requests, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]  # no exception left among them


async def answer(question: str | None, work: Awaitable[list[Finding]]) -> list[Finding]:
    """The findings of ``work``, or one for what it left unanswered: ``question``, else the
    endpoint that failed."""
    try:
        return await work
    except OutOfBudget as exc:
        return [("note", f"{question or 'a request'}: {exc}")]
    except APIError as exc:
        where = api.endpoint_label(exc.endpoint)
        if question is None:
            return [("FAIL", f"{where} failed: {exc.reason}")]
        return [("FAIL", f"{question}: {where}: {exc.reason}")]


def _label(kind: Kind, per_day: bool) -> str:
    return api.endpoint_label(api.endpoint_path(kind, per_day))


def _unanswered(exc: APIError, settings: Settings, app: AppConfig) -> str:
    """What a refused or failed first request means, and the setting to check."""
    where = f"{api.endpoint_label(exc.endpoint)}: {exc.reason}"
    check_url = f": check {env_name('api_url')}"
    if settings.config_file is not None:
        check_url += f" or the api_url of app {app.name!r}"
    if not isinstance(exc, APIStatusError):
        hint = "" if isinstance(exc, APITimeout) else check_url  # refused, or not the API
        return f"the API did not answer the first request: {where}{hint}"
    if exc.status == 403:
        return refusal(exc)
    if exc.status != 401:
        hints = {404: check_url, 429: ": rate limited, run check again in a minute"}
        return f"the API refused the first request: {where}{hints.get(exc.status, '')}"
    key = env_name("api_key")
    if settings.config_file is not None:
        key = f"the api_key (or api_key_file) of app {app.name!r} in {env_name('config_file')}"
        key += f" ({settings.config_file})"
    elif settings.api_key_file is not None:
        key = f"{env_name('api_key_file')} ({settings.api_key_file})"
    return f"API key rejected ({exc.reason}): check {key}"


class AppCheck:
    """The questions to one app, answered by the findings in its report."""

    def __init__(self, client: AppClient, settings: Settings, app: AppConfig) -> None:
        self.client, self.settings, self.app = client, settings, app
        self.zone, self.now = settings.zone, time.time()
        self.today = local_day(self.now, self.zone)
        self.first = self.today - timedelta(days=RECENT_DAYS)  # of the week compared
        self.reads: dict[Kind, asyncio.Task[Days]] = {}  # its days, and today
        self.report = Report(app)

    async def total(self, kind: Kind) -> int:
        return await self.client.total(self.app, kind, *all_time_window(self.today, self.zone))

    async def run(self) -> None:
        try:
            messages_total = await self.total(MESSAGES)
        except APIError as exc:  # nothing else can be asked then
            self.report.add("FAIL", _unanswered(exc, self.settings, self.app))
            return
        self.report.add("ok", "key accepted")
        self.report.add("ok", "Admin API allowed for the plan")
        # The zone is asked next, though printed last: users get it wrong, so it has the
        # budget should that run short; and days cut in another zone than the API's cannot
        # add up to the totals, which are then not compared.
        zone = await answer("could not find the API's time zone", self.read_zone())
        self.report.add("ok", f"{_label(MESSAGES, False)} answered: {messages_total} all time")
        self.report.findings += await self.endpoints()
        self.report.findings += await answer("could not see how the API pages", self.pages())
        if zone[0][0] == "FAIL":
            self.report.add("note", "totals not compared with per-day sums: wrong zone")
        else:
            question = "could not compare totals with per-day sums"
            self.report.findings += await answer(question, self.compare())
        self.report.findings += zone

    async def read_zone(self) -> list[Finding]:
        """Messages dated over the last 25 whole hours, then a quarter hour either side of
        where the date flips: if the hours are busy that pins the flip (inside an hour that
        holds two dates, or at the whole hour between one and the other)."""

        async def ask(start: int, end: int) -> Window:
            days = await self.client.per_day(self.app, MESSAGES, start, end)
            return Window(start, end, frozenset(days))

        hour = int(self.now) // HOUR * HOUR  # the current hour is not over
        starts = range(hour - SCAN_HOURS * HOUR, hour, HOUR)
        windows = await gather_all(ask(start, start + HOUR - 1) for start in starts)
        found = best_flip(windows)
        if found is not None and len(found.candidates) > 1:
            # The middle candidate, a whole hour if there is one: most zones' midnights are.
            pool = [m for m in found.candidates if m % HOUR == 0] or found.candidates
            middle = pool[len(pool) // 2]
            quarters = [ask(middle - QUARTER, middle - 1), ask(middle, middle + QUARTER - 1)]
            windows += await gather_all(quarters)
        return [zone_finding(windows, self.zone, self.now)]

    async def endpoints(self) -> list[Finding]:
        """A line per endpoint but the messages' total: the dialogs' totals, and yesterday's
        and today's counts from the reads that ``compare`` sums too."""
        app, today = self.app, self.today

        def read(kind: Kind) -> asyncio.Task[Days]:
            return asyncio.create_task(self.client.days(app, kind, self.first, today, self.zone))

        self.reads = {kind: read(kind) for kind in (MESSAGES, *app.dialog_types)}

        async def recent(kind: Kind) -> str:
            counts = (await self.reads[kind]).counts
            return f"{counts.get(today - ONE_DAY, 0)} yesterday, {counts.get(today, 0)} today"

        async def line(kinds: Sequence[Kind], per_day: bool) -> list[Finding]:
            counts = await gather_all(map(recent if per_day else self.total, kinds))
            named = [
                f"{app.type_name(kind)} {count}" if isinstance(kind, int) else f"{count}"
                for kind, count in zip(kinds, counts, strict=True)
            ]
            join, end = ("; ", "") if per_day else (", ", " all time")
            return [("ok", f"{_label(kinds[0], per_day)} answered: {join.join(named)}{end}")]

        kinds = app.dialog_types
        lines = [line([MESSAGES], True), line(kinds, False), line(kinds, True)]
        answers = await gather_all(answer(None, each) for each in lines)
        return [found for findings in answers for found in findings]

    async def pages(self) -> list[Finding]:
        """How the API answers the widest window the exporter asks: how many dates one answer
        held, and whether they add up to the API's total for the same window."""
        last = self.today - ONE_DAY
        first = last - timedelta(days=api.WINDOW_DAYS - 1)
        window = api.days_window(first, last, self.zone)
        page, total = await gather_all(
            [
                self.client.per_day(self.app, MESSAGES, *window),
                self.client.total(self.app, MESSAGES, *window),
            ]
        )
        held = sorted(page)
        answer = f"{len(held)} date(s)" + (f", {held[0]} to {held[-1]}" if held else "")
        asked = f"{_label(MESSAGES, True)} for {first} to {last} ({api.WINDOW_DAYS} days)"
        if sum(page.values()) == total:
            return [("ok", f"{asked} answered {answer} in one page, adding up to its total")]
        return [
            (
                "note",
                f"{asked} answered {answer}, summing to {sum(page.values())}, not its total "
                f"{total}: a cap on the page cut it short, or the endpoints disagree (see the "
                "totals line); the exporter asks narrower windows until each adds up, at "
                "more requests per poll",
            )
        ]

    async def compare(self) -> list[Finding]:
        """Over the week before today, each all-time total grew by the sum of its days: the
        totals at the end of the day before and of its last day are exact, as are the days."""
        app, zone, first, last = self.app, self.zone, self.first, self.today - ONE_DAY

        async def growth(kind: Kind) -> tuple[int, int]:
            ends = (first - ONE_DAY, last)
            before, after = await gather_all(
                self.client.total_at_end_of(app, kind, day, zone) for day in ends
            )
            counts = (await self.reads[kind]).counts
            return after - before, sum(n for day, n in counts.items() if day <= last)

        results = dict(zip(self.reads, await gather_all(map(growth, self.reads)), strict=True))
        names = {kind: app.type_name(kind) if isinstance(kind, int) else kind for kind in results}
        period = f"{first} to {last} in {zone.key}"
        wrong = [
            f"{names[kind]}: the total of {_label(kind, False)} grew by {grown} over the last "
            f"{RECENT_DAYS} days ({period}) but {_label(kind, True)} sums to {summed} for "
            "them: the daily and all-time figures will not add up"
            for kind, (grown, summed) in results.items()
            if grown != summed
        ]
        figures = ", ".join(f"{names[kind]} {grown}" for kind, (grown, _) in results.items())
        agree = f"totals agree with per-day sums over the last {RECENT_DAYS} days"
        return [("FAIL", text) for text in wrong] or [("ok", f"{agree} ({period}: {figures})")]


@dataclass(frozen=True)
class Window:
    """The API's dates of the messages sent from ``start`` to ``end``, its last second:
    whether ``end_date`` is inclusive or not, every message counted was sent in between. An
    hour holds at most two dates in any zone: a cap of one a page makes the flip less
    precise, never wrong."""

    start: int
    end: int
    days: frozenset[date]

    @property
    def span(self) -> str:
        return f"{_utc(self.start, '%Y-%m-%d %H:%M')} to {_utc(self.end + 1)} UTC"

    def allowed(self, zone: ZoneInfo) -> bool:
        """Whether ``zone``'s calendar could date the window's messages as the API did."""
        first, last = local_day(self.start, zone), local_day(self.end, zone)
        return all(first <= day <= last for day in self.days)


@dataclass(frozen=True)
class Flip:
    """Where the API's ``day`` begins: after ``after``, at ``upto`` at the latest."""

    day: date
    after: int
    upto: int

    @property
    def midnight(self) -> int:
        """The UTC midnight that starts ``day``: a zone's starts ``day`` at midnight - offset."""
        return int(datetime.combine(self.day, datetime.min.time(), UTC).timestamp())

    @property
    def candidates(self) -> list[int]:
        """The quarter hours in range at which a zone's midnight starts ``day``."""
        low = max(self.after + 1, self.midnight - MAX_OFFSET)
        high = min(self.upto, self.midnight - MIN_OFFSET)
        return list(range(-(-low // QUARTER) * QUARTER, high + 1, QUARTER))

    def offset(self, moment: int) -> int:
        return self.midnight - moment

    @property
    def when(self) -> str:
        if len(self.candidates) == 1:
            return f"at {_utc(self.candidates[0])} UTC"
        return f"between {_utc(self.after)} and {_utc(self.upto + 1)} UTC"


def best_flip(windows: Sequence[Window]) -> Flip | None:
    """The most precisely located start of a day the API dated (the latest among equals):
    after a message it dates earlier, at or before every message it dates that day or later."""
    flips = []
    for day in sorted({day for window in windows for day in window.days})[1:]:
        before = [w.start for w in windows if any(d < day for d in w.days)]
        since = [w.end for w in windows if any(d >= day for d in w.days)]
        if before and since:
            flips.append(Flip(day, max(before), min(since)))
    located = [flip for flip in reversed(flips) if flip.candidates]
    return min(located, key=lambda flip: len(flip.candidates), default=None)


def zone_finding(windows: Sequence[Window], zone: ZoneInfo, now: float) -> tuple[Level, str]:
    """The verdict on the windows asked: the hours, and the quarter hours among them."""
    hours = [window for window in windows if window.end + 1 - window.start == HOUR]
    activity = f"{sum(bool(w.days) for w in hours)} of the last {len(hours)} hours had messages"
    crowded = [window for window in windows if len(window.days) > 2]
    if crowded:  # more dates than any zone has in an hour: no flip can be read
        return "FAIL", (
            f"{_label(MESSAGES, per_day=True)} answered {len(crowded[0].days)} dates for "
            f"{crowded[0].span}: the API seems to ignore start_date and end_date"
        )
    wrong = [window for window in windows if not window.allowed(zone)]
    found = best_flip(windows)
    if wrong:
        return "FAIL", _zone_mismatch(wrong[0], found, zone)
    here = f"{env_name('timezone')} ({zone.key}, {_offset_text(_zone_offset(zone, now))})"
    if found is None:
        return "note", f"cannot tell the API's zone: too little activity ({activity})"
    if len(found.candidates) > 1:
        return "note", (
            f"the API's dates agree with {here} as far as seen, but too little activity "
            f"around midnight to be sure: its date changed {found.when} ({activity})"
        )
    return "ok", (
        f"the API cuts its days at midnight in {here}: its date changed {found.when}; {activity}"
    )


def _zone_mismatch(wrong: Window, found: Flip | None, zone: ZoneInfo) -> str:
    setting = env_name("timezone")
    ours = f"{setting}={zone.key}"
    offsets = sorted(map(found.offset, found.candidates)) if found else []
    cut = _zone_offset(zone, found.candidates[0]) if found else 0
    if found is None or cut in offsets:
        # No flip located, or one the zone agrees with: show the window that proves it wrong.
        dates = " and ".join(str(day) for day in sorted(wrong.days))
        return (
            f"the API dated the messages of {wrong.span} as {dates}, but {ours} puts them on "
            f"{local_day(wrong.start, zone)}: set {setting} to the API's zone"
        )
    tail = f"but {ours} cuts at 00:00 {_offset_text(cut)}: set {setting} to the API's zone"
    if len(offsets) == 1:
        return (
            f"the API cuts its days at about 00:00 {_offset_text(offsets[0])} (its date "
            f"changed {found.when}), {tail} ({_suggest(offsets[0], found.candidates[0])})"
        )
    return (
        f"the API cuts its days at 00:00 somewhere from {_offset_text(offsets[0])} to "
        f"{_offset_text(offsets[-1])} (its date changed {found.when}; too little activity "
        f"to be exact), {tail}"
    )


def _suggest(offset: int, moment: int) -> str:
    """A zone to set: Etc/GMT for whole hours (its sign inverted), a named one otherwise."""
    text = f"a zone at {_offset_text(offset)}"
    if offset == 0:
        return f"{text}, for example UTC"
    if offset % HOUR == 0:
        return (
            f"{text}, for example Etc/GMT{-offset // HOUR:+d}; Etc/GMT signs are inverted, "
            "and a zone with daylight saving time needs its region's name instead"
        )
    named = [name for name in FRACTIONAL_ZONES if _zone_offset(ZoneInfo(name), moment) == offset]
    return f"{text}, for example {named[0]}" if named else text


def _zone_offset(zone: ZoneInfo, moment: float) -> int:
    return int((datetime.fromtimestamp(moment, zone).utcoffset() or timedelta()).total_seconds())


def _offset_text(offset: int) -> str:
    hours, minutes = divmod(abs(offset) // 60, 60)
    return f"UTC{'-' if offset < 0 else '+'}{hours:02d}:{minutes:02d}"


def _utc(moment: int, layout: str = "%H:%M") -> str:
    return datetime.fromtimestamp(moment, UTC).strftime(layout)


async def check_all(settings: Settings, apps: Sequence[AppConfig]) -> list[Report]:
    """Check the apps side by side, as many at once as fill the requests in flight (each
    app's time starts with its check); print each app's lines together, in config order."""
    limits = limits_from(settings)
    apps_at_once = asyncio.Semaphore(max(1, limits.max_concurrent_requests // APP_CONCURRENCY))

    async def check(http: httpx.AsyncClient, app: AppConfig) -> Report:
        async with apps_at_once:
            questions = AppCheck(AppClient(http, limits), settings, app)
            try:
                await questions.run()
            except Exception as exc:  # a bug or an answer nobody foresaw: a line, no traceback
                questions.report.add("FAIL", f"check stopped: unexpected {type(exc).__name__}")
            return questions.report

    async with open_http(limits) as http, asyncio.TaskGroup() as group:
        checks = [group.create_task(check(http, app)) for app in apps]
        for task in checks:
            for line in (await task).lines():
                print(line, flush=True)
    return [task.result() for task in checks]


def main(argv: list[str]) -> int:
    """Run ``check`` with ``argv`` (the arguments after the word ``check``)."""
    parser = options.ArgumentParser(
        prog=COMMAND,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Check each app's key, plan and endpoints, its totals against per-day sums over\n"
            f"the last {RECENT_DAYS} days and the zone in which the API cuts its days\n"
            f"({env_name('timezone')}), with the daemon's settings and config file. Each\n"
            "finding is one line on stdout, apps in config order:\n\n"
            "  ok   APP: ...   consistent\n"
            "  FAIL APP: ...   wrong; the line names the setting to change\n"
            "  note APP: ...   inconclusive (e.g. too little activity); not a failure\n\n"
            "and a last line 'check: N app(s) checked, all consistent' or\n"
            "'check: N problem(s) in M app(s)'. Apps are checked side by side, each with at\n"
            f"most {MAX_REQUESTS} API requests (retries aside) and {MAX_SECONDS:.0f} s."
        ),
        epilog="Exit codes: 0 all consistent (notes allowed), 1 a finding failed, 2 bad input "
        "or configuration, 128+N stopped by signal N.",
    )
    options.add_settings_arguments(parser.add_argument_group("settings (as for the daemon)"))
    return options.one_shot(parser, argv, _run)


def _run(args: argparse.Namespace) -> int:
    settings = options.settings_from(args)
    reports = options.run_until_stopped(check_all(settings, load_apps(settings)))
    print(summary(reports), flush=True)
    return 1 if any(report.problems for report in reports) else 0
