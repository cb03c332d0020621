"""The /metrics body, rendered once per snapshot instead of on every scrape.

Rendering 1000 apps with prometheus_client takes a few hundred milliseconds; a scrape
should not. Each app's sample lines are rendered once per ``AppSnapshot`` (a poll makes
a new one) and kept until they would change (a count going stale, local midnight); a
body is assembled from them once per snapshot, in the classic text format and in
OpenMetrics (whose sample lines are the same; only the headers differ), and compressed
lazily when a scraper first asks for gzip. Only the small process metrics are rendered
on every scrape.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
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
from exporter.snapshot import AppSnapshot, Snapshot

OPENMETRICS_EOF = b"# EOF\n"


def escape_label_value(value: str) -> str:
    """Label value escaping of both text formats: backslash, newline, double quote."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def series(family: Family, labels: tuple[str, ...], extra: Sequence[tuple[str, str]] = ()) -> str:
    """A sample's name and labels, ``name{label="value",...}``: the family's labels in
    order, then ``extra`` (target labels, as backfill adds them)."""
    name = family.name + "_total" if family.type == "counter" else family.name
    pairs = (*zip(family.labels, labels, strict=True), *extra)
    return name + "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs) + "}"


def _line(family: Family, labels: tuple[str, ...], value: float) -> str:
    return f"{series(family, labels)} {floatToGoString(value)}\n"


def header(family: Family, openmetrics: bool) -> bytes:
    """The ``# HELP`` and ``# TYPE`` lines of a family."""
    # The classic format names a counter family after its samples (_total); OpenMetrics
    # names it without the suffix.
    name = family.name + "_total" if family.type == "counter" and not openmetrics else family.name
    help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
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
    _gzip: tuple[bytes, object] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def gzipped(self, tail: bytes) -> bytes:
        """``gzip(data + tail)``, compressing ``data`` only once.

        The compressor is flushed (Z_SYNC_FLUSH) after ``data`` and kept; each scrape
        continues a copy of it with its own tail, so the result is one ordinary gzip
        stream, as every client expects.
        """
        with self._lock:
            if self._gzip is None:
                compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
                prefix = compressor.compress(self.data) + compressor.flush(zlib.Z_SYNC_FLUSH)
                self._gzip = (prefix, compressor)
            prefix, compressor = self._gzip
            copy = compressor.copy()  # type: ignore[attr-defined]
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
    ) -> None:
        self._snapshot = snapshot
        self._zone = zone
        self._max_staleness = max_staleness
        self._process_metrics = process_metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._apps: dict[str, _AppLines] = {}
        self._key: tuple[Snapshot, float] | None = None  # what the bodies were made from
        self._bodies: dict[bool, _Body] = {}

    def render(self, openmetrics: bool = False, compress: bool = False) -> bytes:
        """The full /metrics body in the classic text format or OpenMetrics."""
        body = self._body(openmetrics)
        if openmetrics:
            tail = generate_openmetrics(self._process_metrics).removesuffix(OPENMETRICS_EOF)
            tail += OPENMETRICS_EOF
        else:
            tail = generate_latest(self._process_metrics)
        return body.gzipped(tail) if compress else body.data + tail

    def _body(self, openmetrics: bool) -> _Body:
        now = self._clock()
        snapshot = self._snapshot()
        with self._lock:
            key = self._key
            if key is None or key[0] is not snapshot or now >= key[1]:
                self._bodies = {}
                self._key = (snapshot, self._refresh(snapshot, now))
            body = self._bodies.get(openmetrics)
            if body is None:
                body = self._bodies[openmetrics] = _Body(self._assemble(snapshot, openmetrics))
            return body

    def _refresh(self, snapshot: Snapshot, now: float) -> float:
        """Render the apps that changed; the time until which every app's lines hold."""
        view: View | None = None
        current: dict[str, _AppLines] = {}
        for name, app in snapshot.apps.items():
            cached = self._apps.get(name)
            if cached is None or cached.app is not app or now >= cached.expires:
                view = view or View.at(now, self._zone, self._max_staleness)
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
        parts.append(header(BUILD_INFO, openmetrics))
        parts.append(_line(BUILD_INFO, *BUILD_INFO_SAMPLE).encode())
        return b"".join(parts)
