"""``connectycube-exporter check``: is the key right, and do the settings match the API?

The first command a new user runs with a real key. With the daemon's settings and config
file it asks each app's API at most ``MAX_REQUESTS`` questions and prints a line per
finding:

1. access: the key is accepted and the plan allows the Admin API;
2. endpoints: each of the four endpoints answers, and what (counts, never keys);
3. consistency: over the seven days before today, each all-time total grew by the sum of
   its per-day counts;
4. zone: the API cuts its days at midnight in ``CONNECTYCUBE_TIMEZONE``, found by where
   its date flips among the messages of each of the last 25 hours.

Counts are read with the client's exact questions (``days``, ``total_at_end_of``), and
hours only for what they prove, so that neither the API's bounds nor a cap on the size of
its pages can raise a false alarm.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

import httpx

from exporter.api import (
    MESSAGES,
    ONE_DAY,
    Kind,
    all_time_window,
    endpoint_label,
    endpoint_path,
    local_day,
)
from exporter.client import (
    APIConnectionError,
    APIError,
    APIInvalidResponse,
    APIStatusError,
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

COMMAND = f"{PROG} check"
MAX_REQUESTS = 60
"""API requests per app, retries aside: four dialog types take 57 if pages are not capped."""
MAX_SECONDS = 60.0
"""Time per app, retries included."""
APP_CONCURRENCY = 4
"""Requests at once per app: quick, and gentle on the API's rate limit."""
RECENT_DAYS = 7
SCAN_HOURS = 25
"""Hours read: no zone has a longer day, so they hold a midnight of every zone."""
HOUR, QUARTER = 3600, 900
"""Every zone's offset from UTC is a multiple of 15 minutes, so its midnights are too."""
MIN_OFFSET, MAX_OFFSET = -12 * HOUR, 14 * HOUR
"""The offsets zones have (Etc/GMT+12 to Pacific/Kiritimati)."""
FRACTIONAL_ZONES = ("Asia/Tehran", "Asia/Kabul", "Asia/Kolkata", "Asia/Kathmandu")
"""Zones to suggest for the commonest offsets of a fraction of an hour."""

Level = Literal["ok", "FAIL", "note"]
_CONTROL = dict.fromkeys((*range(32), 127), " ")


# --------------------------------------------------------------------------- findings


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
        # Each line names its app, so that a grep or a log keeps its meaning; a newline in
        # an API's error message must not split a finding or forge another.
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
    """The finding for a question that got no answer, named by ``question`` or else by the
    endpoint that failed; anything unforeseen is raised again."""
    if isinstance(exc, APIError) and question is None:
        return "FAIL", f"{endpoint_label(exc.endpoint)} failed: {exc.reason}"
    if isinstance(exc, APIError):
        return "FAIL", f"{question}: {endpoint_label(exc.endpoint)}: {exc.reason}"
    if isinstance(exc, OutOfBudget):
        return exc.level, f"{question or 'a request'}: {exc}"
    raise exc


# --------------------------------------------------------------------------- requests


class CheckClient(StatsClient):
    """The client, each app held to ``MAX_REQUESTS`` and ``MAX_SECONDS`` from ``start``.

    Every request, those of ``days`` and ``total_at_end_of`` too, goes through ``total``
    or ``per_day``: here it gets the app's deadline, and is counted as it is sent, under
    the app's semaphore, so that requests at once cannot overshoot the budget.
    """

    def __init__(self, http: httpx.AsyncClient, limits: ClientLimits) -> None:
        super().__init__(http, limits)
        self._sent: Counter[str] = Counter()
        self._deadlines: dict[str, float] = {}
        self._app_slots: dict[str, asyncio.Semaphore] = {}

    def start(self, app: AppConfig) -> None:
        self._deadlines[app.name] = time.monotonic() + MAX_SECONDS
        self._app_slots[app.name] = asyncio.Semaphore(APP_CONCURRENCY)

    async def total(self, app: AppConfig, *args: Any, **kwargs: Any) -> int:
        async with self._sending(app, kwargs):
            return await super().total(app, *args, **kwargs)

    async def per_day(self, app: AppConfig, *args: Any, **kwargs: Any) -> dict[date, int]:
        async with self._sending(app, kwargs):
            return await super().per_day(app, *args, **kwargs)

    @asynccontextmanager
    async def _sending(self, app: AppConfig, kwargs: dict[str, Any]) -> AsyncIterator[None]:
        kwargs["deadline"] = self._deadlines[app.name]
        async with self._app_slots[app.name]:
            if time.monotonic() >= self._deadlines[app.name]:
                raise OutOfBudget(f"not finished within {MAX_SECONDS:.0f} s", "FAIL")
            if self._sent[app.name] >= MAX_REQUESTS:
                raise OutOfBudget(f"the budget of {MAX_REQUESTS} requests is spent", "note")
            self._sent[app.name] += 1
            yield


