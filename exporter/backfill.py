"""``connectycube-exporter backfill``: past days as an OpenMetrics file for Prometheus.

The daemon only knows the present; the API knows every past day. This pages through the
per-day endpoints for a range of past days and writes, for each day, the samples the
daemon would have served at the last second of that day: the day's final count
(``_today``), the previous day's (``_yesterday``) and the all-time total as it stood
then. ``promtool tsdb create-blocks-from openmetrics`` turns the file into blocks.

Nothing is written until every answer is in and the totals are checked, and then
through a temporary file renamed into place: an interrupted or failed run leaves no
file that looks whole.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import IO
from zoneinfo import ZoneInfo

from exporter.api import (
    DAY_PATTERN,
    MESSAGES,
    ONE_DAY,
    PAGE_DAYS,
    Kind,
    day_bounds,
    endpoint_label,
    local_day,
)
from exporter.api import parse_day as parse_api_day
from exporter.client import APIError, StatsClient, limits_from, open_http
from exporter.collector import COUNTS
from exporter.config import AppConfig, ConfigError, Settings, env_name, load_apps
from exporter.exposition import header, series
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

COMMAND = f"{PROG} backfill"
WINDOW_DAYS = PAGE_DAYS - 2
"""Days per request: a full window and the day either side (see StatsClient.days) fit a
page."""
DEFAULT_CONCURRENCY = 4
"""Windows fetched at once: the API is rate limited, and a backfill is not urgent."""
EARLIEST_SINCE = date(1970, 1, 3)
"""The day before ``--since`` is fetched too, and must start after the Unix epoch."""
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
OWN_LABELS = frozenset({"app", "dialog_type"})
STDOUT = "-"


class BackfillError(Exception):
    """The API failed or contradicted itself; the message is one line for the user."""


# --------------------------------------------------------------------------- input


def parse_day(text: str) -> date:
    """A ``YYYY-MM-DD`` day, strictly (no ``20240101``, no week dates)."""
    if not DAY_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a YYYY-MM-DD date")
    day = parse_api_day(text)
    if day is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid date")
    return day


def parse_label(text: str) -> tuple[str, str]:
    """``NAME=VALUE``: a target label as Prometheus would attach it at scrape time."""
    name, equals, value = text.partition("=")
    if not equals:
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not NAME=VALUE")
    if not LABEL_NAME.match(name):
        raise argparse.ArgumentTypeError(f"{name[:60]!r} is not a valid Prometheus label name")
    if name.startswith("__"):
        raise argparse.ArgumentTypeError(f"label names starting with __ are reserved: {name!r}")
    if name in OWN_LABELS:
        raise argparse.ArgumentTypeError(f"label {name!r} is set by the exporter itself")
    if not value:
        # Prometheus treats an empty label as no label: the user meant something else.
        raise argparse.ArgumentTypeError(f"label {name!r} has an empty value")
    return name, value


def _concurrency(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError("must be between 1 and 64")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=COMMAND,
        description=(
            "Write past daily statistics as an OpenMetrics file for "
            "'promtool tsdb create-blocks-from openmetrics FILE DATA_DIR': for each day, "
            "the series the exporter serves, stamped at the last second of that day in "
            f"{env_name('timezone')}. Uses the same settings and config file as the daemon."
        ),
        epilog=(
            "Exit codes: 0 written, 1 the API failed or disagreed with itself, 2 bad input "
            "or configuration, 128+N stopped by signal N; only a successful run leaves FILE."
        ),
    )
    backfill = parser.add_argument_group("backfill")
    backfill.add_argument(
        "--since", type=parse_day, required=True, metavar="YYYY-MM-DD", help="first day"
    )
    backfill.add_argument(
        "--until",
        type=parse_day,
        metavar="YYYY-MM-DD",
        help="last day, included (default: yesterday; today is not over yet)",
    )
    backfill.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="FILE",
        help="OpenMetrics file to write ('-' for stdout); replaced only when complete",
    )
    backfill.add_argument(
        "--label",
        type=parse_label,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="label added to every series, repeatable: give the job and instance labels "
        "Prometheus attaches when it scrapes the exporter, or the series will not join",
    )
    backfill.add_argument(
        "--only-app",
        action="append",
        default=[],
        metavar="NAME",
        help="backfill only this app of the config file, repeatable (default: all apps)",
    )
    backfill.add_argument(
        "--concurrency",
        type=_concurrency,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help="API requests at once (default: %(default)s; also capped by "
        f"{env_name('max_concurrent_requests')})",
    )
    backfill.add_argument(
        "--strict",
        action="store_true",
        help="fail, writing nothing, when the per-day counts and the totals disagree "
        "(default: warn and write)",
    )
    add_settings_arguments(parser.add_argument_group("settings (as for the daemon)"))
    return parser


@dataclass(frozen=True)
class Plan:
    """What to backfill, checked."""

    first: date
    last: date
    output: str
    labels: tuple[tuple[str, str], ...]
    concurrency: int
    strict: bool = False

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]


def make_plan(args: argparse.Namespace, today: date) -> Plan:
    """Check the range and the labels against each other and the calendar."""
    since: date = args.since
    until: date = args.until or today - timedelta(days=1)
    if since > today:
        raise ValueError(f"argument --since: {since} is in the future (today is {today})")
    if args.until and until > today:
        raise ValueError(f"argument --until: {until} is in the future (today is {today})")
    if until == today:
        raise ValueError(f"argument --until: today ({today}) is not over yet; use yesterday")
    if since == today:
        raise ValueError(f"argument --since: today ({today}) is not over yet")
    if since > until:
        raise ValueError(f"argument --since: {since} is after --until {until}")
    if since < EARLIEST_SINCE:
        raise ValueError(f"argument --since: {since} is too early (first day {EARLIEST_SINCE})")
    names = [name for name, _ in args.label]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"argument --label: repeated label {', '.join(repeated)}")
    return Plan(since, until, args.output, tuple(args.label), args.concurrency, args.strict)


def select_apps(apps: tuple[AppConfig, ...], only: Sequence[str]) -> tuple[AppConfig, ...]:
    if not only:
        return apps
    known = {app.name for app in apps}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ConfigError(
            f"--only-app: unknown app {unknown[0]!r}; configured: {', '.join(sorted(known))}"
        )
    return tuple(app for app in apps if app.name in only)


# --------------------------------------------------------------------------- output


class Output:
    """The output file, replaced whole or not at all.

    Checked at start (before minutes of paging are spent), written at the end to
    ``.FILE.partial-PID`` in the same folder and renamed over FILE. The temporary file
    only exists while it is being written; SIGKILL in that moment can leave it, under
    a name that says what it is, never FILE itself half written.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.path = None if target == STDOUT else _regular_file_path(target)
        if self.path is None:
            return
        self.temp = self.path.parent / f".{self.path.name}.partial-{os.getpid()}"
        # Creating the very file the run will write is the only reliable check (root
        # ignores permission bits, file systems may be read-only).
        self._open_temp().close()
        self.discard()

    def _open_temp(self) -> IO[bytes]:
        assert self.path is not None
        try:
            try:
                fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:  # left by a killed run whose PID we now have
                self.temp.unlink()
                fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as exc:
            raise OSError(f"--output {self.target}: cannot write: {exc.strerror or exc}") from None
        return os.fdopen(fd, "wb")

    def commit(self, text: str) -> None:
        data = text.encode()
        if self.path is None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        try:
            with self._open_temp() as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(self.temp, self.path)
        except OSError as exc:
            self.discard()
            raise OSError(f"--output {self.target}: cannot write: {exc.strerror or exc}") from None

    def discard(self) -> None:
        if self.path is not None:
            self.temp.unlink(missing_ok=True)


