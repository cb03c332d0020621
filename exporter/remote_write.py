"""Prometheus remote write 1.0: series sent as snappy-compressed protobuf ``WriteRequest``s.

What Prometheus (``--web.enable-remote-write-receiver``), Mimir, Thanos Receive,
VictoriaMetrics and Grafana Cloud accept. The ``WriteRequest`` is encoded here by hand:
it is three tiny messages (labels and samples of time series), far less code than the
protobuf runtime and generated classes would be; snappy's block format comes from
``cramjam``. Batches go in time order (every series' samples of the earliest moments
first), so that each series is appended in order; a batch is retried on 5xx and 429
(after ``Retry-After`` when given), never on other 4xx.
"""

from __future__ import annotations

import ssl
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import cramjam
import httpx

from exporter.client import parse_retry_after

PROTOCOL_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
BATCH_SAMPLES = 2000  # per request, as Prometheus's own max_samples_per_send order of size
ATTEMPTS = 5  # per batch
FIRST_BACKOFF = 0.5  # seconds, doubled after each failed attempt
MAX_RETRY_AFTER = 300.0  # seconds: a longer Retry-After is waited out this long only
TIMEOUT = 30.0

Labels = Sequence[tuple[str, str]]


class RemoteWriteError(Exception):
    """The endpoint refused a batch or could not be reached; one line for the user."""


# ------------------------------------------------------------------ the WriteRequest


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings and embedded messages."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _sample(value: float, millis: int) -> bytes:
    # Sample: 1 double value (wire type 1, little endian), 2 int64 timestamp (varint).
    return b"\x09" + struct.pack("<d", value) + b"\x10" + _varint(millis & (1 << 64) - 1)


def write_request(series: Sequence[tuple[Labels, Sequence[tuple[int, float]]]]) -> bytes:
    """``WriteRequest{timeseries: [TimeSeries{labels, samples}]}`` for ``series`` of
    (labels with ``__name__``, [(unix milliseconds, value)]); labels sorted by name."""
    parts = []
    for labels, samples in series:
        body = b"".join(
            _field(1, _field(1, name.encode()) + _field(2, value.encode()))
            for name, value in sorted(labels)
        )
        body += b"".join(_field(2, _sample(value, millis)) for millis, value in samples)
        parts.append(_field(1, body))
    return b"".join(parts)


def compress(payload: bytes) -> bytes:
    """Snappy's block format (not its framed one), as remote write wants."""
    return bytes(cramjam.snappy.compress_raw(payload))


# ------------------------------------------------------------------ the endpoint


@dataclass(frozen=True)
class Endpoint:
    """Where to send and how."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()
    username: str | None = None
    password: str | None = None
    bearer_token: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def shown(self) -> str:
        """The URL without credentials or query string, for messages."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"

    def redact(self, text: str) -> str:
        """``text`` without the URL's credentials and query, the password or the token (an
        endpoint or proxy may echo them)."""
        text = text.replace(self.url, self.shown)
        for secret in (self.password, self.bearer_token, urlsplit(self.url).password):
            if secret:
                text = text.replace(secret, "***")
        return text

    def client(self) -> httpx.Client:
        verify: ssl.SSLContext | bool = True
        if self.ca_file or self.cert_file:
            verify = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file:
                verify.load_cert_chain(self.cert_file, self.key_file)
        headers = dict(self.headers)
        if self.bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.bearer_token}"
        auth = None
        if self.username is not None:
            auth = httpx.BasicAuth(self.username, self.password or "")
        headers.update(PROTOCOL_HEADERS)
        # As the API client: HTTPS_PROXY, NO_PROXY and SSL_CERT_FILE apply.
        return httpx.Client(headers=headers, auth=auth, verify=verify, timeout=TIMEOUT)


# ------------------------------------------------------------------ sending


@dataclass(frozen=True)
class Batch:
    series: list[tuple[Labels, list[tuple[int, float]]]]
    samples: int
    moments_done: int  # how many of the moments are complete once this batch is in


def batches(
    series: Sequence[tuple[Labels, Sequence[float]]],
    stamps: Sequence[int],
    limit: int = BATCH_SAMPLES,
) -> Iterator[Batch]:
    """The samples of ``series`` (one value per stamp, unix seconds) in batches of at most
    ``limit`` samples, the earliest moments first."""
    pending: dict[int, list[tuple[int, float]]] = {}
    count = 0

    def cut(done: int) -> Batch:
        nonlocal pending, count
        batch = Batch([(series[i][0], samples) for i, samples in pending.items()], count, done)
        pending, count = {}, 0
        return batch

    for moment, stamp in enumerate(stamps):
        for i, (_, values) in enumerate(series):
            if count == limit:
                yield cut(moment)
            pending.setdefault(i, []).append((stamp * 1000, float(values[moment])))
            count += 1
    if count:
        yield cut(len(stamps))


def retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After", ""), MAX_RETRY_AFTER)


def _message(response: httpx.Response) -> str:
    """The endpoint's own message, on one line and short."""
    text = " ".join(response.text.split())
    text = text[:300] + ("..." if len(text) > 300 else "")
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")


def send(
    endpoint: Endpoint,
    work: Iterator[Batch],
    on_batch: Callable[[Batch], None] = lambda batch: None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """POST every batch in turn; ``on_batch`` after each one the endpoint accepted. A
    batch refused for good, or not delivered after ``ATTEMPTS``, raises
    ``RemoteWriteError`` with the endpoint's own message."""
    with endpoint.client() as client:
        for batch in work:
            body = compress(write_request(batch.series))
            for attempt in range(1, ATTEMPTS + 1):
                wait = FIRST_BACKOFF * 2 ** (attempt - 1)
                try:
                    response = client.post(endpoint.url, content=body)
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                else:
                    if response.is_success:
                        break
                    problem = _message(response)
                    retried = response.status_code == 429 or response.status_code >= 500
                    if not retried:
                        raise RemoteWriteError(endpoint.redact(problem))
                    wait = retry_after(response) or wait
                if attempt == ATTEMPTS:
                    raise RemoteWriteError(
                        endpoint.redact(f"{problem} (after {ATTEMPTS} attempts)")
                    )
                sleep(wait)
            on_batch(batch)
