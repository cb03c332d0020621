"""The exporter's HTTP server, on an event loop of its own thread.

``serve`` is the exporter's server. It runs asyncio on a thread of its own and parses
HTTP/1.1 with h11. A connection waiting for its request is a socket, a small protocol
object and one timer, not a thread (about 7 KiB in all): a thousand idle or slow clients
cost a few megabytes, and Prometheus still gets through. Reads go into one buffer shared
by every connection, and a connection gets its HTTP parser, and its TLS state, only when
its first byte arrives. TLS is done here, with ``ssl.SSLObject`` over memory BIOs, rather
than by asyncio's TLS transport, which allocates a 256 KiB buffer per connection before
the handshake: a thousand silent handshakes would cost 256 MiB.

``Limits`` says what a client may hold:

- **Deadlines no trickle resets.** A TLS handshake must finish within
  ``tls_handshake_timeout`` of the connection; a request head (request line and headers)
  must arrive whole within ``header_timeout`` of when the server started waiting for it.
  A byte every few seconds does not extend them. Between requests of a keep-alive
  connection, ``idle_timeout`` applies until the next request's first byte.
- **Connections are capped, and the cap cannot be exhausted by waiting.** At most
  ``max_connections`` are open. When full, a new connection takes the place of the one
  that has waited longest for its first request (a silent TLS handshake, a trickling
  head), or if there is none, of the keep-alive connection idle the longest; one being
  answered is never closed for room. A flood of slow clients therefore only ever
  displaces other slow clients: Prometheus's new connection sends its request within a
  millisecond, and its keep-alive connection, answered every scrape, goes last.
- **One address cannot take them all**: at most ``max_client_connections`` come from
  one client address (one /64 for IPv6, which hands a host billions of addresses);
  more are closed at once.
- A request head over ``max_head_bytes`` gets 431; an answer the client does not read
  within ``write_timeout`` ends the connection.

Why a loop of its own rather than the poller's: a poll cycle of many apps keeps the
poller's loop busy for seconds at a time (about 3 ms of CPU per API request), and a
scrape served there would queue behind it; a body rendered there after a new snapshot
would hold up the polls. On their own threads, the two share only the GIL, as the
thread-per-connection server did before.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from exporter.config import parse_listen_address

if TYPE_CHECKING:  # imported by the server's thread as it starts: see ``_import_h11``
    import h11

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
    # Connections the kernel may queue before they are accepted. A full queue drops new
    # SYNs, and the client only retries a second later, so this is kept generous.
    backlog: int = 1024


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
# Bodies up to this size leave in one write with their head; larger ones are written
# as they are, without a copy (plain HTTP) or encrypted in pieces of this size (TLS).
_JOIN_BELOW = 64 * 1024
# A response not yet handed to the kernel beyond this many bytes pauses the connection
# (no next request is read) until the client reads; ``write_timeout`` bounds the wait.
_WRITE_HIGH_WATER = 64 * 1024
# How often, at most, the server says that it is turning connections away.
_REPORT_EVERY = 60.0

# A connection's phases. Only one deadline is in force at a time, the phase's own.
_HANDSHAKE, _HEAD, _IDLE, _ANSWER, _CLOSED = "handshake", "head", "idle", "answer", "closed"


class Server:
    """The exporter's HTTP server, serving ``handler`` on an event loop of its own thread.

    Built by ``serve``; ``stop()`` closes every connection and ends the thread. Everything
    but ``stop`` and ``connections`` runs on the server's loop: no locks.
    """

    def __init__(
        self,
        handler: Handler,
        sock: socket.socket,
        ssl_context: ssl.SSLContext | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.limits = limits or Limits()
        self.scheme = "https" if ssl_context is not None else "http"
        self._sock = sock
        self._host, self._port = sock.getsockname()[:2]
        # Connections waiting for a request, in the order they started to wait: those
        # never answered yet (a handshake, a first head), and keep-alive ones answered
        # before. When full, the first of ``_fresh`` gives way, else the first of ``_idle``:
        # a scraper's keep-alive connection outlasts any number of clients that never
        # finish a request.
        self._open: dict[_Connection, None] = {}
        self._fresh: dict[_Connection, None] = {}
        self._idle: dict[_Connection, None] = {}
        self._per_client: dict[str, int] = {}
        self._turned_away = 0
        self._reported = time.monotonic() - _REPORT_EVERY
        # One read buffer for every connection: the loop reads one socket at a time, and
        # each read is copied out at once, so an idle connection holds no buffer.
        self.read_buffer = memoryview(bytearray(_READ_SIZE))
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(_quiet_exception_handler)
        self._server: asyncio.Server | None = None
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name=f"http-{self._port}", daemon=True
        )
        self._thread.start()
        started.wait()
        if self._server is None:  # create_server failed: its error is logged
            self._thread.join()
            raise OSError(f"cannot serve on {self.url}")

    # --- public ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return str(self._host)

    @property
    def port(self) -> int:
        return int(self._port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def connections(self) -> dict[str, int]:
        """Open connections by client address (an IPv6 /64): a copy, for tests."""

        async def count() -> dict[str, int]:
            return dict(self._per_client)

        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(10)

    def stop(self) -> None:
        """Close the listening socket and every connection; end the thread."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(RuntimeError, TimeoutError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    # --- the loop's thread ---------------------------------------------------------------

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self._server = self.loop.run_until_complete(
                self.loop.create_server(
                    lambda: _Connection(self), sock=self._sock, backlog=self.limits.backlog
                )
            )
        except Exception:
            log.exception("the HTTP server could not start")
            self.loop.close()
            started.set()
            return
        started.set()
        _import_h11()  # before the first connection is served
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [c.task for c in self._open if c.task is not None]
        for connection in list(self._open):
            connection.abort(None)
        await asyncio.sleep(0)  # the transports call connection_lost, which cancels tasks
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- the registry --------------------------------------------------------------------

    def admit(self, connection: _Connection) -> bool:
        """Register a new connection under the limits; False to close it at once."""
        client = connection.client
        held = self._per_client.get(client, 0)
        if held >= self.limits.max_client_connections:
            self._turn_away(f"{client} already holds {held} connections")
            return False
        if len(self._open) >= self.limits.max_connections:
            oldest = next(iter(self._fresh), None) or next(iter(self._idle), None)
            if oldest is None:
                self._turn_away(f"all {len(self._open)} connections are being answered")
                return False
            self._turn_away(f"full: the connection from {oldest.client} waiting longest gave way")
            oldest.abort("gave way to a new connection")
        self._open[connection] = None
        self._fresh[connection] = None
        self._per_client[client] = self._per_client.get(client, 0) + 1
        return True

    def idle(self, connection: _Connection) -> None:
        """``connection`` was answered and waits for its next request."""
        self._idle[connection] = None

    def busy(self, connection: _Connection) -> None:
        """``connection`` is being answered: it never gives way."""
        self._fresh.pop(connection, None)
        self._idle.pop(connection, None)

    def release(self, connection: _Connection) -> None:
        if self._open.pop(connection, False) is None:
            self._fresh.pop(connection, None)
            self._idle.pop(connection, None)
            left = self._per_client[connection.client] - 1
            if left:
                self._per_client[connection.client] = left
            else:
                del self._per_client[connection.client]

    def _turn_away(self, why: str) -> None:
        log.debug("connection closed: %s", why)
        self._turned_away += 1
        now = time.monotonic()
        if now - self._reported >= _REPORT_EVERY:
            log.warning(
                "HTTP connection limits reached (%d open): %d connection(s) closed to make "
                "room or refused since the last report; latest: %s",
                len(self._open),
                self._turned_away,
                why,
            )
            self._turned_away = 0
            self._reported = now


