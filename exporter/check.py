"""``connectycube-exporter check``: is the key right, and do the settings match the API?

With the daemon's settings, it asks each app's API at most ``MAX_REQUESTS`` questions and
prints a line per finding: access (key and plan), what each endpoint answers, each total
against its per-day sums over the last week, and the zone in which the API cuts its days
(where its date flips among the messages of the last 25 hours). Counts come from the
client's exact questions, so neither the API's bounds nor a page cap raises a false alarm.
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

from exporter import api
from exporter.api import MESSAGES, ONE_DAY, Kind, all_time_window, local_day
from exporter.client import (
    APIConnectionError,
    APIError,
    APIInvalidResponse,
    APIStatusError,
    APITimeout,
    ClientLimits,
    StatsClient,
    limits_from,
    open_http,
)
from exporter.config import AppConfig, ConfigError, Settings, env_name, load_apps
from exporter.options import (
    PROG,
    ArgumentParser,
    Interrupted,
    add_settings_arguments,
    cancelled_by_stop_signals,
    fail,
    settings_from,
    stop_signals_interrupt,
)
from exporter.poller import refusal

T = TypeVar("T")
Level = Literal["ok", "FAIL", "note"]

COMMAND = f"{PROG} check"
MAX_REQUESTS = 60  # per app, retries aside: four dialog types take 57 if pages are not capped
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
    findings: list[tuple[Level, str]] = field(default_factory=list)

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
    """The app's requests or time are spent; the message says which."""

    def __init__(self, message: str, level: Level) -> None:
        super().__init__(message)
        self.level = level


def failure(exc: BaseException, question: str | None = None) -> tuple[Level, str]:
    """The finding for a question left unanswered; anything unforeseen is raised again."""
    if isinstance(exc, APIError) and question is None:
        return "FAIL", f"{api.endpoint_label(exc.endpoint)} failed: {exc.reason}"
    if isinstance(exc, APIError):
        return "FAIL", f"{question}: {api.endpoint_label(exc.endpoint)}: {exc.reason}"
    if isinstance(exc, OutOfBudget):
        return exc.level, f"{question or 'a request'}: {exc}"
    raise exc


def _label(kind: Kind, per_day: bool) -> str:
    return api.endpoint_label(api.endpoint_path(kind, per_day))


async def gather_all(requests: Iterable[Awaitable[T]]) -> list[T]:
    """Every result, or the first error once all requests are over (none left running)."""
    results = await asyncio.gather(*requests, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]  # no exception left among them


