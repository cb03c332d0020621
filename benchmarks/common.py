"""What the two comparison designs share: their command line and the API's plain calls.

Kept apart from ``benchmarks.baseline`` because importing that module registers its
gauges in the default registry, which ``benchmarks.scrape_time`` serves too.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

API_KEY_HEADER = "CB-Administration-API-Key"
DIALOG_TYPE_NAMES = {1: "broadcast", 2: "group", 3: "private", 4: "public", 5: "meeting"}


def parse_args(
    description: str, argv: list[str] | None = None, *, interval: bool = True
) -> argparse.Namespace:
    """``--api-url``, the apps (``--keys`` or ``--key-prefix`` and ``--apps``), ``--port``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--api-url", required=True)
    keys = parser.add_mutually_exclusive_group(required=True)
    keys.add_argument("--keys", help="comma separated API keys, one app each")
    keys.add_argument("--key-prefix", help="keys PREFIX0 .. PREFIX<apps-1>")
    parser.add_argument("--apps", type=int, default=1, help="number of apps with --key-prefix")
    parser.add_argument("--dialog-types", default="1,2,3,4")
    parser.add_argument("--port", type=int, default=0)
    if interval:
        parser.add_argument("--interval", type=float, default=60.0, help="seconds between polls")
    return parser.parse_args(argv)


def apps_from(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(app label, API key) pairs; labels are ``app-0``, ``app-1``, ... (keys never are)."""
    if args.keys:
        keys = args.keys.split(",")
    else:
        keys = [f"{args.key_prefix}{i}" for i in range(args.apps)]
    return [(f"app-{i}", key) for i, key in enumerate(keys)]


def dialog_types_from(args: argparse.Namespace) -> list[int]:
    return [int(code) for code in args.dialog_types.split(",")]


def today_window() -> tuple[int, int, str]:
    """[midnight, next midnight) in UTC as unix seconds, and today's date as the API keys it."""
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = int(midnight.timestamp())
    return start, int((midnight + timedelta(days=1)).timestamp()), midnight.date().isoformat()


def get_json(client: httpx.Client, url: str, key: str, params: dict[str, Any]) -> Any:
    """One GET with the admin key; an HTTP error status raises."""
    response = client.get(url, params=params, headers={API_KEY_HEADER: key})
    response.raise_for_status()
    return response.json()