class _Connection(asyncio.BufferedProtocol):
    """One client connection: TLS (if any), then request heads and answers, under deadlines.

    Until its first byte arrives a connection is a socket, this object and one timer: no
    read buffer (``Server.read_buffer`` is shared), no TLS state, no HTTP parser.
    """

    __slots__ = (
        "_h11",
        "_incoming",
        "_outgoing",
        "_paused_for_writing",
        "_phase",
        "_server",
        "_timer",
        "_tls",
        "_transport",
        "client",
        "peer",
        "task",
    )

    def __init__(self, server: Server) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._tls: ssl.SSLObject | None = None
        self._incoming: ssl.MemoryBIO | None = None
        self._outgoing: ssl.MemoryBIO | None = None
        self._h11: h11.Connection | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._phase = _CLOSED
        self._paused_for_writing = False
        self.client = ""
        self.peer: Any = None
        self.task: asyncio.Task[None] | None = None

    # --- asyncio's callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.peer = transport.get_extra_info("peername")
        self.client = _client_key(self.peer)
        if not self._server.admit(self):
            transport.abort()
            return
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        limits = self._server.limits
        if self._server.ssl_context is not None:
            self._enter(_HANDSHAKE, limits.tls_handshake_timeout)
        else:
            self._enter(_HEAD, limits.header_timeout)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._server.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(self._server.read_buffer[:nbytes])
        if self._phase == _CLOSED:
            return
        try:
            if self._server.ssl_context is None:
                self._received(data)
            else:
                self._received_tls(data)
        except Exception:  # a bug: said once, and this connection only is dropped
            log.exception("%s: connection failed", _show(self.peer))
            self.abort(None)

    def eof_received(self) -> bool:
        if self._phase == _ANSWER:
            assert self._h11 is not None
            self._h11.receive_data(b"")
            return True  # half-closed: the answer still goes out, then the close
        if self._phase in (_HEAD, _IDLE) and self._h11 is not None:
            self._received(b"")
        else:
            self.abort("closed by the client")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._phase != _CLOSED and exc is not None:
            log.debug("%s: connection lost: %s", _show(self.peer), _reason(exc))
        self._phase = _CLOSED
        self._cancel_timer()
        self._server.release(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()  # e.g. a bcrypt check nobody waits for any more

    def pause_writing(self) -> None:
        self._paused_for_writing = True
        self._set_timer(self._server.limits.write_timeout, "reading of the answer by the client")

    def resume_writing(self) -> None:
        self._paused_for_writing = False
        if self._phase == _ANSWER and self.task is None:
            self._next_request()

    # --- phases and deadlines ------------------------------------------------------------

    def _enter(self, phase: str, timeout: float) -> None:
        self._phase = phase
        self._set_timer(timeout, _WAITING_FOR[phase])

    def _set_timer(self, timeout: float, what: str) -> None:
        self._cancel_timer()
        self._timer = self._server.loop.call_later(timeout, self._expired, what, timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, what: str, timeout: float) -> None:
        self._timer = None
        self.abort(f"no {what} within {timeout:g} s")

    def abort(self, why: str | None) -> None:
        """Drop the connection at once (a deadline, room for another, the server stops)."""
        if why is not None:
            log.debug("%s: connection closed: %s", _show(self.peer), why)
        self._server.release(self)  # now: the count must be right before the next accept
        self._phase = _CLOSED
        self._cancel_timer()
        if self._transport is not None:
            self._transport.abort()

    def _close(self) -> None:
        """Close after what is still to send; a client that never reads it is dropped."""
        self._phase = _CLOSED
        self._cancel_timer()
        self._server.release(self)
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._tls is not None:
            with contextlib.suppress(ssl.SSLError, ValueError):
                self._tls.unwrap()  # our close_notify; the client's is not waited for
            self._flush_tls()
        transport.close()
        if transport.get_write_buffer_size():
            self._server.loop.call_later(self._server.limits.write_timeout, transport.abort)

    # --- bytes in ----------------------------------------------------------------------------

    def _received_tls(self, data: bytes) -> None:
        if self._tls is None:  # the first bytes: TLS state only now
            self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            assert self._server.ssl_context is not None
            self._tls = self._server.ssl_context.wrap_bio(
                self._incoming, self._outgoing, server_side=True
            )
        assert self._incoming is not None
        self._incoming.write(data)
        if self._phase == _HANDSHAKE:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush_tls()
                return
            except (ssl.SSLError, OSError) as exc:
                self._flush_tls()  # the alert, so that the client knows why
                self.abort(f"TLS handshake failed: {_reason(exc)}")
                return
            self._flush_tls()  # the handshake's last flight, session tickets
            self._enter(_HEAD, self._server.limits.header_timeout)
        plain: list[bytes] = []
        eof = False
        try:
            while True:
                chunk = self._tls.read(_READ_SIZE)
                if not chunk:  # the client's close_notify
                    eof = True
                    break
                plain.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLError, OSError) as exc:
            self.abort(f"TLS error: {_reason(exc)}")
            return
        self._flush_tls()
        if plain:
            self._received(b"".join(plain))
        if eof and self._phase != _CLOSED:
            self._received(b"")

    def _received(self, data: bytes) -> None:
        """Plain bytes from the client (b"" for its end), into the HTTP parser."""
        if self._h11 is None:  # the first bytes: a parser only now
            self._h11 = h11.Connection(
                h11.SERVER, max_incomplete_event_size=self._server.limits.max_head_bytes
            )
        if self._phase == _IDLE and data:  # a keep-alive request begins: its head deadline
            self._enter(_HEAD, self._server.limits.header_timeout)
        self._h11.receive_data(data)
        if self._phase == _HEAD or self._phase == _IDLE:
            self._next_event()

    def _next_event(self) -> None:
        peer = self._h11
        assert peer is not None
        method = "GET"  # until the head says otherwise: an error answer has a body
        try:
            event = peer.next_event()
            if isinstance(event, h11.Request):
                method = event.method.decode("latin-1")
                # h11 caps a head still incomplete; one that came whole in a read is
                # measured here.
                if _head_size(event) > self._server.limits.max_head_bytes:
                    raise h11.RemoteProtocolError("request head too large", 431)
                # A body is never expected (GET and HEAD only): rather than read it, close.
                close = not isinstance(peer.next_event(), h11.EndOfMessage)
                self._begin(_request(event, self.client), close)
            elif event is not h11.NEED_DATA:  # ConnectionClosed: the client is done
                self._close()
        except h11.RemoteProtocolError as exc:
            log.debug("%s: bad request: %s", _show(self.peer), _reason(exc))
            gone = peer.trailing_data[1]  # the client closed: nobody to tell
            if not gone and peer.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                self._phase = _ANSWER
                self._server.busy(self)
                self._respond(method, _error(exc.error_status_hint), close=True)
            self._close()

    # --- answers -------------------------------------------------------------------------------

    def _begin(self, request: Request, close: bool) -> None:
        self._phase = _ANSWER
        self._cancel_timer()
        self._server.busy(self)
        assert self._transport is not None
        self._transport.pause_reading()  # a pipelined request waits in the socket
        self.task = self._server.loop.create_task(self._answer(request, close))

    async def _answer(self, request: Request, close: bool) -> None:
        try:
            response = await self._server.handler(request)
        except Exception:
            log.exception("answering %s %s failed", request.method, request.path)
            response = Response(500, _TEXT, b"Internal server error\n")
        self.task = None
        if self._phase == _CLOSED:
            return
        self._respond(request.method, response, close)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                '%s "%s %s" %d %d',
                _show(self.peer),
                request.method,
                request.path,
                response.status,
                len(response.body),
            )
        if self._phase == _CLOSED:
            return
        peer = self._h11
        assert peer is not None
        if peer.our_state is not h11.DONE or peer.their_state is not h11.DONE:
            self._close()  # Connection: close, HTTP/1.0, or a body left unread
        elif not self._paused_for_writing:
            self._next_request()

    def _next_request(self) -> None:
        """Keep-alive: wait for the next request (it may be here already, pipelined)."""
        peer = self._h11
        assert peer is not None
        assert self._transport is not None
        peer.start_next_cycle()
        self._server.idle(self)
        limits = self._server.limits
        pipelined, closed = peer.trailing_data
        if pipelined:
            self._enter(_HEAD, limits.header_timeout)
        else:
            self._enter(_IDLE, limits.idle_timeout)
        self._transport.resume_reading()
        if pipelined or closed:
            self._next_event()

    def _respond(self, method: str, response: Response, close: bool) -> None:
        peer = self._h11
        assert peer is not None
        body = response.body
        headers = [(n.encode("ascii"), v.encode("latin-1")) for n, v in response.headers]
        headers.append((b"Content-Length", str(len(body)).encode("ascii")))
        headers.append((b"Date", _http_date()))
        if close:
            headers.append((b"Connection", b"close"))
        head = peer.send(
            h11.Response(
                status_code=response.status,
                headers=headers,
                reason=_REASONS.get(response.status, b""),
            )
        )
        assert head is not None
        if method == "HEAD" or not body:
            self._write(head)
        else:
            peer.send_with_data_passthrough(h11.Data(data=body))  # only counts the bytes
            if len(body) < _JOIN_BELOW:
                self._write(head + body)
            else:
                self._write(head)
                self._write(body)
        peer.send(h11.EndOfMessage())

    # --- bytes out ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        assert self._transport is not None
        if self._transport.is_closing():
            return
        if self._tls is None:
            self._transport.write(data)
            return
        view = memoryview(data)
        for start in range(0, len(view), _JOIN_BELOW):
            self._tls.write(view[start : start + _JOIN_BELOW])
            self._flush_tls()

    def _flush_tls(self) -> None:
        assert self._outgoing is not None
        assert self._transport is not None
        if self._outgoing.pending and not self._transport.is_closing():
            self._transport.write(self._outgoing.read())


