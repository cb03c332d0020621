"""The exporter's HTTP server, on an event loop of its own thread so that a scrape never
waits behind a poll cycle.

A connection waiting for its request is a socket, a small protocol object and a timer, not
a thread: reads go into one buffer shared by all, and the HTTP/1.1 parser (h11) and the TLS
state come with the first byte. TLS is an ``ssl.SSLObject`` over memory BIOs: asyncio's TLS
transport would allocate 256 KiB per connection before the handshake. ``Limits`` says what
clients may hold:

- deadlines no trickle resets: the TLS handshake's, a request head's (from when the server
  starts waiting for it; on keep-alive, from its first byte, ``idle_timeout`` until then),
  and the client's for reading the answer;
- at most ``max_client_connections`` per client address (a /64 for IPv6);
- at most ``max_connections``: when full, a new connection displaces the one that has
  waited longest for its first request, else the keep-alive one idle longest, never one
  being answered. Slow clients displace only each other; a scraper's connection goes last;
- at most ``max_connections + accept_headroom`` sockets, so that the open files limit holds
  them: the kernel's listen queue keeps the rest until one closes. If descriptors run out
  anyway, the cap comes down and waiting connections give theirs back.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import resource
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from functools import lru_cache
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

import h11

from exporter.config import parse_listen_address

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What one client, and all of them together, may hold of the exporter's server."""

    max_connections: int = 1024
    max_client_connections: int = 64
    header_timeout: float = 10.0
    tls_handshake_timeout: float = 10.0
    idle_timeout: float = 120.0
    write_timeout: float = 30.0
    max_head_bytes: int = 16 * 1024
    # Connections the kernel queues before they are accepted: they hold no descriptor of
    # the process. A full queue drops new SYNs, and the client only retries a second
    # later, so this is kept generous.
    backlog: int = 1024
    # Sockets beyond max_connections in transit: accepted and not yet counted in, or
    # displaced and not yet closed. The server never holds more descriptors than
    # max_connections + accept_headroom (and its listening socket).
    accept_headroom: int = 64


@dataclass(frozen=True, slots=True)
class Request:
    """One request head: the method, the path (%-decoded), the headers and the query."""

    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    client: str = ""  # the address it came from (an IPv6 /64), as the connection caps count
    query: str = ""  # as sent, without the "?"


@dataclass(frozen=True, slots=True)
class Response:
    """An answer. The server adds Content-Length and Date, and drops the body for HEAD."""

    status: int
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""


Handler = Callable[[Request], Awaitable[Response]]

_READ_SIZE = 64 * 1024
_REPORT_EVERY = 60.0  # seconds between warnings that connections are turned away
_OUT_OF_FILES = (errno.EMFILE, errno.ENFILE)
_OUT_OF_RESOURCES = (*_OUT_OF_FILES, errno.ENOBUFS, errno.ENOMEM)
_MIN_CONNECTIONS = 16  # the cap never comes down further: probes and a scraper still fit
_ACCEPT_RETRY_SECONDS = 0.1  # accepting again after running out, if no socket closed since
_CAP_LOWER_SECONDS = 1.0  # the cap is halved at most this often, however often accept fails
_CAP_RESTORE_SECONDS = 60.0  # without running out again, a lowered cap doubles back up
_TEXT = (("Content-Type", "text/plain; charset=utf-8"),)
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}

# A connection's phases, each with at most one deadline, for what a phase is named after.
_HANDSHAKE = "TLS handshake"
_HEAD = "complete request head"
_IDLE = "request on the idle keep-alive connection"
_ANSWER = "answer"
_CLOSED = "closed"


