"""``connectycube-exporter backfill``: past days as an OpenMetrics file for Prometheus.

For each day of a range, the samples the daemon would have served at the last second of
that day: the day's final count (``_today``), the previous day's (``_yesterday``) and the
all-time total as it stood then, for ``promtool tsdb create-blocks-from openmetrics``.
Nothing is written until every answer is in and checked, and then whole or not at all.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from itertools import groupby
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from exporter import api, options, remote_write
from exporter.client import APIError, StatsClient, limits_from, open_http
from exporter.collector import COUNTS, Family
from exporter.config import (
    MAX_KEY_FILE_BYTES,
    AppConfig,
    ConfigError,
    Settings,
    env_name,
    load_apps,
)
from exporter.exposition import header, series
from exporter.settingsfile import FileProblem, read_small_text

COMMAND = f"{options.PROG} backfill"
EARLIEST_SINCE = date(1970, 1, 3)  # the day before --since is fetched too, and after the epoch
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # an HTTP token
OWN_LABELS = frozenset({"app", "dialog_type"})
STDOUT = "-"


class BackfillError(Exception):
    """The API failed or contradicted itself; the message is one line for the user."""


def parse_day(text: str) -> date:
    """A ``YYYY-MM-DD`` day, strictly (no ``20240101``, no week dates)."""
    day = api.parse_day(text)
    if day is None:
        form = "a valid" if api.DAY_PATTERN.fullmatch(text) else "a YYYY-MM-DD"
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not {form} date")
    return day


def parse_label(text: str) -> tuple[str, str]:
    """``NAME=VALUE``: a target label as Prometheus would attach it at scrape time."""
    name, equals, value = text.partition("=")
    checks = [
        (not equals, f"{text[:60]!r} is not NAME=VALUE"),
        (not LABEL_NAME.match(name), f"{name[:60]!r} is not a valid Prometheus label name"),
        (name.startswith("__"), f"label names starting with __ are reserved: {name!r}"),
        (name in OWN_LABELS, f"label {name!r} is set by the exporter itself"),
        # Prometheus treats an empty label as no label: the user meant something else.
        (not value, f"label {name!r} has an empty value"),
    ]
    problems = [message for failed, message in checks if failed]
    if problems:
        raise argparse.ArgumentTypeError(problems[0])
    return name, value


def parse_concurrency(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError("must be between 1 and 64")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = options.ArgumentParser(
        prog=COMMAND,
        description="Write past daily statistics as an OpenMetrics file for 'promtool tsdb "
        "create-blocks-from openmetrics FILE DATA_DIR': for each day, the series the exporter "
        f"serves, stamped at the last second of that day in {env_name('timezone')}. Uses the "
        "same settings and config file as the daemon.",
        epilog="Exit codes: 0 written, 1 the API failed or disagreed with itself, 2 bad input "
        "or configuration, 128+N stopped by signal N; only a successful run leaves FILE.",
    )
    group = parser.add_argument_group("backfill")
    day = "YYYY-MM-DD"
    group.add_argument("--since", type=parse_day, required=True, metavar=day, help="first day")
    group.add_argument(
        "--until",
        type=parse_day,
        metavar=day,
        help="last day, included (default: yesterday; today is not over yet)",
    )
    where = group.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="OpenMetrics file to write ('-' for stdout); replaced only when complete",
    )
    where.add_argument(
        "--remote-write-url",
        metavar="URL",
        help="send the history to this Prometheus remote-write endpoint instead (Prometheus "
        "with --web.enable-remote-write-receiver and an out_of_order_time_window covering "
        "the days, Mimir, Thanos Receive, VictoriaMetrics, Grafana Cloud)",
    )
    group.add_argument(
        "--label",
        type=parse_label,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="label added to every series, repeatable: give the job and instance labels "
        "Prometheus attaches when it scrapes the exporter, or the series will not join",
    )
    only = "backfill only this app of the config file, repeatable (default: all apps)"
    group.add_argument("--only-app", action="append", default=[], metavar="NAME", help=only)
    group.add_argument(
        "--concurrency",
        type=parse_concurrency,
        default=4,  # the API is rate limited, and a backfill is not urgent
        metavar="N",
        help="API requests at once (default: %(default)s; also capped by "
        f"{env_name('max_concurrent_requests')})",
    )
    group.add_argument(
        "--strict",
        action="store_true",
        help="fail, writing nothing, when the per-day counts and the totals disagree "
        "(default: warn and write)",
    )
    add_remote_write_arguments(parser.add_argument_group("remote write (with --remote-write-url)"))
    options.add_settings_arguments(parser.add_argument_group("settings (as for the daemon)"))
    return parser


def parse_header(text: str) -> tuple[str, str]:
    """``NAME=VALUE``: an extra HTTP header for the remote-write endpoint."""
    name, equals, value = text.partition("=")
    if not equals or not HEADER_NAME.match(name):
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not NAME=VALUE with a header name")
    if name.lower() in {key.lower() for key in remote_write.PROTOCOL_HEADERS}:
        raise argparse.ArgumentTypeError(f"header {name} is set by the remote-write protocol")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise argparse.ArgumentTypeError(f"header {name}: control characters in its value")
    return name, value


def add_remote_write_arguments(group: argparse._ActionsContainer) -> None:
    group.add_argument("--remote-write-username", metavar="NAME", help="basic auth user name")
    group.add_argument(
        "--remote-write-password-file", metavar="FILE", help="basic auth password, from a file"
    )
    group.add_argument(
        "--remote-write-bearer-token-file", metavar="FILE", help="bearer token, from a file"
    )
    group.add_argument(
        "--remote-write-ca-file", metavar="FILE", help="CA certificates to verify the endpoint"
    )
    group.add_argument("--remote-write-cert-file", metavar="FILE", help="client certificate")
    group.add_argument("--remote-write-key-file", metavar="FILE", help="client certificate key")
    group.add_argument(
        "--remote-write-header",
        type=parse_header,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra HTTP header, repeatable (for example X-Scope-OrgID=TENANT)",
    )


def read_secret(path: str, flag: str) -> str:
    """A password or token file, read as key files are (small, regular, UTF-8), without
    the whitespace around it."""
    try:
        text = read_small_text(Path(path), MAX_KEY_FILE_BYTES).strip()
    except FileProblem as exc:
        raise ValueError(f"{flag} {path}: {exc}") from None
    if not text:
        raise ValueError(f"{flag} {path}: the file is empty")
    return text


def make_endpoint(args: argparse.Namespace) -> remote_write.Endpoint | None:
    """The remote-write endpoint the arguments describe, credentials read; None without
    --remote-write-url. Raises ValueError for what does not fit together."""
    given = [name for name, value in vars(args).items() if name.startswith("remote_write_")]
    given = [name for name in given if getattr(args, name) and name != "remote_write_url"]
    if args.remote_write_url is None:
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise ValueError(f"argument {flag}: needs --remote-write-url")
        return None
    url = urlsplit(args.remote_write_url)
    checks = [
        (url.scheme not in ("http", "https") or not url.hostname, "is not an http(s) URL"),
        (
            args.remote_write_username is None and bool(args.remote_write_password_file),
            "--remote-write-password-file needs --remote-write-username",
        ),
        (
            args.remote_write_username is not None and not args.remote_write_password_file,
            "--remote-write-username needs --remote-write-password-file",
        ),
        (
            bool(args.remote_write_username and args.remote_write_bearer_token_file),
            "give basic auth or a bearer token, not both",
        ),
        (
            bool(args.remote_write_key_file) != bool(args.remote_write_cert_file),
            "--remote-write-cert-file and --remote-write-key-file go together",
        ),
    ]
    problems = [message for failed, message in checks if failed]
    if problems:
        raise ValueError(f"argument --remote-write-url: {problems[0]}")
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(args, f"remote_write_{name}")
        if path and not os.access(path, os.R_OK):
            raise ValueError(f"--remote-write-{name.replace('_', '-')} {path}: cannot read")
    password, token = args.remote_write_password_file, args.remote_write_bearer_token_file
    return remote_write.Endpoint(
        url=args.remote_write_url,
        headers=tuple(args.remote_write_header),
        username=args.remote_write_username,
        password=password and read_secret(password, "--remote-write-password-file"),
        bearer_token=token and read_secret(token, "--remote-write-bearer-token-file"),
        ca_file=args.remote_write_ca_file,
        cert_file=args.remote_write_cert_file,
        key_file=args.remote_write_key_file,
    )


@dataclass(frozen=True)
class Plan:
    """What to backfill, checked."""

    first: date
    last: date
    output: str | None  # None: --remote-write-url
    labels: tuple[tuple[str, str], ...]
    concurrency: int
    strict: bool = False

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]


def make_plan(args: argparse.Namespace, today: date) -> Plan:
    """Check the range and the labels against each other and the calendar."""
    since: date = args.since
    until: date = args.until or today - api.ONE_DAY
    names = [name for name, _ in args.label]
    repeated = ", ".join(sorted({name for name in names if names.count(name) > 1}))
    checks = [
        (since > today, f"--since: {since} is in the future (today is {today})"),
        (until > today, f"--until: {until} is in the future (today is {today})"),
        (until == today, f"--until: today ({today}) is not over yet; use yesterday"),
        (since == today, f"--since: today ({today}) is not over yet"),
        (since > until, f"--since: {since} is after --until {until}"),
        (since < EARLIEST_SINCE, f"--since: {since} is too early (first day {EARLIEST_SINCE})"),
        (bool(repeated), f"--label: repeated label {repeated}"),
    ]
    problems = [message for failed, message in checks if failed]
    if problems:
        raise ValueError(f"argument {problems[0]}")
    return Plan(since, until, args.output, tuple(args.label), args.concurrency, args.strict)


def select_apps(apps: tuple[AppConfig, ...], only: Sequence[str]) -> tuple[AppConfig, ...]:
    known = {app.name for app in apps}
    unknown = [name for name in only if name not in known]
    if unknown:
        configured = ", ".join(sorted(known))
        raise ConfigError(f"--only-app: unknown app {unknown[0]!r}; configured: {configured}")
    return tuple(app for app in apps if not only or app.name in only)


class Output:
    """The output file, replaced whole or not at all: checked at start, before minutes of
    paging, and at the end written to ``.FILE.partial-PID`` next to FILE and renamed over
    it (only a SIGKILL in that moment leaves the temporary file)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.path: Path | None = None
        if target == STDOUT:
            return
        try:
            mode = os.stat(target).st_mode
        except FileNotFoundError:
            mode = stat.S_IFREG
        except OSError as exc:
            raise OSError(f"--output {target}: {exc.strerror or exc}") from None
        if stat.S_ISDIR(mode):
            raise OSError(f"--output {target}: is a directory")
        if not stat.S_ISREG(mode):
            kind = "not a regular file (a device, FIFO or socket)"
            raise OSError(f"--output {target}: {kind}; use --output - to write to stdout")
        # A symlink is followed, for renaming over /dev/stdout would replace the link.
        self.path = Path(os.path.realpath(target))
        self.temp = self.path.parent / f".{self.path.name}.partial-{os.getpid()}"
        # Creating the very file the run will write is the only reliable check (root
        # ignores permission bits, file systems may be read-only).
        self.commit("", rename=False)

    def commit(self, text: str, rename: bool = True) -> None:
        """Write ``text`` to stdout, or to the temporary file and rename it over FILE."""
        if self.path is None:
            sys.stdout.buffer.write(text.encode())
            sys.stdout.buffer.flush()
            return
        try:
            self.temp.unlink(missing_ok=True)  # then "x" (O_EXCL): never through a link left there
            with self.temp.open("xb") as file:
                file.write(text.encode())
                file.flush()
                os.fsync(file.fileno())
            if rename:
                os.replace(self.temp, self.path)
        except OSError as exc:
            raise OSError(f"--output {self.target}: cannot write: {exc.strerror or exc}") from None
        finally:
            self.discard()

    def discard(self) -> None:
        if self.path is not None:
            self.temp.unlink(missing_ok=True)


