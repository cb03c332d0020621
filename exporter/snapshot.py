"""What the exporter knows at one moment: an immutable value the poller swaps whole.

A scrape reads one ``Snapshot`` reference and never sees a half-finished poll. Counts
are kept with the time they were fetched (and, for per-day counts, the day they
belong to), so the collector can decide what is still worth showing. Those times are
``time.monotonic()``: an age holds whatever the wall clock does, and is shown on the wall
clock of the moment it is shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType

from exporter.api import Kind

# A jump of the wall clock against the monotonic one larger than this is a step (NTP slews
# far slower): whatever was placed in time on the wall clock is placed again.
CLOCK_STEP_SECONDS = 1.0


def frozen_map(items: Mapping | None = None) -> Mapping:
    """A read-only copy, so that no holder of a snapshot can change it."""
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True)
class Reading:
    """One count as the API gave it."""

    value: int
    fetched_at: float  # time.monotonic()
    day: date | None = None  # the day a per-day count belongs to; None for all-time totals


@dataclass(frozen=True)
class AppSnapshot:
    """The last known counts of one app and the health of its polls."""

    name: str
    dialog_types: tuple[int, ...]
    dialog_type_names: tuple[tuple[int, str], ...] = ()  # as in AppConfig
    totals: Mapping[Kind, Reading] = field(default_factory=frozen_map)
    today: Mapping[Kind, Reading] = field(default_factory=frozen_map)
    yesterday: Mapping[Kind, Reading] = field(default_factory=frozen_map)
    up: bool = False
    polled: bool = False  # a poll has finished, successful or not
    last_success: float | None = None  # time.monotonic() at the end of that poll
    last_poll_duration: float | None = None
    polls: Mapping[str, int] = field(default_factory=frozen_map)  # outcome -> count
    # (endpoint, outcome) -> count
    requests: Mapping[tuple[str, str], int] = field(default_factory=frozen_map)


@dataclass(frozen=True)
class Snapshot:
    apps: Mapping[str, AppSnapshot] = field(default_factory=frozen_map)

    @property
    def ready(self) -> bool:
        """Every app has been polled once, successfully or not; so, with no app, at once."""
        return all(app.polled for app in self.apps.values())

    def with_app(self, app: AppSnapshot) -> Snapshot:
        return Snapshot(frozen_map({**self.apps, app.name: app}))
