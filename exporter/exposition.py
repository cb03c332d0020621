"""The /metrics body, rendered once per snapshot, not on every scrape: each app's sample
lines once per ``AppSnapshot`` (kept until a count goes stale or the day ends), the body
once per format, its gzip when first asked. Only the process metrics are read again, at
most once a second: scrapers that come closer together (an HA pair of Prometheus, a flood
of them) get the same answer, a copy of bytes, where reading and rendering the process
metrics anew would cost more than all the rest of a small scrape.
"""

from __future__ import annotations

import math
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.utils import floatToGoString

from exporter.collector import (
    APP_FAMILIES,
    BUILD_INFO,
    BUILD_INFO_SAMPLE,
    Family,
    View,
    app_samples,
)
from exporter.snapshot import CLOCK_STEP_SECONDS, AppSnapshot, Snapshot

PROCESS_METRICS_MAX_AGE = 1.0  # seconds

# The escapes of both text formats, in label values and (without the quote) help texts.
LABEL_VALUE_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", '"': '\\"'})
HELP_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n"})


def series(family: Family, labels: tuple[str, ...], extra: Sequence[tuple[str, str]] = ()) -> str:
    """``name{label="value",...}``: the family's labels, then ``extra`` (target labels)."""
    name = family.name + "_total" if family.type == "counter" else family.name
    pairs = (*zip(family.labels, labels, strict=True), *extra)
    text = ",".join(f'{key}="{value.translate(LABEL_VALUE_ESCAPES)}"' for key, value in pairs)
    return name + "{" + text + "}"


def _line(family: Family, labels: tuple[str, ...], value: float) -> str:
    return f"{series(family, labels)} {floatToGoString(value)}\n"


def header(family: Family, openmetrics: bool) -> bytes:
    """The ``# HELP`` and ``# TYPE`` lines of a family."""
    # The classic format names a counter family after its samples (_total), OpenMetrics not.
    name = family.name + "_total" if family.type == "counter" and not openmetrics else family.name
    help_text = family.help.translate(HELP_ESCAPES)
    return f"# HELP {name} {help_text}\n# TYPE {name} {family.type}\n".encode()


@dataclass
class _AppLines:
    """One app's sample lines, by family, and until when they hold."""

    app: AppSnapshot
    expires: float
    lines: list[bytes]


@dataclass
class _Body:
    """The snapshot part of /metrics in one format, and its gzip, made when first asked."""

    data: bytes

    @cached_property
    def _gzip_start(self) -> tuple[bytes, Any]:
        """``data`` compressed and flushed, and the compressor for a copy to continue."""
        compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return compressor.compress(self.data) + compressor.flush(zlib.Z_SYNC_FLUSH), compressor

    def gzipped(self, tail: bytes) -> bytes:
        """``gzip(data + tail)``, compressing ``data`` only once."""
        prefix, compressor = self._gzip_start
        copy = compressor.copy()
        return prefix + copy.compress(tail) + copy.flush()


class Exposition:
    """Serves the /metrics body of the current snapshot plus fresh process metrics."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        zone: ZoneInfo,
        max_staleness: float,
        process_metrics: CollectorRegistry,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._snapshot = snapshot
        self._view = partial(View.at, zone=zone, max_staleness=max_staleness)
        self._process_metrics = process_metrics
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._apps: dict[str, _AppLines] = {}
        self._bodies: dict[bool, _Body] = {}  # by format: OpenMetrics or not
        self._made_from: Snapshot | None = None  # the snapshot of the bodies
        self._expires = 0.0  # when the bodies' first sample goes stale or the day ends
        # The wall clock minus the monotonic clock, measured again only when it steps:
        # times shown stay the same from one scrape to the next.
        self._wall_offset = 0.0
        # Whole answers, by format and compression, with the process metrics read at (on
        # the monotonic clock):
        self._answers: dict[tuple[bool, bool], bytes] = {}
        self._answered_at = -math.inf

    def render(self, openmetrics: bool = False, compress: bool = False) -> bytes:
        """The full /metrics body in the classic text format or OpenMetrics."""
        now, moment = self._clock(), self._monotonic()
        snapshot = self._snapshot()
        with self._lock:
            if abs(now - moment - self._wall_offset) >= CLOCK_STEP_SECONDS:
                # The wall clock stepped: every app's day and times are placed again.
                self._wall_offset = now - moment
                self._apps, self._made_from = {}, None
            if snapshot is not self._made_from or moment >= self._expires:
                self._bodies = {}
                self._expires = self._refresh(snapshot, now, moment)
                self._made_from = snapshot
                self._answers = {}
            if not self._answered_at <= moment < self._answered_at + PROCESS_METRICS_MAX_AGE:
                self._answers = {}
                self._answered_at = moment
            answer = self._answers.get((openmetrics, compress))
            if answer is None:
                body = self._bodies.get(openmetrics)
                if body is None:
                    body = _Body(self._assemble(snapshot, openmetrics))
                    self._bodies[openmetrics] = body
                generate = generate_openmetrics if openmetrics else generate_latest
                tail = generate(self._process_metrics)
                answer = body.gzipped(tail) if compress else body.data + tail
                self._answers[openmetrics, compress] = answer
        return answer

    def _refresh(self, snapshot: Snapshot, now: float, moment: float) -> float:
        """Render the apps that changed; the (monotonic) time until which every app's
        lines hold."""
        view = self._view(now, moment, self._wall_offset)
        current: dict[str, _AppLines] = {}
        for name, app in snapshot.apps.items():
            cached = self._apps.get(name)
            if cached is None or cached.app is not app or moment >= cached.expires:
                samples, expires = app_samples(app, view)
                lines: list[list[str]] = [[] for _ in APP_FAMILIES]
                for index, labels, value in samples:
                    lines[index].append(_line(APP_FAMILIES[index], labels, value))
                cached = _AppLines(app, expires, ["".join(part).encode() for part in lines])
            current[name] = cached
        self._apps = current  # apps gone from the snapshot are forgotten
        return min((lines.expires for lines in current.values()), default=float("inf"))

    def _assemble(self, snapshot: Snapshot, openmetrics: bool) -> bytes:
        apps = [self._apps[name] for name in snapshot.apps]
        parts: list[bytes] = []
        for index, family in enumerate(APP_FAMILIES):
            parts.append(header(family, openmetrics))
            parts.extend(app.lines[index] for app in apps)
        parts += [header(BUILD_INFO, openmetrics), _line(BUILD_INFO, *BUILD_INFO_SAMPLE).encode()]
        return b"".join(parts)
