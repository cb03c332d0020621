"""The scrape-time design: every ``/metrics`` request asks the API again.

This is how a generic JSON exporter works (one request per configured URL per scrape):
nothing is cached, so each scrape costs one full API round, 2 + 2 x dialog types
requests per app. The round runs **concurrently**, up to 64 requests in flight (the
exporter's default cap), so a scrape takes about one request's latency; the API load is
the same either way: it grows with the scrape rate.

    python -m benchmarks.scrape_time --api-url URL --key-prefix P --apps N --port 0
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from benchmarks.common import (
    DIALOG_TYPE_NAMES,
    apps_from,
    dialog_types_from,
    get_json,
    parse_args,
    today_window,
)

MAX_IN_FLIGHT = 64


class ScrapeTimeCollector(Collector):
    """Fetches every count of every app inside ``collect()``, i.e. on each scrape."""

    def __init__(self, api_url: str, apps: list[tuple[str, str]], dialog_types: list[int]):
        self._stats = f"{api_url}/admin/stats"
        self._apps = apps
        self._dialog_types = dialog_types
        limits = httpx.Limits(max_connections=MAX_IN_FLIGHT)
        self._client = httpx.Client(timeout=10.0, limits=limits)
        self._pool = ThreadPoolExecutor(MAX_IN_FLIGHT)

    def describe(self) -> list[Metric]:
        return []  # registering must not call the API

    def _fetch(self, job: tuple[str, str, str, dict[str, Any]]) -> Any:
        _, key, path, params = job
        return get_json(self._client, f"{self._stats}/{path}", key, params)

    def collect(self) -> Iterator[Metric]:
        start, end, today = today_window()
        day = {"start_date": start, "end_date": end}
        jobs: list[tuple[str, str, str, dict[str, Any]]] = []
        for app, key in self._apps:
            jobs.append((app, key, "messages/sent-total", {}))
            jobs.append((app, key, "messages/sent-per-day", day))
            for code in self._dialog_types:
                jobs.append((app, key, "dialogs/created-total", {"types[]": code}))
                jobs.append((app, key, "dialogs/created-per-day", {**day, "types[]": code}))
        # A failed request fails the scrape, as a JSON exporter's failed fetch does.
        answers = list(self._pool.map(self._fetch, jobs))

        sent = GaugeMetricFamily("connectycube_messages_sent", "Messages sent.", labels=["app"])
        sent_today = GaugeMetricFamily(
            "connectycube_messages_sent_today", "Messages sent today.", labels=["app"]
        )
        labels = ["app", "dialog_type"]
        created = GaugeMetricFamily("connectycube_dialogs_created", "Dialogs.", labels=labels)
        created_today = GaugeMetricFamily(
            "connectycube_dialogs_created_today", "Dialogs created today.", labels=labels
        )
        for (app, _, path, params), answer in zip(jobs, answers, strict=True):
            if path.startswith("messages/"):
                family, labels = (sent, [app]) if path.endswith("total") else (sent_today, [app])
            else:
                code = params["types[]"]
                labels = [app, DIALOG_TYPE_NAMES.get(code, str(code))]
                family = created if path.endswith("total") else created_today
            value = answer["total"] if path.endswith("total") else answer.get(today, 0)
            family.add_metric(labels, value)
        yield from (sent, sent_today, created, created_today)


def main(argv: list[str] | None = None) -> int:
    """Serve until killed (SIGTERM's default action: nothing to clean up)."""
    args = parse_args(__doc__.splitlines()[0], argv, interval=False)
    apps = apps_from(args)
    REGISTRY.register(ScrapeTimeCollector(args.api_url, apps, dialog_types_from(args)))
    server, thread = start_http_server(args.port, addr="127.0.0.1")
    print(
        f"listening on http://127.0.0.1:{server.server_port}, "
        f"{len(apps)} app(s), one API round per scrape",
        file=sys.stderr,
        flush=True,
    )
    thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