class AppClient(StatsClient):
    """One app's client: its own cap on requests at once, and at most ``MAX_REQUESTS``
    (retries aside, counted in ``total`` and ``per_day``, which ``days`` and
    ``total_at_end_of`` ask through) within ``MAX_SECONDS`` of its creation."""

    def __init__(self, http: httpx.AsyncClient, limits: ClientLimits) -> None:
        cap = min(APP_CONCURRENCY, limits.max_concurrent_requests)
        super().__init__(http, replace(limits, max_concurrent_requests=cap))
        self.deadline = time.monotonic() + MAX_SECONDS
        self.sent = 0

    async def total(self, app: AppConfig, *args: Any, **kwargs: Any) -> int:
        return await self._spend(super().total(app, *args, **self._within(kwargs)))

    async def per_day(self, app: AppConfig, *args: Any, **kwargs: Any) -> dict[date, int]:
        return await self._spend(super().per_day(app, *args, **self._within(kwargs)))

    def _within(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.sent >= MAX_REQUESTS:
            raise OutOfBudget(f"the budget of {MAX_REQUESTS} requests is spent", "note")
        self.sent += 1
        return {**kwargs, "deadline": self.deadline}

    async def _spend(self, request: Awaitable[T]) -> T:
        try:
            return await request
        except APITimeout:  # waiting for a slot or an answer when the app's time ran out
            if time.monotonic() < self.deadline - 0.01:
                raise
            raise OutOfBudget(f"not finished within {MAX_SECONDS:.0f} s", "FAIL") from None


def _unanswered(exc: APIError, settings: Settings, app: AppConfig) -> str:
    """What a refused or failed first request means, and the setting to check."""
    where = f"{api.endpoint_label(exc.endpoint)}: {exc.reason}"
    check_url = f": check {env_name('api_url')}"
    if settings.config_file is not None:
        check_url += f" or the api_url of app {app.name!r}"
    if not isinstance(exc, APIStatusError):
        hint = check_url if isinstance(exc, APIConnectionError | APIInvalidResponse) else ""
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
        self.report = Report(app)

    async def run(self) -> Report:
        """Every question; never raises but for cancellation.

        The zone is asked right after access, though printed last: it is the question users
        get wrong, so it has the budget should it run short (a server paging a few days at a
        time). Days cut in another zone than the API's cannot add up to the totals: they are
        then not compared.
        """
        try:
            try:
                window = all_time_window(self.today, self.zone)
                messages_total = await self.client.total(self.app, MESSAGES, *window)
            except APIError as exc:  # nothing else can be asked then
                self.report.add("FAIL", _unanswered(exc, self.settings, self.app))
                return self.report
            except OutOfBudget as exc:
                self.report.add(*failure(exc, "the API did not answer the first request"))
                return self.report
            self.report.add("ok", "key accepted")
            self.report.add("ok", "Admin API allowed for the plan")
            try:
                zone = zone_finding(await self.hours(), self.zone, self.now)
            except Exception as exc:
                zone = failure(exc, "could not find the API's time zone")
            self.report.add("ok", f"{_label(MESSAGES, False)} answered: {messages_total} all time")
            reads = await self.endpoints()
            if zone[0] != "FAIL":
                await self.consistency(reads)
            else:
                self.report.add("note", "totals not compared with per-day sums: wrong zone")
            self.report.add(*zone)
        except Exception as exc:  # a bug or an answer nobody foresaw: one line, not a traceback
            self.report.add("FAIL", f"check stopped: unexpected {type(exc).__name__}")
        return self.report

    async def hours(self) -> list[Window]:
        """The last 25 whole hours, then a quarter hour either side of where the date flips.

        If the hours are busy that pins the flip: inside an hour that holds two dates, or at
        the whole hour between one that holds the earlier and one that holds the later.
        """

        async def ask(start: int, end: int) -> Window:
            days = await self.client.per_day(self.app, MESSAGES, start, end)
            return Window(start, end, frozenset(days))

        hour = int(self.now) // HOUR * HOUR  # the current hour is not over
        starts = range(hour - SCAN_HOURS * HOUR, hour, HOUR)
        windows = await gather_all(ask(start, start + HOUR - 1) for start in starts)
        found = best_flip(windows)
        if found is None or len(found.candidates) == 1:
            return windows
        # The middle candidate, a whole hour if there is one: most zones' midnights are.
        pool = [m for m in found.candidates if m % HOUR == 0] or found.candidates
        middle = pool[len(pool) // 2]
        quarters = [ask(middle - QUARTER, middle - 1), ask(middle, middle + QUARTER - 1)]
        return windows + await gather_all(quarters)

    async def endpoints(self) -> dict[Kind, asyncio.Task[dict[date, int]]]:
        """A line per endpoint but the messages' total, which ``run`` has: the dialogs' totals,
        yesterday's and today's counts. Returns each kind's read of the week before today
        to today, so that the comparison of the totals sums the same answers."""
        app, today = self.app, self.today
        first = today - timedelta(days=RECENT_DAYS)

        def read(kind: Kind) -> asyncio.Task[dict[date, int]]:
            return asyncio.create_task(self.client.days(app, kind, first, today, self.zone))

        # Messages first: the busiest kind's longest page tells the client which answers a
        # page cap may have cut. Read at once, the quieter kinds' pages could all be split.
        reads = {MESSAGES: read(MESSAGES)}
        await asyncio.wait(reads.values())
        reads |= {code: read(code) for code in app.dialog_types}

        async def recent(kind: Kind) -> str:
            counts = await reads[kind]
            return f"{counts.get(today - ONE_DAY, 0)} yesterday, {counts.get(today, 0)} today"

        async def each_type(ask: Callable[[int], Awaitable[object]], join: str) -> str:
            answers = await gather_all(map(ask, app.dialog_types))
            pairs = zip(app.dialog_types, answers, strict=True)
            return join.join(f"{app.type_name(code)} {answer}" for code, answer in pairs)

        async def totals() -> str:
            window = all_time_window(today, self.zone)
            return await each_type(lambda code: self.client.total(app, code, *window), ", ")

        questions = {
            _label(MESSAGES, per_day=True): recent(MESSAGES),
            _label(1, per_day=False): totals(),
            _label(1, per_day=True): each_type(recent, "; "),
        }
        answers = await asyncio.gather(*questions.values(), return_exceptions=True)
        for label, answer in zip(questions, answers, strict=True):
            if isinstance(answer, BaseException):
                self.report.add(*failure(answer))
            else:
                end = " all time" if label == _label(1, per_day=False) else ""
                self.report.add("ok", f"{label} answered: {answer}{end}")
        return reads

    async def consistency(self, reads: dict[Kind, asyncio.Task[dict[date, int]]]) -> None:
        """Over the week before today, each all-time total grew by the sum of its days: the
        totals at the end of the day before and of its last day are exact, as are the days."""
        app, zone = self.app, self.zone
        first, last = self.today - timedelta(days=RECENT_DAYS), self.today - ONE_DAY

        async def compare(kind: Kind) -> tuple[int, int]:
            ends = (first - ONE_DAY, last)
            totals = [self.client.total_at_end_of(app, kind, day, zone) for day in ends]
            before, after = await gather_all(totals)
            counts = await reads[kind]
            return after - before, sum(n for day, n in counts.items() if day <= last)

        try:
            results = dict(zip(reads, await gather_all(map(compare, reads)), strict=True))
        except Exception as exc:
            self.report.add(*failure(exc, "could not compare totals with per-day sums"))
            return
        names = {kind: app.type_name(kind) if isinstance(kind, int) else kind for kind in reads}
        period = f"{first} to {last} in {zone.key}"
        wrong = {kind: counts for kind, counts in results.items() if counts[0] != counts[1]}
        for kind, (grown, summed) in wrong.items():
            self.report.add(
                "FAIL",
                f"{names[kind]}: the total of {_label(kind, per_day=False)} grew by {grown} "
                f"over the last {RECENT_DAYS} days ({period}) but {_label(kind, per_day=True)} "
                f"sums to {summed} for them: the daily and all-time figures will not add up",
            )
        if not wrong:
            figures = ", ".join(f"{names[kind]} {grown}" for kind, (grown, _) in results.items())
            text = f"over the last {RECENT_DAYS} days ({period}: {figures})"
            self.report.add("ok", f"totals agree with per-day sums {text}")


@dataclass(frozen=True)
class Window:
    """The API's dates of the messages sent from ``start`` to ``end``, its last second.

    Sent as ``end_date``, an inclusive end stays inside the window and an exclusive one
    loses a second: either way every message counted was sent in ``[start, end]``. An hour
    holds at most two dates in any zone, so a page cap of one makes the flip less precise,
    never wrong.
    """

    start: int
    end: int
    days: frozenset[date]

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
        """The UTC offset of a zone whose ``day`` begins at ``moment``."""
        return self.midnight - moment


def best_flip(windows: Sequence[Window]) -> Flip | None:
    """The most precisely located start of a day the API dated (the latest among equals):
    after a message it dates earlier, at or before every message it dates that day or later."""
    flips = []
    for day in sorted({day for window in windows for day in window.days})[1:]:
        before = [w.start for w in windows if any(d < day for d in w.days)]
        since = [w.end for w in windows if any(d >= day for d in w.days)]
        if before and since and Flip(day, max(before), min(since)).candidates:
            flips.append(Flip(day, max(before), min(since)))
    return min(reversed(flips), key=lambda f: len(f.candidates), default=None)


def zone_finding(windows: Sequence[Window], zone: ZoneInfo, now: float) -> tuple[Level, str]:
    """The verdict on the windows asked: the hours, and the quarter hours among them."""
    hours = [window for window in windows if window.end + 1 - window.start == HOUR]
    activity = f"{sum(bool(w.days) for w in hours)} of the last {len(hours)} hours had messages"
    crowded = [window for window in windows if len(window.days) > 2]
    if crowded:  # more dates than any zone has in an hour: no flip can be read
        return "FAIL", (
            f"{_label(MESSAGES, per_day=True)} answered {len(crowded[0].days)} dates for "
            f"{_span(crowded[0])}: the API seems to ignore start_date and end_date"
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
            f"around midnight to be sure: its date changed {_when(found)} ({activity})"
        )
    return "ok", (
        f"the API cuts its days at midnight in {here}: its date changed {_when(found)}; {activity}"
    )


def _zone_mismatch(wrong: Window, found: Flip | None, zone: ZoneInfo) -> str:
    setting = env_name("timezone")
    ours = f"{setting}={zone.key}"
    moments = found.candidates if found else []
    offsets = sorted(found.offset(moment) for moment in moments) if found else []
    cut = _zone_offset(zone, moments[0]) if moments else None
    if found is None or cut in offsets:
        # No flip located, or one the zone agrees with: show the window that proves it wrong.
        dates = " and ".join(str(day) for day in sorted(wrong.days))
        return (
            f"the API dated the messages of {_span(wrong)} as {dates}, but {ours} puts them on "
            f"{local_day(wrong.start, zone)}: set {setting} to the API's zone"
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


def _span(window: Window) -> str:
    return f"{_utc(window.start, '%Y-%m-%d %H:%M')} to {_utc(window.end + 1)} UTC"


def _when(found: Flip) -> str:
    if len(found.candidates) == 1:
        return f"at {_utc(found.candidates[0])} UTC"
    return f"between {_utc(found.after)} and {_utc(found.upto + 1)} UTC"


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
            "'check: N problem(s) in M app(s)'. Apps are checked side by side, each with at\n"
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
    """Check the apps side by side, as many at once as fill the requests in flight (each
    app's time starts with its check); print each app's lines together, in config order."""
    limits = limits_from(settings)
    apps_at_once = asyncio.Semaphore(max(1, limits.max_concurrent_requests // APP_CONCURRENCY))

    async def check(http: httpx.AsyncClient, app: AppConfig) -> Report:
        async with apps_at_once:
            return await AppCheck(AppClient(http, limits), settings, app).run()

    async with open_http(limits) as http, asyncio.TaskGroup() as group:
        checks = [group.create_task(check(http, app)) for app in apps]
        for task in checks:
            for line in (await task).lines():
                print(line, flush=True)
    return [task.result() for task in checks]


def main(argv: list[str]) -> int:
    """Run ``check`` with ``argv`` (the arguments after the word ``check``)."""
    with stop_signals_interrupt():
        try:
            args = build_parser().parse_args(argv)
            try:
                settings = settings_from(args)
                apps = load_apps(settings)
            except ConfigError as exc:
                return fail(COMMAND, 2, f"configuration error: {exc}")
            reports = asyncio.run(cancelled_by_stop_signals(check_all(settings, apps)))
            print(summary(reports), flush=True)
            return 1 if any(report.problems for report in reports) else 0
        except Interrupted as stop:
            return fail(COMMAND, 128 + stop.signum, f"stopped by {stop}")