async def gather_all(requests: Iterable[Awaitable[T]]) -> list[T]:
    """Every result, or the first error once all requests are over (none left running)."""
    results = await asyncio.gather(*requests, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]  # no exception left among them


def _label(kind: Kind, per_day: bool) -> str:
    return endpoint_label(endpoint_path(kind, per_day))


# --------------------------------------------------------------------------- settings to fix


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


def _unanswered(exc: APIError, settings: Settings, app: AppConfig) -> str:
    """What a refused or failed first request means, and the setting to check."""
    where = f"{endpoint_label(exc.endpoint)}: {exc.reason}"
    check_url = f": check {url_setting(settings, app)}"
    if not isinstance(exc, APIStatusError):
        hint = check_url if isinstance(exc, APIConnectionError | APIInvalidResponse) else ""
        return f"the API did not answer the first request: {where}{hint}"
    if exc.status == 401:
        return f"API key rejected ({exc.reason}): check {key_setting(settings, app)}"
    if exc.status == 403:
        return refusal(exc)
    hints = {404: check_url, 429: ": rate limited, run check again in a minute"}
    return f"the API refused the first request: {where}{hints.get(exc.status, '')}"


# --------------------------------------------------------------------------- one app


class AppCheck:
    """The questions to one app, answered by the findings in its report."""

    def __init__(self, client: CheckClient, settings: Settings, app: AppConfig) -> None:
        self.client, self.settings, self.app = client, settings, app
        self.zone, self.now = settings.zone, time.time()
        self.today = local_day(self.now, self.zone)
        self.report = Report(app)

    async def run(self) -> Report:
        """Every question, the zone right after access though printed last; never raises
        but for cancellation.

        Asked early, the zone has the budget should it run short (a server that pages a
        few days at a time): it is the question users get wrong. And days cut in a zone
        other than the API's cannot add up to the totals: they are then not compared.
        """
        self.client.start(self.app)
        try:
            messages_total = await self.access()
            if messages_total is None:
                return self.report
            try:
                zone = zone_finding(await self.hours(), self.zone, self.now)
            except Exception as exc:
                zone = failure(exc, "could not find the API's time zone")
            reads = await self.endpoints(messages_total)
            if zone[0] != "FAIL":
                await self.consistency(reads)
            else:
                self.report.add("note", "totals not compared with per-day sums: wrong zone")
            self.report.add(*zone)
        except Exception as exc:  # a bug or an answer nobody foresaw: one line, not a traceback
            self.report.add("FAIL", f"check stopped: unexpected {type(exc).__name__}")
        return self.report

    async def access(self) -> int | None:
        """The all-time message total, the one question every key and plan must answer.

        None if it got no answer, which is reported: nothing else can be asked then.
        """
        window = all_time_window(self.today, self.zone)
        try:
            total = await self.client.total(self.app, MESSAGES, *window)
        except APIError as exc:
            self.report.add("FAIL", _unanswered(exc, self.settings, self.app))
            return None
        self.report.add("ok", "key accepted")
        self.report.add("ok", "Admin API allowed for the plan")
        return total

    async def hours(self) -> list[Window]:
        """The last 25 whole hours, then a quarter hour either side of where the date flips.

        If the hours are busy that pins the flip: inside an hour that holds two dates, or at
        the whole hour between one that holds the earlier and one that holds the later.
        """
        client, app = self.client, self.app

        async def ask(start: int, end: int) -> Window:
            return Window(start, end, frozenset(await client.per_day(app, MESSAGES, start, end)))

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

    async def endpoints(self, messages_total: int) -> dict[Kind, asyncio.Future[dict[date, int]]]:
        """One line per endpoint: the all-time totals, and yesterday's and today's counts.

        Each kind's days are read from the first of the week before today to today: the
        comparison of the totals sums the same answers. Returns them.
        """
        client, app, today = self.client, self.app, self.today
        first = today - timedelta(days=RECENT_DAYS)

        def read(kind: Kind) -> asyncio.Future[dict[date, int]]:
            return asyncio.ensure_future(client.days(app, kind, first, today, self.zone))

        # Messages first: the longest page the client has seen of an app tells it which
        # answers a page cap may have cut, and the busiest kind shows it. Read at once, the
        # quieter kinds' shorter pages could all be split, and cost the budget twice.
        reads = {MESSAGES: read(MESSAGES)}
        await asyncio.wait(reads.values())
        reads |= {code: read(code) for code in app.dialog_types}

        async def recent(kind: Kind) -> str:
            counts = await reads[kind]
            return f"{counts.get(today - ONE_DAY, 0)} yesterday, {counts.get(today, 0)} today"

        async def totals() -> str:
            window = all_time_window(today, self.zone)
            counts = await gather_all(client.total(app, code, *window) for code in app.dialog_types)
            named = [
                f"{app.type_name(c)} {n}" for c, n in zip(app.dialog_types, counts, strict=True)
            ]
            return f"{', '.join(named)} all time"

        async def per_type() -> str:
            lines = await gather_all(recent(code) for code in app.dialog_types)
            return "; ".join(
                f"{app.type_name(c)} {line}"
                for c, line in zip(app.dialog_types, lines, strict=True)
            )

        self.report.add(
            "ok", f"{_label(MESSAGES, per_day=False)} answered: {messages_total} all time"
        )
        questions = {
            _label(MESSAGES, per_day=True): recent(MESSAGES),
            _label(1, per_day=False): totals(),
            _label(1, per_day=True): per_type(),
        }
        answers = await asyncio.gather(*questions.values(), return_exceptions=True)
        for label, answer in zip(questions, answers, strict=True):
            if isinstance(answer, str):
                self.report.add("ok", f"{label} answered: {answer}")
            else:
                self.report.add(*failure(answer))
        return reads

    async def consistency(self, reads: dict[Kind, asyncio.Future[dict[date, int]]]) -> None:
        """Over the week before today, each all-time total grew by the sum of its days.

        The totals at the end of the day before the week and at the end of its last day,
        and the days, are each exact whatever the API's bounds and page cap.
        """
        app, zone = self.app, self.zone
        first, last = self.today - timedelta(days=RECENT_DAYS), self.today - ONE_DAY

        async def compare(kind: Kind) -> tuple[int, int]:
            ends = (first - ONE_DAY, last)
            before, after = await gather_all(
                self.client.total_at_end_of(app, kind, day, zone) for day in ends
            )
            counts = await reads[kind]
            return after - before, sum(n for day, n in counts.items() if day <= last)

        try:
            results = dict(zip(reads, await gather_all(map(compare, reads)), strict=True))
        except Exception as exc:
            self.report.add(*failure(exc, "could not compare totals with per-day sums"))
            return
        names = {
            kind: "messages" if kind == MESSAGES else app.type_name(int(kind)) for kind in reads
        }
        period = f"{first} to {last} in {zone.key}"
        wrong = {
            kind: (grown, summed) for kind, (grown, summed) in results.items() if grown != summed
        }
        for kind, (grown, summed) in wrong.items():
            self.report.add(
                "FAIL",
                f"{names[kind]}: the total of {_label(kind, per_day=False)} grew by {grown} "
                f"over the last {RECENT_DAYS} days ({period}) but {_label(kind, per_day=True)} "
                f"sums to {summed} for them: the daily and all-time figures will not add up",
            )
        if not wrong:
            figures = ", ".join(f"{names[kind]} {grown}" for kind, (grown, _) in results.items())
            self.report.add(
                "ok",
                f"totals agree with per-day sums over the last {RECENT_DAYS} days ({period}: "
                f"{figures})",
            )