_WAITING_FOR = {
    _HANDSHAKE: "TLS handshake",
    _HEAD: "complete request head",
    _IDLE: "request on the idle keep-alive connection",
}


def serve(
    handler: Handler,
    address: str,
    ssl_context: ssl.SSLContext | None = None,
    limits: Limits | None = None,
) -> Server:
    """Start serving ``handler`` on ``address`` (``HOST:PORT``; port 0 picks a free port).

    Binding happens here, in the caller's thread: a port that cannot be bound raises
    ``OSError`` at once.
    """
    host, port = parse_listen_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen((limits or Limits()).backlog)
        sock.setblocking(False)
        return Server(handler, sock, ssl_context, limits)
    except BaseException:
        sock.close()
        raise


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to the hard limit; the new soft limit.

    Every connection is a file descriptor; a soft limit of 1024 (the usual default outside
    containers) would be reached before the connection cap. Go programs do the same.
    """
    import resource  # POSIX only, like the rest of the daemon

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


def _import_h11() -> None:
    """Import h11 on the server's thread, once the socket listens.

    Importing it takes about 15 ms, a twentieth of the daemon's start-up; done here, it
    no longer delays the "listening" line, and the first poll needs it anyway (httpx
    speaks HTTP/1.1 through it).
    """
    global h11
    import h11


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
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else peer[0]
        return f"{host}:{peer[1]}"
    return str(peer)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _request(event: h11.Request, client: str) -> Request:
    target = event.target.decode("latin-1")
    if not target.startswith("/"):  # absolute form (http://host/path), or * (OPTIONS)
        target = urlsplit(target).path or target
    path, _, query = target.partition("?")
    headers: dict[str, str] = {}
    for raw_name, raw_value in event.headers:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return Request(event.method.decode("latin-1"), unquote(path, "latin-1"), headers, client, query)


def _head_size(event: h11.Request) -> int:
    size = len(event.method) + len(event.target) + 12
    for name, value in event.headers:
        size += len(name) + len(value) + 4
    return size


def _error(status: int) -> Response:
    return Response(status, _TEXT, f"{HTTPStatus(status).phrase}\n".encode())


def _quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Connection errors the loop reports (resets, failed handshakes) are debug lines."""
    exc = context.get("exception")
    if isinstance(exc, OSError) and not _out_of_resources(exc):
        log.debug("%s: %s", context.get("message", "connection error"), _reason(exc))
        return
    loop.default_exception_handler(context)


def _out_of_resources(exc: OSError) -> bool:
    import errno

    return exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


_date_cache: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode("ascii"))
    return _date_cache[1]


_REASONS = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}
_TEXT = (("Content-Type", "text/plain; charset=utf-8"),)