def _regular_file_path(target: str) -> Path:
    """Where to write ``target``: a regular file, or a new one; never a device or FIFO.

    A symlink is followed and its target replaced, never the link itself: renaming over
    ``/dev/stdout`` or a copy of ``/dev/null`` would put a regular file in its place.
    """
    path = Path(os.path.realpath(target))
    try:
        mode = os.stat(target).st_mode  # through the link, to what it names now
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise OSError(f"--output {target}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise OSError(f"--output {target}: is a directory")
    if not stat.S_ISREG(mode):
        raise OSError(
            f"--output {target}: not a regular file (a device, FIFO or socket); "
            "use --output - to write to stdout"
        )
    return path


# --------------------------------------------------------------------------- progress


class Progress:
    """A one-line ``\\r`` progress bar on a terminal: days fetched of days wanted, per app.

    Silent when the stream is not a terminal, so logs and CI output stay clean.
    """

    WIDTH = 16
    EVERY_SECONDS = 0.1

    def __init__(self, apps: dict[str, int], days: int, stream: IO[str] | None = None) -> None:
        """``apps``: name -> kinds fetched for it; ``days``: days wanted for each kind."""
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty()
        self._kinds = apps
        self._days = days
        self._done = dict.fromkeys(apps, 0)
        self._drawn = 0  # length of the line on screen
        self._last = 0.0

    def advance(self, app: str, days: int) -> None:
        self._done[app] += days
        now = time.monotonic()
        if now - self._last >= self.EVERY_SECONDS:
            self._last = now
            self.draw()

    def line(self) -> str:
        parts = []
        for app, kinds in self._kinds.items():
            wanted = kinds * self._days
            share = self._done[app] / wanted if wanted else 1.0
            filled = math.floor(share * self.WIDTH)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            parts.append(f"{app} [{bar}] {math.floor(share * self._days)}/{self._days} days")
        return "backfill: " + "  ".join(parts)

    def draw(self) -> None:
        if not self._enabled:
            return
        width = shutil.get_terminal_size().columns - 1
        text = self.line()[:width]
        self._stream.write("\r" + text.ljust(self._drawn))
        self._stream.flush()
        self._drawn = len(text)

    def clear(self) -> None:
        if self._enabled and self._drawn:
            self._stream.write("\r" + " " * self._drawn + "\r")
            self._stream.flush()
            self._drawn = 0


# --------------------------------------------------------------------------- fetching


def kind_name(app: AppConfig, kind: Kind) -> str:
    return "messages" if kind == MESSAGES else f"dialogs {app.type_name(int(kind))}"


@dataclass
class AppHistory:
    """What the API said about one app: per-day counts and the totals they imply."""

    app: AppConfig
    counts: dict[Kind, dict[date, int]] = field(default_factory=dict)  # quiet days absent
    totals: dict[Kind, dict[date, int]] = field(default_factory=dict)  # at the end of each day


class Fetcher:
    """Fetches a plan's days for every app, over the shared client.

    The client reads each window exactly (``StatsClient.days``); this combines the days
    into totals and checks them against the API's own.
    """

    def __init__(
        self,
        client: StatsClient,
        zone: ZoneInfo,
        plan: Plan,
        progress: Progress | None = None,
    ) -> None:
        self._client = client
        self._zone = zone
        self._plan = plan
        self._progress = progress
        self.warnings: list[str] = []
        self.histories: list[AppHistory] = []

    async def fetch_all(self, apps: Iterable[AppConfig]) -> list[AppHistory]:
        histories = [AppHistory(app) for app in apps]
        try:
            async with asyncio.TaskGroup() as group:
                for history in histories:
                    group.create_task(self._fetch_app(history))
        except ExceptionGroup as errors:
            # The first failure cancelled the rest: report it alone, in one line.
            raise _first(errors) from None
        self.histories = histories
        return histories

    async def _fetch_app(self, history: AppHistory) -> None:
        app = history.app
        # The day before the first is needed for the first day's _yesterday.
        first, last = self._plan.first - ONE_DAY, self._plan.last
        middle = self._plan.first + (self._plan.last - self._plan.first) // 2
        check_days = sorted({self._plan.first, middle} - {last})
        try:
            async with asyncio.TaskGroup() as group:
                for kind in (MESSAGES, *app.dialog_types):
                    windows = [
                        group.create_task(
                            self._client.days(
                                app, kind, start, end, self._zone, done=self._done(app)
                            )
                        )
                        for start, end in _windows(first, last, WINDOW_DAYS)
                    ]
                    end_total = group.create_task(self._total_at(app, kind, last))
                    checks = {
                        day: group.create_task(self._total_at(app, kind, day)) for day in check_days
                    }
                    group.create_task(self._combine(history, kind, windows, end_total, checks))
        except ExceptionGroup as errors:
            error = _first(errors)
            if isinstance(error, APIError):
                # Retries and Retry-After were the client's; what is left is final.
                raise BackfillError(
                    f"app {app.name}: {endpoint_label(error.endpoint)}: {error.reason}"
                ) from None
            raise error from None

    def _done(self, app: AppConfig) -> Callable[[date, date], None]:
        def advance(first: date, last: date) -> None:
            if self._progress is not None:
                # Days of the plan only: the extra day before it is not shown.
                self._progress.advance(
                    app.name, max(0, (last - max(first, self._plan.first)).days + 1)
                )

        return advance

    def _total_at(self, app: AppConfig, kind: Kind, day: date) -> Awaitable[int]:
        return self._client.total_at_end_of(app, kind, day, self._zone)

    async def _combine(
        self,
        history: AppHistory,
        kind: Kind,
        windows: list[asyncio.Task[dict[date, int]]],
        end_total: asyncio.Task[int],
        checks: dict[date, asyncio.Task[int]],
    ) -> None:
        """Derive the total at the end of each day and check it against the API's own."""
        counts: dict[date, int] = {}
        for window in windows:
            counts.update(await window)
        totals: dict[date, int] = {}
        running = await end_total
        for day in reversed(self._plan.days):
            totals[day] = running
            running -= counts.get(day, 0)
        for day, check in checks.items():
            expected = await check
            if expected != totals[day]:
                self._disagree(
                    f"app {history.app.name}: {kind_name(history.app, kind)}: the API's total "
                    f"at the end of {day} is {expected}, but its total at the end of "
                    f"{self._plan.last} minus the per-day counts in between is {totals[day]} "
                    f"(off by {totals[day] - expected:+d}); the per-day and total endpoints "
                    f"disagree: is {env_name('timezone')} the zone in which the API cuts its "
                    "days? ('connectycube-exporter check' tells)"
                )
        history.counts[kind] = counts
        history.totals[kind] = totals

    def _disagree(self, message: str) -> None:
        if self._plan.strict:
            raise BackfillError(message)
        self.warnings.append(message)


def _windows(first: date, last: date, size: int) -> list[tuple[date, date]]:
    """``first`` to ``last`` cut into windows of ``size`` days (first, last included)."""
    starts = [first + timedelta(days=i) for i in range(0, (last - first).days + 1, size)]
    return [(start, min(start + timedelta(days=size - 1), last)) for start in starts]


def _first(group: BaseExceptionGroup[Exception]) -> Exception:
    """The first real error of a task group (nested groups flattened)."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first(error)
        return error
    raise AssertionError("empty exception group")  # pragma: no cover


# --------------------------------------------------------------------------- rendering


def render(
    histories: Sequence[AppHistory],
    days: Sequence[date],
    zone: ZoneInfo,
    labels: Sequence[tuple[str, str]] = (),
) -> tuple[str, int]:
    """The OpenMetrics text and its number of samples.

    Each family is contiguous and each series' samples are in time order, as promtool
    needs; every day of every series has a sample, quiet days an explicit 0.
    """
    stamps = [day_bounds(day, zone)[1] - 1 for day in days]
    lines: list[str] = []
    samples = 0
    # The daemon's own count families, written by its own exposition: the same names,
    # help and labels, so that live and backfilled series join.
    for spec in COUNTS:
        family = spec.family
        lines.append(header(family, openmetrics=True).decode().rstrip("\n"))
        for history in histories:
            app = history.app
            typed = "dialog_type" in family.labels
            for kind in app.dialog_types if typed else (MESSAGES,):
                names = (app.name, app.type_name(int(kind))) if typed else (app.name,)
                prefix = series(family, names, labels) + " "
                counts = history.counts[kind]
                for day, stamp in zip(days, stamps, strict=True):
                    if spec.days_ago is None:
                        value = history.totals[kind][day]
                    else:
                        value = counts.get(day - timedelta(days=spec.days_ago), 0)
                    lines.append(f"{prefix}{value} {stamp}")
                    samples += 1
    lines.append("# EOF\n")
    return "\n".join(lines), samples


# --------------------------------------------------------------------------- command


async def _fetch(
    settings: Settings, apps: tuple[AppConfig, ...], plan: Plan, progress: Progress
) -> tuple[int, Fetcher]:
    limits = limits_from(settings)
    limits = replace(
        limits, max_concurrent_requests=min(plan.concurrency, limits.max_concurrent_requests)
    )
    async with open_http(limits) as http:
        client = StatsClient(http, limits)
        fetcher = Fetcher(client, settings.zone, plan, progress)
        # No deadline: a backfill may wait out a Retry-After the daemon would skip.
        await fetcher.fetch_all(apps)
        return client.requests, fetcher


def _fail(code: int, message: str) -> int:
    return fail(COMMAND, code, message)


def main(argv: list[str]) -> int:
    """Run ``backfill`` with ``argv`` (the arguments after the word ``backfill``)."""
    with stop_signals_interrupt():
        return _main(argv)


def _main(argv: list[str]) -> int:
    output: Output | None = None
    try:
        started = time.monotonic()
        args = build_parser().parse_args(argv)
        try:
            settings = settings_from(args)
            apps = select_apps(load_apps(settings), args.only_app)
        except ConfigError as exc:
            return _fail(2, f"configuration error: {exc}")
        zone = settings.zone
        try:
            plan = make_plan(args, local_day(time.time(), zone))
            output = Output(plan.output)
        except (ValueError, OSError) as exc:
            return _fail(2, f"error: {exc}")

        kinds = {app.name: 1 + len(app.dialog_types) for app in apps}
        progress = Progress(kinds, len(plan.days))
        try:
            progress.draw()
            requests, fetcher = asyncio.run(
                cancelled_by_stop_signals(_fetch(settings, apps, plan, progress))
            )
            progress.draw()
        finally:
            progress.clear()
        for warning in fetcher.warnings:
            print(
                f"{COMMAND}: warning: {warning}; writing anyway (--strict fails)", file=sys.stderr
            )
        text, samples = render(fetcher.histories, plan.days, zone, plan.labels)
        output.commit(text)
    except Interrupted as stop:
        return _fail(128 + stop.signum, f"stopped by {stop}; nothing written")
    except BackfillError as exc:
        return _fail(1, f"failed, nothing written: {exc}")
    except OSError as exc:
        return _fail(1, f"failed: {exc}")
    except Exception as exc:  # a bug or an answer nobody foresaw: one line, not a traceback
        return _fail(1, f"failed, nothing written: unexpected {type(exc).__name__}")
    finally:
        if output is not None:
            output.discard()  # a no-op once renamed into place

    where = "stdout" if output.path is None else str(output.path)
    print(
        f"{COMMAND}: wrote {where}: {len(plan.days)} days ({plan.first} to {plan.last}, "
        f"{zone.key}), {samples} samples, {len(apps)} app(s), {requests} API requests, "
        f"in {time.monotonic() - started:.1f}s",
        file=sys.stderr,
    )
    if not {"job", "instance"} & {name for name, _ in plan.labels}:
        print(
            f"{COMMAND}: note: no --label job=... or instance=...: these series will not "
            "join the ones Prometheus scrapes from the exporter",
            file=sys.stderr,
        )
    return 0
