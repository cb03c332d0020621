"""Slow clients, as an unfriendly neighbour on the network would run them.

``SlowClients`` holds many connections to a server from an asyncio loop on a thread of
its own, so that a thousand of them cost the harness one thread:

- **slowloris**: sends a partial request head, then one more header line every
  ``trickle_every`` seconds, never finishing it;
- **silent**: connects and sends nothing (over TLS: never starts the handshake);
- **tls_slowloris**: completes the TLS handshake, then trickles a head like slowloris.

Each connection the server closes is opened again after a pause of ``reconnect``
seconds (a random one in that range), as an attacker keeping up the pressure would.
Connections come from several loopback source addresses (``127.0.0.2`` and up: all of
``127.0.0.0/8`` is local on Linux), so that a per-address cap alone cannot stop them.

Used by ``tests/test_slow_clients.py`` and by the benchmark's scrapes under slow clients.
"""

from __future__ import annotations

import asyncio
import random
import resource
import ssl
import threading
from collections.abc import Sequence
from types import TracebackType

HEAD = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\nUser-Agent: slowloris\r\n"
HEADER_LINE = b"X-Slow: 1\r\n"


def sources(count: int, first: int = 2) -> list[str]:
    """``count`` loopback source addresses: 127.0.0.2, 127.0.0.3, ..."""
    return [f"127.0.{(first + i) // 256}.{(first + i) % 256}" for i in range(count)]


def raise_open_files_limit(needed: int) -> None:
    """Raise this process's soft limit on open files to hold ``needed`` of them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class SlowClients:
    """Holds slow connections to ``host:port`` until ``stop()`` (or the ``with`` ends)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        slowloris: int = 0,
        silent: int = 0,
        tls_slowloris: int = 0,
        tls_context: ssl.SSLContext | None = None,
        source_addresses: Sequence[str] = ("127.0.0.2",),
        trickle_every: float = 2.0,
        reconnect: tuple[float, float] = (0.5, 1.0),
    ) -> None:
        if tls_slowloris and tls_context is None:
            raise ValueError("tls_slowloris needs a tls_context")
        self.host = host
        self.port = port
        self._plan = ["slowloris"] * slowloris + ["silent"] * silent
        self._plan += ["tls_slowloris"] * tls_slowloris
        random.Random(1).shuffle(self._plan)
        self._tls = tls_context
        self._sources = list(source_addresses)
        self._trickle_every = trickle_every
        self._reconnect = reconnect
        raise_open_files_limit(len(self._plan) + 1024)
        self.connects = 0  # connections made, in all
        self.closed_by_server = 0
        self.failed_connects = 0
        self.open = 0  # held right now
        self._loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)

    def start(self) -> SlowClients:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        """Close every connection and end the thread."""
        if self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=30)

    def __enter__(self) -> SlowClients:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        tasks = [
            asyncio.create_task(self._hold(kind, self._sources[i % len(self._sources)]))
            for i, kind in enumerate(self._plan)
        ]
        self._ready.set()
        await self._stopping.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _hold(self, kind: str, source: str) -> None:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for may swallow a cancellation.
        assert self._stopping is not None
        await asyncio.sleep(random.uniform(0, 1))  # not all in the same millisecond
        while not self._stopping.is_set():
            tls = self._tls if kind == "tls_slowloris" else None
            try:
                async with asyncio.timeout(10):
                    reader, writer = await asyncio.open_connection(
                        self.host,
                        self.port,
                        ssl=tls,
                        server_hostname=self.host if tls else None,
                        local_addr=(source, 0),
                    )
            except (OSError, TimeoutError):
                self.failed_connects += 1
                await asyncio.sleep(random.uniform(*self._reconnect))
                continue
            self.connects += 1
            self.open += 1
            try:
                if kind == "silent":
                    while await reader.read(1024):
                        pass
                else:
                    writer.write(HEAD)
                    while True:
                        try:
                            async with asyncio.timeout(self._trickle_every):
                                data = await reader.read(1024)
                        except TimeoutError:
                            writer.write(HEADER_LINE)
                            continue
                        if not data:
                            break
                self.closed_by_server += 1
            except OSError:
                self.closed_by_server += 1
            finally:
                self.open -= 1
                writer.transport.abort()
            await asyncio.sleep(random.uniform(*self._reconnect))

    def stats(self) -> dict[str, int]:
        return {
            "connects": self.connects,
            "closed_by_server": self.closed_by_server,
            "failed_connects": self.failed_connects,
            "open": self.open,
        }
