"""APScheduler on the monotonic clock: polling keeps its interval whatever the wall clock does.

APScheduler 3 keeps run times on the wall clock, and relies on a correct one: stepped back
ten minutes (an NTP step, a VM resumed, a wrong RTC fixed), an interval job waits ten
minutes more; stepped forward, it runs early. ``SteadyJobStore`` notices a step whenever the
scheduler asks what is due, and moves every job's next run by it: each job stays as far
ahead on the monotonic clock as it was. The scheduler's timer is already monotonic
(``loop.call_later``), so it wakes in time to ask.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from apscheduler.job import Job
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from exporter.snapshot import CLOCK_STEP_SECONDS


class SteadyJobStore(MemoryJobStore):
    """A memory job store whose jobs follow steps of the wall clock."""

    def __init__(self) -> None:
        super().__init__()
        self._offset = time.time() - time.monotonic()  # wall clock minus monotonic clock

    def get_due_jobs(self, now: datetime) -> list[Job]:
        # The scheduler's own "now": jobs are moved onto the clock it compares them with.
        self._follow(now.timestamp())
        return super().get_due_jobs(now)

    def add_job(self, job: Job) -> None:
        self._follow(time.time())
        super().add_job(job)

    def _follow(self, wall: float) -> None:
        offset = wall - time.monotonic()
        step = offset - self._offset
        if abs(step) < CLOCK_STEP_SECONDS:
            return
        self._offset = offset
        jobs = self.get_all_jobs()
        self.remove_all_jobs()
        for job in jobs:
            if job.next_run_time is not None:  # None: paused
                job.next_run_time += timedelta(seconds=step)
            super().add_job(job)


def steady_scheduler(loop: asyncio.AbstractEventLoop) -> AsyncIOScheduler:
    """An asyncio scheduler whose interval jobs keep their pace across wall clock steps."""
    return AsyncIOScheduler(event_loop=loop, jobstores={"default": SteadyJobStore()})