# --------------------------------------------------------------------------- the zone


@dataclass(frozen=True)
class Window:
    """The API's dates of the messages sent from ``start`` to ``end``, its last second.

    ``end`` is sent as ``end_date``: an inclusive end stays inside the window, an exclusive
    one loses a second. Either way every message counted was sent in ``[start, end]``. An
    hour holds at most two dates in any zone, so a page cap of two or more shows them all;
    a cap of one shows one of them, which makes the flip less precise, never wrong.
    """

    start: int
    end: int
    days: frozenset[date]


def allowed(window: Window, zone: ZoneInfo) -> bool:
    """Whether ``zone``'s calendar could date the window's messages as the API did."""
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
        return list(range(-(-low // QUARTER) * QUARTER, high + 1, QUARTER))

    def offset(self, moment: int) -> int:
        """The UTC offset of a zone whose ``day`` begins at ``moment``."""
        return _utc_midnight(self.day) - moment


def flip(windows: Sequence[Window], day: date) -> Flip | None:
    """Bounds on the start of the API's ``day``: after a message it dates earlier, at or
    before every message it dates ``day`` or later."""
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


def zone_finding(windows: Sequence[Window], zone: ZoneInfo, now: float) -> tuple[Level, str]:
    """The verdict on the windows asked: the hours, and the quarter hours among them."""
    setting = env_name("timezone")
    hours = [window for window in windows if window.end + 1 - window.start == HOUR]
    activity = f"{sum(bool(w.days) for w in hours)} of the last {len(hours)} hours had messages"
    crowded = [window for window in windows if len(window.days) > 2]
    if crowded:
        # More dates than any zone has in an hour: no flip can be read from the answers.
        first = crowded[0]
        return "FAIL", (
            f"{_label(MESSAGES, per_day=True)} answered {len(first.days)} dates for "
            f"{_span(first)}: the API seems to ignore start_date and end_date"
        )
    wrong = [window for window in windows if not allowed(window, zone)]
    found = best_flip(windows)
    if wrong:
        return "FAIL", _zone_mismatch(wrong[0], found, zone, setting)
    here = f"{setting} ({zone.key}, {_offset_text(_zone_offset(zone, now))})"
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


def _zone_mismatch(wrong: Window, found: Flip | None, zone: ZoneInfo, setting: str) -> str:
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
    offset = datetime.fromtimestamp(moment, zone).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def _offset_text(offset: int) -> str:
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset) // 60, 60)
    return f"UTC{sign}{hours:02d}:{minutes:02d}"


def _utc(moment: int) -> str:
    return f"{datetime.fromtimestamp(moment, UTC):%H:%M}"


def _span(window: Window) -> str:
    return (
        f"{datetime.fromtimestamp(window.start, UTC):%Y-%m-%d %H:%M} to {_utc(window.end + 1)} UTC"
    )


def _when(found: Flip) -> str:
    if len(found.candidates) == 1:
        return f"at {_utc(found.candidates[0])} UTC"
    return f"between {_utc(found.after)} and {_utc(found.upto + 1)} UTC"


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
    """Check the apps side by side; print each app's lines together, in config order.

    As many apps at once as fill the requests in flight: each app's time starts when its
    check does, so that a long list of apps does not spend the time of the last ones.
    """
    limits = limits_from(settings)
    apps_at_once = asyncio.Semaphore(max(1, limits.max_concurrent_requests // APP_CONCURRENCY))
    reports: list[Report] = []

    async def check(client: CheckClient, app: AppConfig) -> Report:
        async with apps_at_once:
            return await AppCheck(client, settings, app).run()

    async with open_http(limits) as http, asyncio.TaskGroup() as group:
        client = CheckClient(http, limits)
        checks = [group.create_task(check(client, app)) for app in apps]
        for check in checks:
            report = await check
            for line in report.lines():
                print(line, flush=True)
            reports.append(report)
    return reports


def _fail(code: int, message: str) -> int:
    return fail(COMMAND, code, message)


def main(argv: list[str]) -> int:
    """Run ``check`` with ``argv`` (the arguments after the word ``check``)."""
    with stop_signals_interrupt():
        return _main(argv)


def _main(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
        try:
            settings = settings_from(args)
            apps = load_apps(settings)
        except ConfigError as exc:
            return _fail(2, f"configuration error: {exc}")
        reports = asyncio.run(cancelled_by_stop_signals(check_all(settings, apps)))
        print(summary(reports), flush=True)
        return 1 if any(report.problems for report in reports) else 0
    except Interrupted as stop:
        return _fail(128 + stop.signum, f"stopped by {stop}")
