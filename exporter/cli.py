"""The command line: flags mirror the settings; ``--demo`` needs no account."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from pydantic import SecretStr

from exporter import __version__, backfill, check, healthcheck
from exporter.config import AppConfig, ConfigError, Settings, env_name, load_apps, shard_of
from exporter.daemon import run
from exporter.options import PROG, ArgumentParser, add_settings_arguments, settings_from
from exporter.server import Server
from exporter.simulator import Simulator
from exporter.webconfig import WebConfigError, load_web_config

DEMO_KEY = "demo-key"
SUBCOMMANDS = {"backfill": backfill.main, "check": check.main, "healthcheck": healthcheck.main}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Prometheus exporter for the ConnectyCube Admin Statistics API.",
        epilog=(
            "Every flag can also be given as the environment variable shown, or in a .env "
            "file in the working directory; a flag wins over the environment. "
            f"To load past days into Prometheus: {PROG} backfill --help. "
            f"To check a key and the settings against the API: {PROG} check --help. "
            f"To ask a running exporter whether it answers: {PROG} healthcheck --help."
        ),
    )
    add_settings_arguments(parser)
    parser.add_argument(
        "--demo",
        action="store_true",
        help="poll a built-in simulator of the API instead of ConnectyCube: no account needed",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


def _start_demo(settings: Settings) -> Settings:
    """Start the simulator in this process (its thread keeps it) and point the settings at it."""
    server = Server(Simulator([DEMO_KEY], settings.timezone), "127.0.0.1:0")
    logging.getLogger(__name__).info(
        "demo: polling the built-in simulator of the ConnectyCube API at %s", server.url
    )
    return settings.model_copy(
        update={
            "api_url": server.url,
            "api_key": SecretStr(DEMO_KEY),
            "api_key_file": None,
            "config_file": None,
        }
    )


def load_share(settings: Settings) -> tuple[AppConfig, ...]:
    """The apps this process polls: all of them, or its shard's share."""
    apps = load_apps(settings)
    total = settings.total_shards
    if total == 1:
        return apps
    share = tuple(app for app in apps if shard_of(app.name, total) == settings.shard)
    logging.getLogger(__name__).info(
        "shard %d of %d: polling %d of %d app(s)", settings.shard, total, len(share), len(apps)
    )
    return share


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # A subcommand only as the first word: any other command line runs the daemon as ever.
    if argv and argv[0] in SUBCOMMANDS:
        # Only the daemon reloads on SIGHUP: for a one-off command it ends the process.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        return SUBCOMMANDS[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    settings: Settings | None = None
    try:
        settings = settings_from(args)
        if args.demo:
            settings = _start_demo(settings)
        apps = load_share(settings)
        web_config = load_web_config(settings.web_config_file)
    except (ConfigError, WebConfigError) as exc:
        where = f"{env_name('web_config_file')}: " if isinstance(exc, WebConfigError) else ""
        message = f"configuration error: {where}{exc}"
        if settings is not None and settings.log_format == "json":
            logging.getLogger(__name__).error("%s", message)  # a JSON line like every other
        else:
            print(f"{PROG}: {message}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(settings, apps, lambda: load_share(settings), web_config))
    except KeyboardInterrupt:  # a Ctrl-C before the signal handlers were in place
        return 0
