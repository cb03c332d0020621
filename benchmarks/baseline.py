"""The baseline: the ConnectyCube exporter a competent user would write in an afternoon.

Four ``prometheus_client`` gauges, a thread that polls every app with one keep-alive
``httpx.Client`` calling the endpoints one after another, and ``start_http_server``, which
runs ``generate_latest`` on every scrape. A fair comparison, not a strawman: it asks for
the same counts with the same requests per app (2 + 2 x dialog types) on a fixed-rate
schedule.

    python -m benchmarks.baseline --api-url URL --key-prefix P --apps N --interval S

Like the exporter, it prints ``listening on URL, ...`` on stderr once serving; then
``cycle N done in S s`` after each poll of every app, for the harness.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prometheus_client import Gauge, start_http_server

DIALOG_TYPES = {1: "broadcast", 2: "group", 3: "private", 4: "public"}

SENT = Gauge("connectycube_messages_sent", "Messages sent, all time.", ["app"])
SENT_TODAY = Gauge("connectycube_messages_sent_today", "Messages sent today.", ["app"])
CREATED = Gauge("connectycube_dialogs_created", "Dialogs created.", ["app", "dialog_type"])
CREATED_TODAY = Gauge(
    "connectycube_dialogs_created_today", "Dialogs created today.", ["app", "dialog_type"]
)


def get_json(client: httpx.Client, url: str, key: str, params: dict[str, Any]) -> Any:
    response = client.get(url, params=params, headers={"CB-Administration-API-Key": key})
    response.raise_for_status()
    return response.json()


def poll_app(client: httpx.Client, stats_url: str, app: str, key: str) -> None:
    """Fetch every count of one app, one request after the other, and set the gauges."""
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    today = midnight.date().isoformat()
    day = {
        "start_date": int(midnight.timestamp()),
        "end_date": int((midnight + timedelta(days=1)).timestamp()),
    }
    SENT.labels(app).set(get_json(client, f"{stats_url}/messages/sent-total", key, {})["total"])
    per_day = get_json(client, f"{stats_url}/messages/sent-per-day", key, day)
    SENT_TODAY.labels(app).set(per_day.get(today, 0))
    for code, name in DIALOG_TYPES.items():
        kind = {"types[]": code}
        total = get_json(client, f"{stats_url}/dialogs/created-total", key, kind)["total"]
        CREATED.labels(app, name).set(total)
        per_day = get_json(client, f"{stats_url}/dialogs/created-per-day", key, {**day, **kind})
        CREATED_TODAY.labels(app, name).set(per_day.get(today, 0))


def poll_forever(args: argparse.Namespace) -> None:
    """Poll every app in turn, then wait for the rest of the interval."""
    apps = [(f"app-{i}", f"{args.key_prefix}{i}") for i in range(args.apps)]
    with httpx.Client(timeout=10.0) as client:
        cycle = 0
        while True:
            started = time.monotonic()
            for app, key in apps:
                try:
                    poll_app(client, f"{args.api_url}/admin/stats", app, key)
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    print(f"app {app}: poll failed: {exc}", file=sys.stderr, flush=True)
            cycle += 1
            elapsed = time.monotonic() - started
            print(f"cycle {cycle} done in {elapsed:.3f} s", file=sys.stderr, flush=True)
            time.sleep(max(0.0, args.interval - elapsed))


def main() -> None:
    """Serve and poll until killed (SIGTERM's default action: nothing to clean up)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--key-prefix", required=True, help="keys PREFIX0 .. PREFIX<apps-1>")
    parser.add_argument("--apps", type=int, default=1)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between polls")
    args = parser.parse_args()
    server, _ = start_http_server(0, addr="127.0.0.1")
    print(
        f"listening on http://127.0.0.1:{server.server_port}, polling {args.apps} app(s)",
        file=sys.stderr,
        flush=True,
    )
    poll_forever(args)


if __name__ == "__main__":
    main()