class Server:
    """Serves ``handler`` on ``address`` (``HOST:PORT``; port 0 picks a free port) from an
    event loop of its own thread: all but ``stop`` and ``connections`` runs there, so nothing
    needs a lock. Binding happens in the caller's thread: a port that cannot be bound raises
    at once."""

    def __init__(
        self,
        handler: Handler,
        address: str,
        ssl_context: ssl.SSLContext | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.limits = limits or Limits()
        host, port = parse_listen_address(address)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(self.limits.backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._listening = sock
        self._accepting = False
        self._sockets = 0  # accepted and not yet closed: the descriptors connections hold
        self._starting: set[asyncio.Task[None]] = set()  # accepted, getting a transport
        self.host: str = sock.getsockname()[0]
        self.port: int = sock.getsockname()[1]
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://{_show(sock.getsockname())}"
        # Connections waiting for a request, in the order they began to wait: never
        # answered (``_fresh``), or answered and kept alive (``_idle``).
        self._open: dict[_Connection, None] = {}
        self._fresh: dict[_Connection, None] = {}
        self._idle: dict[_Connection, None] = {}
        self._per_client: dict[str, int] = {}
        self._turned_away = _Report(
            "HTTP connection limits reached: a connection closed to make room or refused"
        )
        self._out_of_files = _Report(
            "HTTP server out of file descriptors: connections waiting for a request closed"
        )
        self._out_of_memory = _Report("HTTP server out of kernel memory: accepting paused")
        self.max_connections = self.limits.max_connections  # lowered if descriptors run out
        self._restore: asyncio.TimerHandle | None = None
        self._lowered_at = -_CAP_LOWER_SECONDS
        self.read_buffer = memoryview(bytearray(_READ_SIZE))  # each read is copied out at once
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(_quiet_exception_handler)
        self._thread = threading.Thread(target=self._run, name=f"http-{self.port}", daemon=True)
        self._thread.start()
        self.loop.call_soon_threadsafe(self._accept_again)

    def connections(self) -> dict[str, int]:
        """Open connections by client address (an IPv6 /64), for tests."""
        return dict(self._per_client)  # copying a dict runs no Python code: atomic

    def stop(self) -> None:
        """Close the listening socket and every connection; end the thread."""
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError, TimeoutError):
                asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    async def _shutdown(self) -> None:
        self._pause_accepting()
        self._listening.close()
        tasks = [c.task for c in self._open if c.task is not None]
        tasks += self._starting
        for task in self._starting:
            task.cancel()
        for connection in list(self._open):
            connection.abort(None)  # and its connection_lost cancels its task
        await asyncio.gather(*tasks, return_exceptions=True)

    def _accept_again(self) -> None:
        if not self._accepting and self._listening.fileno() != -1:
            self._accepting = True
            self.loop.add_reader(self._listening, self._accept)

    def _pause_accepting(self) -> None:
        if self._accepting:
            self._accepting = False
            self.loop.remove_reader(self._listening)

    def _accept(self) -> None:
        """Take the connections the kernel has queued while descriptors are budgeted for
        them; at the budget, wait for a socket to close (asyncio's own accept would take a
        whole backlog at once, and report each failure with a traceback)."""
        while self._sockets < self.max_connections + self.limits.accept_headroom:
            try:
                sock, _ = self._listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._out_of_descriptors(exc)
                else:  # e.g. aborted while queued; the next readiness tries again
                    log.debug("accepting a connection failed: %s", _reason(exc))
                return
            self._sockets += 1
            task = self.loop.create_task(self._start(_Connection(self), sock))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)
        self._pause_accepting()  # until a socket closes

    def _out_of_descriptors(self, exc: OSError) -> None:
        """The budget was wrong: something else holds descriptors, or the whole system is
        out (ENFILE). The cap is halved (at most once a second), those waiting for a request
        give theirs back down to it, so that polls and probes get some; accepting resumes in
        a moment, and the cap climbs back once descriptors have stopped running out. Out of
        kernel memory (ENOBUFS, ENOMEM), accepting only pauses."""
        self._pause_accepting()
        self.loop.call_later(_ACCEPT_RETRY_SECONDS, self._accept_again)
        if exc.errno not in _OUT_OF_FILES:
            self._out_of_memory(_reason(exc))
            return
        if self.loop.time() - self._lowered_at >= _CAP_LOWER_SECONDS:
            self._lowered_at = self.loop.time()
            floor = min(_MIN_CONNECTIONS, self.limits.max_connections)
            self.max_connections = max(floor, self.max_connections // 2)
        if self._restore is not None:
            self._restore.cancel()
        self._restore = self.loop.call_later(_CAP_RESTORE_SECONDS, self._raise_cap)
        while len(self._open) > self.max_connections:
            oldest = self._waiting_longest()
            if oldest is None:
                break
            oldest.abort("gave way: no file descriptor free")
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        latest = f"{_reason(exc)} (ulimit -n {limit}); connections now capped at"
        self._out_of_files(f"{latest} {self.max_connections}")

    def _raise_cap(self) -> None:
        """A minute without running out of descriptors: double the cap, up to the setting."""
        self.max_connections = min(self.limits.max_connections, 2 * self.max_connections)
        self._restore = None
        if self.max_connections < self.limits.max_connections:
            self._restore = self.loop.call_later(_CAP_RESTORE_SECONDS, self._raise_cap)
        self._accept_again()

    async def _start(self, connection: _Connection, sock: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: connection, sock)
        except OSError as exc:  # failed before there was a transport to report its loss
            log.debug("a new connection failed: %s", _reason(exc))
            sock.close()
            self.socket_closed()
        except asyncio.CancelledError:  # the server stops
            sock.close()
            raise

    def socket_closed(self) -> None:
        """A connection's socket is closed: its descriptor is free for the next one."""
        self._sockets -= 1
        self._accept_again()

    def _waiting_longest(self) -> _Connection | None:
        """The connection to give way first: never answered, else idle on keep-alive."""
        return next(iter(self._fresh), None) or next(iter(self._idle), None)

    def admit(self, connection: _Connection) -> bool:
        """Count a new connection in, making room if need be; False to close it at once."""
        client = connection.client
        held = self._per_client.get(client, 0)
        if held >= self.limits.max_client_connections:
            self._turned_away(f"{client} already holds {held} connections")
            return False
        if len(self._open) >= self.max_connections:
            oldest = self._waiting_longest()
            if oldest is None:
                self._turned_away(f"all {len(self._open)} connections are being answered")
                return False
            why = f"full ({len(self._open)} open): the connection from {oldest.client} gave way"
            self._turned_away(why)
            oldest.abort("gave way to a new connection")
        self._open[connection] = self._fresh[connection] = None
        self._per_client[client] = self._per_client.get(client, 0) + 1  # after the eviction
        return True

    def idle(self, connection: _Connection) -> None:
        """``connection`` was answered; it gives way after those never answered."""
        self._idle[connection] = None

    def busy(self, connection: _Connection) -> None:
        """``connection`` is being answered: it never gives way."""
        self._fresh.pop(connection, None)
        self._idle.pop(connection, None)

    def release(self, connection: _Connection) -> None:
        if self._open.pop(connection, False) is None:
            self.busy(connection)
            self._per_client[connection.client] -= 1
            if not self._per_client[connection.client]:
                del self._per_client[connection.client]


class _Report:
    """A warning said at most once a minute: how often it happened since, and the latest."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self.reported = time.monotonic() - _REPORT_EVERY

    def __call__(self, latest: str) -> None:
        log.debug("%s: %s", self.what, latest)
        self.count += 1
        now = time.monotonic()
        if now - self.reported >= _REPORT_EVERY:
            template = "%s: %d time(s) since the last warning; latest: %s"
            log.warning(template, self.what, self.count, latest)
            self.count = 0
            self.reported = now


class _Connection(asyncio.BufferedProtocol):
    """One client connection: TLS if any, then request heads and answers, under deadlines."""

    __slots__ = (
        *("client", "fed", "incoming", "outgoing", "parser", "paused", "peer", "phase"),
        *("server", "task", "timer", "tls", "transport"),
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        self.phase = _CLOSED
        self.paused = False  # the client reads the answer slower than it is written
        self.timer: asyncio.TimerHandle | None = None
        self.tls: ssl.SSLObject | None = None
        self.parser: h11.Connection | None = None
        self.fed = 0  # bytes given to the parser and not yet taken as a request head
        self.task: asyncio.Task[None] | None = None  # the handler, answering a request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client, self.peer = _client_key(peer), _show(peer)
        if not self.server.admit(self):
            transport.abort()
        elif self.server.ssl_context is not None:
            self._enter(_HANDSHAKE, self.server.limits.tls_handshake_timeout)
        else:
            self._enter(_HEAD, self.server.limits.header_timeout)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.server.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(self.server.read_buffer[:nbytes])
        if self.phase == _CLOSED:
            return
        try:
            if self.server.ssl_context is None:
                self._received(data)
            else:
                self._received_tls(data, self.server.ssl_context)
        except Exception:  # a bug: said once, and this connection only is dropped
            log.exception("%s: connection failed", self.peer)
            self.abort(None)

    def eof_received(self) -> bool:
        if self.phase == _ANSWER and self.parser is not None:
            self.parser.receive_data(b"")
            return True  # half-closed: the answer still goes out, then the close
        if self.phase in (_HEAD, _IDLE) and self.parser is not None:
            self._received(b"")
        else:
            self.abort("closed by the client")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.phase != _CLOSED and exc is not None:
            log.debug("%s: connection lost: %s", self.peer, _reason(exc))
        self._end()
        self.server.socket_closed()
        if self.task is not None:
            self.task.cancel()  # e.g. a bcrypt check nobody waits for any more

    def pause_writing(self) -> None:
        self.paused = True
        self._deadline(self.server.limits.write_timeout, "reading of the answer by the client")

    def resume_writing(self) -> None:
        self.paused = False
        if self.phase == _ANSWER and self.task is None:
            self._next_request()

    def abort(self, why: str | None) -> None:
        """Drop the connection at once (a deadline, room for another, the server stops)."""
        if why is not None:
            log.debug("%s: connection closed: %s", self.peer, why)
        self._end()
        self.transport.abort()

    def _enter(self, phase: str, seconds: float | None = None) -> None:
        """Enter ``phase``: within ``seconds``, what it is named after must come."""
        self.phase = phase
        self._deadline(seconds, phase)

    def _deadline(self, seconds: float | None, what: str) -> None:
        """Replace the deadline in force, which no progress moves; with no ``seconds``, end it."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if seconds is not None:
            why = f"no {what} within {seconds:g} s"
            self.timer = self.server.loop.call_later(seconds, self.abort, why)

    def _end(self) -> None:
        self._enter(_CLOSED)
        self.server.release(self)  # now: the count must be right before the next accept

    def _close(self) -> None:
        """Close after what is still to send; a client that never reads it is dropped."""
        self._end()
        if self.transport.is_closing():
            return
        if self.tls is not None:
            with contextlib.suppress(ssl.SSLError):
                self.tls.unwrap()  # our close_notify; the client's is not waited for
            self._write()
        self.transport.close()
        if self.transport.get_write_buffer_size():
            self.server.loop.call_later(self.server.limits.write_timeout, self.transport.abort)

    def _received_tls(self, data: bytes, context: ssl.SSLContext) -> None:
        if self.tls is None:
            self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.incoming.write(data)
        plain = []
        try:
            if self.phase == _HANDSHAKE:
                self.tls.do_handshake()
                self._enter(_HEAD, self.server.limits.header_timeout)
            while chunk := self.tls.read(_READ_SIZE):
                plain.append(chunk)
            closed = True  # the client's close_notify
        except ssl.SSLWantReadError:
            closed = False
        except (ssl.SSLError, OSError) as exc:
            failed = "TLS handshake failed" if self.phase == _HANDSHAKE else "TLS error"
            self._write()  # the alert, so that the client knows why
            self.abort(f"{failed}: {_reason(exc)}")
            return
        self._write()  # the handshake's flights, session tickets
        if plain:
            self._received(b"".join(plain))
        if closed and self.phase != _CLOSED:
            self._received(b"")

    def _received(self, data: bytes) -> None:
        """Plain bytes from the client (b"" at its end), into the HTTP parser."""
        limits = self.server.limits
        if self.parser is None:
            self.parser = self._new_parser()
        if self.phase == _IDLE and data:  # a keep-alive request begins
            self._enter(_HEAD, limits.header_timeout)
        if not self.fed and data:
            data = data.lstrip(b"\r\n")  # RFC 9112 2.2: empty lines before a request line
            if not data:
                return
        self.fed += len(data)
        self.parser.receive_data(data)
        if self.phase in (_HEAD, _IDLE):
            self._next_event(self.parser)

    def _new_parser(self) -> h11.Connection:
        self.fed = 0
        return h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.server.limits.max_head_bytes
        )

    def _next_event(self, parser: h11.Connection) -> None:
        """Act on the parser's next event: a request head to answer, an error, the end."""
        method = "GET"  # until the head says otherwise: an error answer has a body
        try:
            event = parser.next_event()
            if isinstance(event, h11.Request):
                method = event.method.decode("latin-1")
                # h11 caps a head still incomplete; one that came whole is measured here,
                # as sent: what the parser was given less what it has not used yet.
                rest = len(parser.trailing_data[0])
                size, self.fed = self.fed - rest, rest
                if size > self.server.limits.max_head_bytes:
                    raise h11.RemoteProtocolError("request head too large", 431)
                if not event.http_version.startswith(b"1."):
                    raise h11.RemoteProtocolError("HTTP version not supported", 505)
                # A body is never expected (GET and HEAD only): rather than read it, close.
                # Framed twice, it may hide a request that a proxy took for body (RFC 9112
                # 6.1): close after it whatever its body.
                names = {name for name, _ in event.headers}
                close = {b"content-length", b"transfer-encoding"} <= names
                close = close or not isinstance(parser.next_event(), h11.EndOfMessage)
                self.fed = len(parser.trailing_data[0])  # less an empty body and trailers
                self._enter_answer()
                self.transport.pause_reading()  # a pipelined request waits in the socket
                answer = self._answer(parser, _request(event, self.client), close)
                self.task = self.server.loop.create_task(answer)
            elif event is not h11.NEED_DATA:  # ConnectionClosed: the client is done
                self._close()
        except h11.RemoteProtocolError as exc:
            log.debug("%s: bad request: %s", self.peer, _reason(exc))
            gone = parser.trailing_data[1]  # the client closed: nobody to tell
            if not gone and parser.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                self._enter_answer()
                status = exc.error_status_hint
                error = Response(status, _TEXT, f"{HTTPStatus(status).phrase}\n".encode())
                self._respond(parser, method, error, close=True)
            self._close()

    def _enter_answer(self) -> None:
        self._enter(_ANSWER)
        self.server.busy(self)

    async def _answer(self, parser: h11.Connection, request: Request, close: bool) -> None:
        try:
            response = await self.server.handler(request)
        except Exception:
            log.exception("answering %s %s failed", request.method, request.path)
            response = Response(500, _TEXT, b"Internal server error\n")
        self.task = None
        if self.phase == _CLOSED:
            return
        self._respond(parser, request.method, response, close)
        status, size = response.status, len(response.body)
        log.debug('%s "%s %s" %d %d', self.peer, request.method, request.path, status, size)
        if parser.our_state is not h11.DONE or parser.their_state is not h11.DONE:
            self._close()  # Connection: close, HTTP/1.0, or a body left unread
        elif not self.paused:
            self._next_request()

    def _next_request(self) -> None:
        """Keep-alive: wait for the next request (it may be here already, pipelined)."""
        assert self.parser is not None
        self.parser.start_next_cycle()
        self.server.idle(self)
        pipelined, closed = self.parser.trailing_data
        if pipelined.startswith((b"\r", b"\n")):  # empty lines, then a pipelined request
            pipelined = pipelined.lstrip(b"\r\n")
            self.parser = self._new_parser()
            self.fed = len(pipelined)
            self.parser.receive_data(pipelined)
            if closed:
                self.parser.receive_data(b"")
        if pipelined:
            self._enter(_HEAD, self.server.limits.header_timeout)
        else:
            self._enter(_IDLE, self.server.limits.idle_timeout)
        self.transport.resume_reading()
        if pipelined or closed:
            self._next_event(self.parser)

    def _respond(self, parser: h11.Connection, method: str, answer: Response, close: bool) -> None:
        """Send ``answer``, without its body for HEAD."""
        headers = [(name.encode(), value.encode("latin-1")) for name, value in answer.headers]
        headers.append((b"Content-Length", b"%d" % len(answer.body)))
        headers.append((b"Date", _http_date(int(time.time()))))
        if close:
            headers.append((b"Connection", b"close"))
        reason = _REASONS.get(answer.status, b"")
        data = parser.send(h11.Response(status_code=answer.status, headers=headers, reason=reason))
        assert data is not None  # None only for ConnectionClosed
        if method != "HEAD":
            parser.send_with_data_passthrough(h11.Data(data=answer.body))  # counts only
            data += answer.body
        parser.send(h11.EndOfMessage())
        self._write(data)

    def _write(self, data: bytes = b"") -> None:
        """Send ``data``; with TLS, encrypted, after what the SSL object has to send."""
        if self.tls is not None:
            if data:
                self.tls.write(data)
            data = self.outgoing.read()
        if data and not self.transport.is_closing():
            self.transport.write(data)


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard limit (as Go programs do): 1024, the
    usual default outside containers, is below the connection cap. The new soft limit."""
    unlimited = 1 << 20  # Linux's default fs.nr_open: the most a soft limit can be
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return unlimited
    target = unlimited if hard == resource.RLIM_INFINITY else hard
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))  # the hard one stays
            soft = target
    return soft


def _client_key(peer: Any) -> str:
    """The address a connection is counted against: the IPv4 address, or an IPv6 /64."""
    try:
        address = ipaddress.ip_address(peer[0].split("%", 1)[0])
    except (TypeError, ValueError, IndexError):
        return str(peer)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _show(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
    return str(peer)


@lru_cache(maxsize=1)
def _http_date(second: int) -> bytes:
    """The Date header of answers within ``second``: made once a second, not per answer."""
    return formatdate(second, usegmt=True).encode()


def _reason(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]


def _request(event: h11.Request, client: str) -> Request:
    target = event.target.decode("latin-1")
    if not target.startswith("/"):  # absolute form (http://host/path), or * (OPTIONS)
        target = urlsplit(target).path or target
    headers: dict[str, str] = {}
    for raw_name, raw_value in event.headers:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    path, _, query = target.partition("?")
    method = event.method.decode("latin-1")
    return Request(method, unquote(path, "latin-1"), headers, client, query)


def _quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Connection errors the loop reports are debug lines; running out of files is not."""
    exc = context.get("exception")
    if isinstance(exc, OSError) and exc.errno not in _OUT_OF_RESOURCES:
        log.debug("%s: %s", context.get("message", "connection error"), _reason(exc))
    else:
        loop.default_exception_handler(context)
