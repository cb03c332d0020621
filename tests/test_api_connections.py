"""The API client's connections: as many as requests in flight, each kept alive.

Against the real API every new connection is a TLS handshake, so a busy poll cycle must
not open a new one for each request. The server here counts the connections it accepts.
"""

from __future__ import annotations

import asyncio

from exporter.client import ClientLimits, open_http

IN_FLIGHT = 64  # the default cap of requests in flight
BURSTS = 5


async def bursts_of_requests() -> tuple[int, int]:
    """Connections opened, and requests answered, for BURSTS bursts of IN_FLIGHT requests
    at once to a keep-alive server that takes 50 ms to answer each."""
    opened = answered = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal opened, answered
        opened += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                await asyncio.sleep(0.05)  # so that a whole burst is in flight at once
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    async with server, open_http(ClientLimits(max_concurrent_requests=IN_FLIGHT)) as http:
        for _ in range(BURSTS):
            answers = await asyncio.gather(*(http.get(url) for _ in range(IN_FLIGHT)))
            assert all(answer.status_code == 200 for answer in answers)
    return opened, answered


def test_a_full_burst_of_requests_reuses_every_connection() -> None:
    opened, answered = asyncio.run(bursts_of_requests())
    assert answered == BURSTS * IN_FLIGHT
    assert opened == IN_FLIGHT  # the first burst's, kept alive for every later one
