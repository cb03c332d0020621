"""The baseline: the ConnectyCube exporter a competent user would write in an afternoon.

Four ``prometheus_client`` gauges in the default registry, a thread that polls every app
with one keep-alive ``httpx.Client`` calling the endpoints one after another, and
``start_http_server``, which runs ``generate_latest`` on every scrape. It is meant to be a
fair comparison, not a strawman: it asks for the same counts with the same number of
requests per app (2 + 2 x dialog types) and keeps a fixed-rate schedule.

    python -m benchmarks.baseline --api-url URL --key-prefix P --apps N --port 0

It prints ``listening on http://127.0.0.1:PORT, ...`` on stderr once serving, like the
exporter, and ``cycle N done in S s`` after each poll of every app, for the harness.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time

import httpx
from prometheus_client import Gauge, start_http_server

from benchmarks.common import (
    DIALOG_TYPE_NAMES,
    apps_from,
    dialog_types_from,
    get_json,
    parse_args,
    today_window,
)

log = logging.getLogger("baseline")

MESSAGES_SENT = Gauge("connectycube_messages_sent", "Messages sent, all time.", ["app"])
MESSAGES_SENT_TODAY = Gauge("connectycube_messages_sent_today", "Messages sent today.", ["app"])
DIALOGS_CREATED = Gauge(
    "connectycube_dialogs_created", "Dialogs created, all time.", ["app", "dialog_type"]
)
DIALOGS_CREATED_TODAY = Gauge(
    "connectycube_dialogs_created_today", "Dialogs created today.", ["app", "dialog_type"]
)


def poll_app(
    client: httpx.Client, api_url: str, app: str, key: str, dialog_types: list[int]
) -> None:
    """Fetch every count of one app, one request after the other, and set the gauges."""
    start, end, today = today_window()
    day = {"start_date": start, "end_date": end}
    stats = f"{api_url}/admin/stats"
    total = get_json(client, f"{stats}/messages/sent-total", key, {})["total"]
    MESSAGES_SENT.labels(app).set(total)
    per_day = get_json(client, f"{stats}/messages/sent-per-day", key, day)
    MESSAGES_SENT_TODAY.labels(app).set(per_day.get(today, 0))
    for code in dialog_types:
        label = DIALOG_TYPE_NAMES.get(code, str(code))
        types = {"types[]": code}
        total = get_json(client, f"{stats}/dialogs/created-total", key, types)["total"]
        DIALOGS_CREATED.labels(app, label).set(total)
        per_day = get_json(client, f"{stats}/dialogs/created-per-day", key, {**day, **types})
        DIALOGS_CREATED_TODAY.labels(app, label).set(per_day.get(today, 0))


def poll_forever(args: argparse.Namespace) -> None:
    """Poll every app in turn, then wait for the rest of the interval (fixed rate)."""
    apps, dialog_types = apps_from(args), dialog_types_from(args)
    with httpx.Client(timeout=10.0) as client:
        cycle = 0
        while True:
            started = time.monotonic()
            for app, key in apps:
                try:
                    poll_app(client, args.api_url, app, key, dialog_types)
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    log.warning("app %s: poll failed: %s", app, exc)
            cycle += 1
            elapsed = time.monotonic() - started
            print(f"cycle {cycle} done in {elapsed:.3f} s", file=sys.stderr, flush=True)
            time.sleep(max(0.0, args.interval - elapsed))


def main(argv: list[str] | None = None) -> int:
    """Serve and poll until killed (SIGTERM's default action: nothing to clean up)."""
    args = parse_args(__doc__.splitlines()[0], argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    server, _ = start_http_server(args.port, addr="127.0.0.1")
    print(
        f"listening on http://127.0.0.1:{server.server_port}, "
        f"polling {len(apps_from(args))} app(s) every {args.interval:g}s",
        file=sys.stderr,
        flush=True,
    )
    poller = threading.Thread(target=poll_forever, args=(args,), daemon=True)
    poller.start()
    poller.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
