"""Polls every app on a schedule and publishes what it learns as a new ``Snapshot``.

One APScheduler job per app: a slow app never delays another, and ``max_instances=1``
means one app is never polled twice at once. A poll asks for every count at once
(2 + 2 x dialog types requests) and never raises: a failure is logged, counted and
leaves the last good values in place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from exporter.client import MESSAGES, APIError, Kind, StatsClient, endpoint_path
from exporter.config import AppConfig
from exporter.days import day_bounds, local_day
from exporter.snapshot import AppSnapshot, Reading, Snapshot, frozen_map

log = logging.getLogger(__name__)

ENDPOINT_PREFIX = "/admin/stats/"


def endpoint_label(path: str) -> str:
    """``/admin/stats/messages/sent-total`` -> ``messages/sent-total``."""
    return path.removeprefix(ENDPOINT_PREFIX)


class Poller:
    """Owns the current snapshot; only ``poll`` replaces it, on the event loop's thread."""

    def __init__(
        self,
        apps: Iterable[AppConfig],
        client: StatsClient,
        zone: ZoneInfo,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._zone = zone
        self._clock = clock
        self._snapshot = Snapshot(
            frozen_map({app.name: AppSnapshot(app.name, app.dialog_types) for app in apps})
        )

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def schedule(
        self, scheduler: AsyncIOScheduler, apps: Iterable[AppConfig], interval: float
    ) -> None:
        """One job per app, the first run now."""
        for app in apps:
            scheduler.add_job(
                self.poll,
                "interval",
                args=[app],
                seconds=interval,
                id=app.name,
                name=f"poll app {app.name}",
                next_run_time=datetime.now(UTC),
                max_instances=1,
                coalesce=True,
                # A run that starts late is still worth running, once.
                misfire_grace_time=max(1, int(interval)),
            )

    async def poll(self, app: AppConfig) -> None:
        """Fetch every count of ``app`` and publish them; never raises."""
        started = time.perf_counter()
        today = local_day(self._clock(), self._zone)
        start, end = day_bounds(today, self._zone)
        kinds: list[Kind] = [MESSAGES, *app.dialog_types]
        wanted = [(kind, per_day) for per_day in (False, True) for kind in kinds]
        try:
            results = await asyncio.gather(
                *(self._client.total(app, kind) for kind in kinds),
                *(self._client.per_day(app, kind, start, end) for kind in kinds),
                return_exceptions=True,
            )
        except asyncio.CancelledError:
            # Shutdown ends polls in flight; that is not an error worth a traceback.
            log.debug("app %s: poll cancelled", app.name)
            return
        finished = self._clock()

        previous = self._snapshot.apps[app.name]
        totals = dict(previous.totals)
        todays = dict(previous.today)
        outcomes: Counter[tuple[str, str]] = Counter(previous.requests)
        failures: list[tuple[str, BaseException]] = []
        for (kind, per_day), result in zip(wanted, results, strict=True):
            endpoint = endpoint_label(endpoint_path(kind, per_day))
            if isinstance(result, BaseException):
                outcome = result.outcome if isinstance(result, APIError) else "error"
                outcomes[(endpoint, outcome)] += 1
                failures.append((endpoint, result))
                continue
            outcomes[(endpoint, "success")] += 1
            if isinstance(result, dict):
                # A day absent from the answer had no activity: zero.
                todays[kind] = Reading(result.get(today, 0), finished, today)
            else:
                totals[kind] = Reading(result, finished)

        up = not failures
        self._report(app, previous.up, previous.polled, failures, len(wanted))
        polls = Counter(previous.polls)
        polls["success" if up else "failure"] += 1
        current = AppSnapshot(
            name=app.name,
            dialog_types=app.dialog_types,
            totals=frozen_map(totals),
            today=frozen_map(todays),
            up=up,
            polled=True,
            last_success=finished if up else previous.last_success,
            last_poll_duration=time.perf_counter() - started,
            polls=frozen_map(polls),
            requests=frozen_map(outcomes),
        )
        # No await between reading the old snapshot and storing the new one: polls of
        # other apps, running on the same loop, cannot interleave here.
        self._snapshot = self._snapshot.with_app(current)

    @staticmethod
    def _report(
        app: AppConfig,
        was_up: bool,
        was_polled: bool,
        failures: list[tuple[str, BaseException]],
        total: int,
    ) -> None:
        if not failures:
            if was_polled and not was_up:
                log.info("app %s: poll succeeded again", app.name)
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