class Progress:
    """A one-line ``\\r`` progress bar of the days fetched per app, on a terminal only."""

    WIDTH = 16

    def __init__(self, apps: dict[str, int], days: int, stream: IO[str] | None = None) -> None:
        """``apps``: name -> kinds fetched for it; ``days``: days wanted for each kind."""
        self._stream = stream or sys.stderr
        self._kinds = apps
        self._days = days
        self._done = dict.fromkeys(apps, 0)  # days fetched, all kinds together
        self._drawn = 0  # length of the line on screen

    def advance(self, app: str, days: int) -> None:
        self._done[app] += days
        self.draw()

    def line(self) -> str:
        parts = []
        for app, kinds in self._kinds.items():
            bar = "#" * (self._done[app] * self.WIDTH // (kinds * self._days))
            days = f"{self._done[app] // kinds}/{self._days} days"
            parts.append(f"{app} [{bar.ljust(self.WIDTH, '.')}] {days}")
        return "backfill: " + "  ".join(parts)

    def draw(self) -> None:
        if self._stream.isatty():
            text = self.line()[: shutil.get_terminal_size().columns - 1]
            self._stream.write("\r" + text.ljust(self._drawn))
            self._stream.flush()
            self._drawn = len(text)

    def clear(self) -> None:
        if self._drawn:
            self._stream.write("\r" + " " * self._drawn + "\r")
            self._stream.flush()
            self._drawn = 0


@dataclass
class AppHistory:
    """What the API said about one app: per-day counts and the totals they imply."""

    app: AppConfig
    counts: dict[api.Kind, dict[date, int]] = field(default_factory=dict)  # quiet days absent
    totals: dict[api.Kind, dict[date, int]] = field(default_factory=dict)  # at each day's end


@dataclass
class Fetcher:
    """Fetches a plan's days for every app, and derives the total at the end of each day
    from the API's at the end of the last, checking it against the API's on the way."""

    client: StatsClient
    zone: ZoneInfo
    plan: Plan
    progress: Progress
    warnings: list[str] = field(default_factory=list)
    histories: list[AppHistory] = field(default_factory=list)

    async def fetch_all(self, apps: Iterable[AppConfig]) -> list[AppHistory]:
        self.histories = [AppHistory(app) for app in apps]
        self.progress.draw()
        try:
            async with asyncio.TaskGroup() as group:
                for history in self.histories:
                    for kind in (api.MESSAGES, *history.app.dialog_types):
                        group.create_task(self._fetch(history, kind))
        except ExceptionGroup as errors:  # the first failure cancelled the rest
            raise errors.exceptions[0] from None
        finally:
            self.progress.clear()
        return self.histories

    async def _fetch(self, history: AppHistory, kind: api.Kind) -> None:
        """Fill in ``history``'s per-day counts of ``kind`` and totals at the end of each day."""
        app, plan = history.app, self.plan

        def done(first: date, last: date) -> None:  # days of the plan only, not the one before
            self.progress.advance(app.name, max(0, (last - max(first, plan.first)).days + 1))

        middle = plan.first + (plan.last - plan.first) // 2
        try:
            async with asyncio.TaskGroup() as group:
                # The day before the first is needed for the first day's _yesterday.
                windows = [
                    group.create_task(self.client.days(app, kind, *window, self.zone, done=done))
                    for window in _windows(plan.first - api.ONE_DAY, plan.last)
                ]
                known = {
                    day: group.create_task(self.client.total_at_end_of(app, kind, day, self.zone))
                    for day in sorted({plan.first, middle, plan.last})
                }
        except ExceptionGroup as errors:
            error = errors.exceptions[0]
            if isinstance(error, APIError):  # retried as far as the client does: final
                where = api.endpoint_label(error.endpoint)
                raise BackfillError(f"app {app.name}: {where}: {error.reason}") from None
            raise error from None
        proven = [window.result() for window in windows]
        counts = {day: n for days in proven for day, n in days.counts.items()}
        disputed = {day: n for days in proven for day, n in days.disputed.items()}
        totals: dict[date, int] = {}
        running = known[plan.last].result()
        for day in reversed(plan.days):
            totals[day] = running
            # Where the endpoints disagree, the total's own figure keeps the totals its own.
            running -= counts.get(day, 0) + disputed.get(day, 0)
        what = "messages" if kind == api.MESSAGES else f"dialogs {app.type_name(int(kind))}"
        problems = []
        if disputed:
            worst = max(disputed.values(), key=abs)
            spent = sum(days.requests for days in proven)
            problems.append(
                f"app {app.name}: {what}: the per-day and total endpoints disagree on "
                f"{len(disputed)} day(s) even asked alone, first {min(disputed)}, by up to "
                f"{worst:+d} (total minus per-day; {spent} requests spent proving the days): "
                "the per-day counts are written, the all-time totals follow the total endpoint"
            )
        for day, task in known.items():
            total = task.result()
            if total != totals[day]:
                problems.append(
                    f"app {app.name}: {what}: the API's total at the end of {day} is {total}, "
                    f"but its total at the end of {plan.last} minus the per-day counts in "
                    f"between is {totals[day]} (off by {totals[day] - total:+d}); the per-day "
                    f"and total endpoints disagree: is {env_name('timezone')} the zone in "
                    "which the API cuts its days? ('connectycube-exporter check' tells)"
                )
        if problems and plan.strict:
            raise BackfillError(problems[0])
        self.warnings += problems
        history.counts[kind], history.totals[kind] = counts, totals


def _windows(first: date, last: date) -> list[tuple[date, date]]:
    """``first`` to ``last`` in windows of ``api.WINDOW_DAYS`` days (first, last included)."""
    starts = [first + timedelta(i) for i in range(0, (last - first).days + 1, api.WINDOW_DAYS)]
    return [(start, min(start + timedelta(api.WINDOW_DAYS - 1), last)) for start in starts]


@dataclass(frozen=True)
class HistorySeries:
    """One series of the history: a family, its label values, a value for each day."""

    family: Family
    names: tuple[str, ...]  # the values of ``family.labels``
    values: tuple[int, ...]


def history_series(histories: Sequence[AppHistory], days: Sequence[date]) -> list[HistorySeries]:
    """The daemon's own count families, so that live and backfilled series join; each
    family's series together, a quiet day an explicit 0. What the file and remote write
    both send."""
    found = []
    for count in COUNTS:
        typed = "dialog_type" in count.family.labels
        for history in histories:
            app = history.app
            for kind in app.dialog_types if typed else (api.MESSAGES,):
                if count.days_ago is None:
                    values = tuple(history.totals[kind][day] for day in days)
                else:
                    ago = timedelta(count.days_ago)
                    values = tuple(history.counts[kind].get(day - ago, 0) for day in days)
                names = (app.name, app.type_name(int(kind))) if typed else (app.name,)
                found.append(HistorySeries(count.family, names, values))
    return found


def day_stamps(days: Sequence[date], zone: ZoneInfo) -> list[int]:
    """Unix time of the last second of each day in ``zone``."""
    return [api.day_bounds(day, zone)[1] - 1 for day in days]


def render(
    histories: Sequence[AppHistory],
    days: Sequence[date],
    zone: ZoneInfo,
    labels: Sequence[tuple[str, str]] = (),
) -> tuple[str, int]:
    """The OpenMetrics text and its number of samples: each family contiguous, each series
    in time order (as promtool needs)."""
    stamps = day_stamps(days, zone)
    lines: list[str] = []
    samples = 0
    for family, group in groupby(history_series(histories, days), key=lambda s: s.family):
        lines.append(header(family, openmetrics=True).decode().rstrip("\n"))
        for one in group:
            prefix = series(family, one.names, labels)
            lines += [f"{prefix} {v} {t}" for v, t in zip(one.values, stamps, strict=True)]
            samples += len(stamps)
    return "\n".join([*lines, "# EOF\n"]), samples


def send_history(
    endpoint: remote_write.Endpoint,
    histories: Sequence[AppHistory],
    days: Sequence[date],
    zone: ZoneInfo,
    labels: Sequence[tuple[str, str]] = (),
) -> int:
    """Send the history to ``endpoint``, the earliest days first; the number of samples.
    Raises ``options.Failure`` saying how many days are in when a batch is refused."""
    found = history_series(histories, days)
    to_send = [
        (
            (
                ("__name__", one.family.name),
                *zip(one.family.labels, one.names, strict=True),
                *labels,
            ),
            one.values,
        )
        for one in found
    ]
    done = 0

    def sent(batch: remote_write.Batch) -> None:
        nonlocal done
        done = batch.moments_done

    def failure(code: int, what: str) -> options.Failure:
        return options.Failure(
            code, f"{what}; {done} of {len(days)} days written to {endpoint.shown}"
        )

    try:
        remote_write.send(endpoint, remote_write.batches(to_send, day_stamps(days, zone)), sent)
    except remote_write.RemoteWriteError as exc:
        raise failure(1, f"failed: remote write: {exc}") from None
    except options.Interrupted as stop:
        [signum] = stop.args
        raise failure(128 + signum, f"stopped by {signum.name}") from None
    return len(found) * len(days)


def main(argv: list[str]) -> int:
    """Run ``backfill`` with ``argv`` (the arguments after the word ``backfill``)."""
    return options.one_shot(build_parser(), argv, _run, "; nothing written")


def _run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    settings = options.settings_from(args)
    apps = select_apps(load_apps(settings), args.only_app)
    try:
        plan = make_plan(args, api.local_day(time.time(), settings.zone))
        endpoint = make_endpoint(args)
        output = None if endpoint else Output(plan.output or STDOUT)
    except (ValueError, OSError) as exc:
        raise options.Failure(2, f"error: {exc}") from None
    try:
        fetcher = options.run_until_stopped(_fetch_histories(settings, apps, plan))
        for warning in fetcher.warnings:
            print(
                f"{COMMAND}: warning: {warning}; writing anyway (--strict fails)", file=sys.stderr
            )
        histories, zone = fetcher.histories, settings.zone
        if output is not None:
            text, samples = render(histories, plan.days, zone, plan.labels)
            output.commit(text)
            where = str(output.path or "stdout")
        else:
            assert endpoint is not None
            samples = send_history(endpoint, histories, plan.days, zone, plan.labels)
            where = endpoint.shown
    except options.Failure:
        raise
    except OSError as exc:
        raise options.Failure(1, f"failed: {exc}") from None
    except Exception as exc:  # else a bug or an answer nobody foresaw: one line, no traceback
        reason = exc if isinstance(exc, BackfillError) else f"unexpected {type(exc).__name__}"
        raise options.Failure(1, f"failed, nothing written: {reason}") from None
    print(
        f"{COMMAND}: wrote {where}: {len(plan.days)} days ({plan.first} to "
        f"{plan.last}, {settings.zone.key}), {samples} samples, {len(apps)} app(s), "
        f"{fetcher.client.requests} API requests, in {time.monotonic() - started:.1f}s",
        file=sys.stderr,
    )
    if not {"job", "instance"} & {name for name, _ in plan.labels}:
        print(
            f"{COMMAND}: note: no --label job=... or instance=...: these series will not "
            "join the ones Prometheus scrapes from the exporter",
            file=sys.stderr,
        )
    return 0


async def _fetch_histories(settings: Settings, apps: tuple[AppConfig, ...], plan: Plan) -> Fetcher:
    """The apps' histories, at most ``--concurrency`` requests at once."""
    concurrency = min(plan.concurrency, settings.max_concurrent_requests)
    limits = replace(limits_from(settings), max_concurrent_requests=concurrency)
    progress = Progress({app.name: 1 + len(app.dialog_types) for app in apps}, len(plan.days))
    async with open_http(limits) as http:
        fetcher = Fetcher(StatsClient(http, limits), settings.zone, plan, progress)
        # No deadline: a backfill may wait out a Retry-After the daemon would skip.
        await fetcher.fetch_all(apps)
        return fetcher
