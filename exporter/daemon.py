"""Wires the parts together and runs them until SIGTERM or SIGINT.

Data flows one way: client -> poller -> snapshot -> collector -> HTTP. The poller runs on
this event loop, HTTP on a loop and thread of its own (``exporter.server``) that only ever
reads the current snapshot: a scrape never waits for a poll, nor a poll for a scrape.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry

from exporter.client import StatsClient, limits_from, open_http
from exporter.config import AppConfig, ConfigError, Settings, env_name
from exporter.exposition import Exposition
from exporter.http import create_app
from exporter.poller import Poller
from exporter.server import Limits, Server, raise_open_files_limit
from exporter.webconfig import WebConfig

log = logging.getLogger(__name__)

RELOAD_TIMEOUT_SECONDS = 10.0
# Files the process needs besides HTTP and API connections: logs, /proc, the event loops.
_RESERVED_FILES = 64


def process_metrics() -> CollectorRegistry:
    """The usual process, platform and GC metrics, rendered fresh on every scrape."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


async def run(
    settings: Settings,
    apps: tuple[AppConfig, ...],
    reload_apps: Callable[[], tuple[AppConfig, ...]],
    web_config: WebConfig,
) -> int:
    """Serve /metrics and poll every app until a stop signal; the exit code. SIGHUP calls
    ``reload_apps``; if it raises ``ConfigError``, the running apps stay as they are."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    limits = limits_from(settings)
    async with open_http(limits) as http:
        scheduler = AsyncIOScheduler(event_loop=loop)
        poller = Poller(StatsClient(http, limits), settings, scheduler)
        exposition = Exposition(
            lambda: poller.snapshot, settings.zone, settings.max_staleness, process_metrics()
        )
        poller.configure(apps)  # before serving: /-/ready must not answer before it
        address = settings.listen_address
        try:
            handler = create_app(exposition.render, lambda: poller.ready, web_config)
            server = Server(handler, address, web_config.ssl_context, web_limits(settings))
        except OSError as exc:
            setting = env_name("listen_address")
            log.error("%s: cannot listen on %s: %s", setting, address, exc.strerror or exc)
            return 1
        every = settings.poll_interval_seconds
        log.info("listening on %s, polling %d app(s) every %gs", server.url, len(apps), every)
        reloads: set[asyncio.Task[None]] = set()

        def reload() -> None:
            task = loop.create_task(_reload(poller, reload_apps))
            reloads.add(task)  # held, so that the task is not collected mid-way
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, reload)
        scheduler.start()
        try:
            await stopping.wait()
        finally:
            log.info("shutting down")
            scheduler.shutdown(wait=False)
            # Polls still waiting on the API end now, so shutdown takes no longer than a moment.
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            server.stop()
    return 0


def web_limits(settings: Settings) -> Limits:
    """The HTTP server's limits from the settings, within the open files allowed: the soft
    limit raised to the hard one, and if even that cannot hold the connections allowed
    besides polling's and those in transit, their cap lowered, so that accepting never
    lacks a descriptor."""
    allowed = raise_open_files_limit()
    in_transit = Limits.accept_headroom
    room = allowed - settings.max_concurrent_requests - _RESERVED_FILES - in_transit
    connections = settings.web_max_connections
    if connections > room:
        connections = max(16, room)
        log.warning(
            "%s lowered from %d to %d: the process may open only %d files (ulimit -n)",
            env_name("web_max_connections"),
            settings.web_max_connections,
            connections,
            allowed,
        )
    return Limits(
        max_connections=connections,
        max_client_connections=settings.web_max_client_connections,
        header_timeout=settings.web_header_timeout_seconds,
        tls_handshake_timeout=settings.web_tls_handshake_timeout_seconds,
        idle_timeout=settings.web_idle_timeout_seconds,
    )


async def _reload(poller: Poller, reload_apps: Callable[[], tuple[AppConfig, ...]]) -> None:
    # Files are read on a thread, with a deadline: the loop keeps polling and serving
    # whatever the files are (a slow network mount, say), and a stuck read is given up.
    try:
        async with asyncio.timeout(RELOAD_TIMEOUT_SECONDS):
            apps = await asyncio.to_thread(reload_apps)
    except ConfigError as exc:
        reason = str(exc)
    except TimeoutError:
        reason = f"the files were not read within {RELOAD_TIMEOUT_SECONDS:g}s"
    else:
        poller.configure(apps)
        log.info("reloaded: polling %d app(s): %s", len(apps), ", ".join(a.name for a in apps))
        return
    log.error("reload failed, the running configuration stays: %s", reason)
