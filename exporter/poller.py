"""Polls every app on a schedule and publishes what it learns as a new ``Snapshot``.

One APScheduler job per app, on the monotonic clock (``exporter.schedule``): a slow app
never delays another, nor is an app polled twice at once, and a step of the wall clock
moves no poll. A poll asks for every count at once (3 + 3 x dialog types requests, each
per-day answer with the total that proves it) and never raises: a failure is logged,
counted and leaves the last good values in place.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from exporter.api import MESSAGES, Kind, all_time_window, endpoint_label, endpoint_path, local_day
from exporter.client import APIError, APIStatusError, Days, StatsClient
from exporter.config import AppConfig, Settings
from exporter.snapshot import AppSnapshot, Reading, Snapshot, frozen_map

log = logging.getLogger(__name__)

AUTH_WARNING_EVERY_SECONDS = 300.0
Failure = tuple[str, BaseException]  # endpoint label, error


def refusal(error: APIStatusError) -> str:
    """What a 401 or 403 means for the user, with the API's own words."""
    if error.status == 403:
        return (
            f"API key recognised but access refused ({error.reason}): the Admin API needs "
            "the Advanced plan or higher"
        )
    return f"API key rejected ({error.reason}); check the key"


class Poller:
    """Owns the apps' jobs and the current snapshot, which only the event loop replaces."""

    def __init__(
        self, client: StatsClient, settings: Settings, scheduler: AsyncIOScheduler
    ) -> None:
        self._client = client
        self._zone = settings.zone
        self._interval = settings.poll_interval_seconds
        self._deadline = settings.poll_deadline
        self._scheduler = scheduler
        self._apps: dict[str, AppConfig] = {}
        self.snapshot = Snapshot()  # replaced whole, on the event loop only
        self._auth_warned_at: dict[str, float] = {}
        self._job_ids: dict[str, str] = {}
        self._polling: dict[str, asyncio.Task[Any]] = {}  # app name -> its poll under way
        self._ready = False

    @property
    def ready(self) -> bool:
        """Every app was polled once; stays true when a reload adds an app."""
        self._ready = self._ready or self.snapshot.ready
        return self._ready

    def configure(self, apps: Iterable[AppConfig]) -> bool:
        """Poll these apps from now on; False, at no cost, if they are the ones polled.

        Unchanged apps keep their schedule and values. A new or changed app (a rotated key,
        another URL) is polled at once, and nothing read under its old config is shown
        again; a removed one leaves ``/metrics``. A poll of a changed or removed app under
        way stops at once and gives back its request slots."""
        wanted = {app.name: app for app in apps}
        if wanted == self._apps:
            return False
        for name, app in self._apps.items():
            if wanted.get(name) != app:
                self._scheduler.remove_job(self._job_ids.pop(name))
                if running := self._polling.pop(name, None):
                    running.cancel()
            if name not in wanted:
                self._client.forget(name)
                self._auth_warned_at.pop(name, None)
        for name, app in wanted.items():
            if self._apps.get(name) != app:
                # A new job, with a new id: the old job's poll, cancelled but ending only on
                # its next turn of the loop, must not count against max_instances (one, by
                # default) and delay the first poll with the new key.
                self._job_ids[name] = self._scheduler.add_job(
                    self._run,
                    "interval",
                    args=[app],
                    seconds=self._interval,
                    name=f"poll app {name}",
                    next_run_time=datetime.now(UTC),
                    # A run that starts late is still worth running, once (coalesced, by default).
                    misfire_grace_time=max(1, int(self._interval)),
                ).id
        before, self._apps = self._apps, wanted
        shown = self.snapshot.apps
        apps = {
            name: shown[name] if before.get(name) == app else _restarted(app, shown.get(name))
            for name, app in wanted.items()
        }
        self.snapshot = Snapshot(frozen_map(apps))
        return True

    async def _run(self, app: AppConfig) -> None:
        """The job of an app: its poll, which ``configure`` may cancel."""
        task = asyncio.current_task()
        if task is not None:
            self._polling[app.name] = task
        try:
            await self.poll(app)
        finally:
            if self._polling.get(app.name) is task:
                del self._polling[app.name]

    async def poll(self, app: AppConfig) -> None:
        """Fetch every count of ``app`` and publish them; never raises."""
        started = time.perf_counter()
        today = local_day(time.time(), self._zone)
        yesterday = today - timedelta(days=1)
        # Yesterday with today: its final count costs no extra request, and the window is
        # proven against its total (see StatsClient.days).
        all_time = all_time_window(today, self._zone)
        kinds: list[Kind] = [MESSAGES, *app.dialog_types]
        wanted = [(kind, per_day) for per_day in (False, True) for kind in kinds]
        deadline = time.monotonic() + self._deadline

        def read(kind: Kind, per_day: bool) -> Awaitable[int | Days]:
            if per_day:
                return self._client.days(app, kind, yesterday, today, self._zone, deadline=deadline)
            return self._client.total(app, kind, *all_time, deadline=deadline)

        try:
            answers = await asyncio.gather(
                *(read(*item) for item in wanted), return_exceptions=True
            )
        except asyncio.CancelledError:
            # Shutdown ends polls in flight; that is not an error worth a traceback.
            log.debug("app %s: poll cancelled", app.name)
            return
        results = dict(zip(wanted, answers, strict=True))
        finished = time.monotonic()
        if self._apps.get(app.name) != app:
            return  # reconfigured while this poll ran: its answers belong to the old config

        previous = self.snapshot.apps[app.name]
        totals = dict(previous.totals)
        todays = dict(previous.today)
        yesterdays = dict(previous.yesterday)
        outcomes: Counter[tuple[str, str]] = Counter(previous.requests)
        failures: list[Failure] = []
        for (kind, per_day), result in results.items():
            endpoint = endpoint_label(endpoint_path(kind, per_day))
            outcome = "success"
            if isinstance(result, BaseException):
                outcome = result.outcome if isinstance(result, APIError) else "error"
                failures.append((endpoint, result))
            elif isinstance(result, Days):
                # A day absent from a proven answer had no activity: zero.
                todays[kind] = Reading(result.counts.get(today, 0), finished, today)
                yesterdays[kind] = Reading(result.counts.get(yesterday, 0), finished, yesterday)
            else:
                totals[kind] = Reading(result, finished)
            outcomes[(endpoint, outcome)] += 1

        up = not failures
        self._report(app, previous, failures, len(wanted))
        polls = Counter(previous.polls)
        polls["success" if up else "failure"] += 1
        current = replace(
            previous,
            totals=frozen_map(totals),
            today=frozen_map(todays),
            yesterday=frozen_map(yesterdays),
            up=up,
            polled=True,
            last_success=finished if up else previous.last_success,
            last_poll_duration=time.perf_counter() - started,
            polls=frozen_map(polls),
            requests=frozen_map(outcomes),
        )
        # No await between reading the old snapshot and storing the new one: polls of
        # other apps, running on the same loop, cannot interleave here.
        self.snapshot = self.snapshot.with_app(current)

    def _report(
        self, app: AppConfig, previous: AppSnapshot, failures: list[Failure], total: int
    ) -> None:
        if not failures:
            self._auth_warned_at.pop(app.name, None)
            if previous.polled and not previous.up:
                log.info("app %s: poll succeeded again", app.name)
            return
        refused = [
            e for _, e in failures if isinstance(e, APIStatusError) and e.status in (401, 403)
        ]
        if refused:
            # The same answer every poll until someone fixes the key or the plan: say it
            # once, then remind now and then instead of every interval.
            now = time.monotonic()
            if now - self._auth_warned_at.get(app.name, -math.inf) >= AUTH_WARNING_EVERY_SECONDS:
                self._auth_warned_at[app.name] = now
                log.warning("app %s: %s", app.name, refusal(refused[0]))
            return
        endpoint, error = failures[0]
        reason = (
            error.reason if isinstance(error, APIError) else f"unexpected {type(error).__name__}"
        )
        log.warning(
            "app %s: poll failed, %d of %d requests failed, first %s: %s",
            app.name,
            len(failures),
            total,
            endpoint,
            reason,
        )


def _restarted(app: AppConfig, before: AppSnapshot | None) -> AppSnapshot:
    """A new or changed app, never polled under its config: of what was known of it, only
    the counters of polls and requests go on."""
    fresh = AppSnapshot(app.name, app.dialog_types, app.dialog_type_names)
    if before is None:
        return fresh
    return replace(fresh, polls=before.polls, requests=before.requests)
