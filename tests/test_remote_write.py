"""``backfill --remote-write-url``: the history straight into a real Prometheus's
remote-write receiver, and the endpoints that refuse, fail for a while or are not there.

Expected counts come from the simulator's ground truth; the receiver is the machine's
``prometheus`` with ``--web.enable-remote-write-receiver`` and an out-of-order window.
"""

from __future__ import annotations

import base64
import email.utils
import itertools
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cramjam
import httpx
import pytest

from exporter.remote_write import MAX_RETRY_AFTER, Batch, batches, retry_after, write_request
from tests.conftest import require_tool
from tests.pki import PKI
from tests.prometheus_server import PrometheusServer, free_port
from tests.simulator import (
    DIALOGS_PER_DAY_PATH,
    MESSAGES_PER_DAY_PATH,
    Simulator,
    start_simulator,
)
from tests.test_backfill import (
    DIALOG_TYPES,
    JOB_LABELS,
    KEY,
    last_second,
    local_today,
    midnight,
    run_backfill,
)

DAYS = 40
PASSWORD = "rw-password-Xq81"
TOKEN = "rw-token-Lk29"


# ------------------------------------------------------------------ the encoding


def test_write_request_is_the_protobuf_prometheus_reads() -> None:
    """Checked byte for byte against the protobuf wire format, worked out by hand."""
    labels = [("job", "j"), ("__name__", "m")]  # sent sorted by name
    encoded = write_request([(labels, [(1000, 1.0)])])
    label_name = b"\x0a\x0d" + b"\x0a\x08__name__" + b"\x12\x01m"  # field 1, 13 bytes
    label_job = b"\x0a\x08" + b"\x0a\x03job" + b"\x12\x01j"
    # field 2, 12 bytes: a double 1.0 (little endian), then the varint 1000 (e8 07)
    sample = b"\x12\x0c" + b"\x09" + bytes.fromhex("000000000000f03f") + b"\x10\xe8\x07"
    series = label_name + label_job + sample
    assert encoded == b"\x0a" + bytes([len(series)]) + series


def test_batches_are_bounded_and_in_time_order() -> None:
    series = [((("__name__", f"m{i}"),), [10 * i + day for day in range(7)]) for i in range(3)]
    stamps = [100 * day for day in range(7)]
    found: list[Batch] = list(batches(series, stamps, limit=4))
    assert [batch.samples for batch in found] == [4, 4, 4, 4, 4, 1]
    assert [batch.moments_done for batch in found] == [1, 2, 4, 5, 6, 7]
    sent: list[tuple[str, int, float]] = []
    for batch, following in itertools.pairwise(found):  # batches follow in time
        latest = max(millis for _, samples in batch.series for millis, _ in samples)
        assert latest <= min(millis for _, samples in following.series for millis, _ in samples)
    for batch in found:
        for labels, samples in batch.series:
            sent += [(dict(labels)["__name__"], millis, value) for millis, value in samples]
    for name in ("m0", "m1", "m2"):  # each series in time order
        stamps_sent = [millis for sent_name, millis, _ in sent if sent_name == name]
        assert stamps_sent == sorted(stamps_sent)
    assert sorted(sent) == sorted(
        (f"m{i}", 100_000 * day, float(10 * i + day)) for i in range(3) for day in range(7)
    )


# ------------------------------------------------------------------ a real receiver


@pytest.fixture(scope="module")
def simulated() -> Iterator[tuple[Simulator, str]]:
    sim = Simulator(api_keys=[KEY], timezone="Asia/Kolkata", history_days=320, seed=4)
    server = start_simulator(sim)
    yield sim, server.url
    server.stop()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[PrometheusServer]:
    require_tool("prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 15s\nscrape_configs: []\n"
        "storage:\n  tsdb:\n    out_of_order_time_window: 400d\n"
    )
    with PrometheusServer(
        config,
        tmp_path / "data",
        extra_args=["--web.enable-remote-write-receiver", "--storage.tsdb.retention.time=10y"],
    ) as prometheus:
        yield prometheus


ZONE = "Asia/Kolkata"


def backfill_to(url: str, endpoint: str, since: date, *args: str) -> Any:
    return run_backfill(
        url,
        "--since",
        str(since),
        "--remote-write-url",
        endpoint,
        *JOB_LABELS,
        *args,
        timezone=ZONE,
    )


@pytest.mark.slow
def test_every_day_reaches_prometheus_exactly_and_again(
    simulated: tuple[Simulator, str], receiver: PrometheusServer
) -> None:
    sim, url = simulated
    since = local_today(ZONE) - timedelta(DAYS)
    days = [since + timedelta(i) for i in range(DAYS)]
    last = days[-1]
    endpoint = f"{receiver.url}/api/v1/write"
    for run in range(2):
        result = backfill_to(url, endpoint, since)
        assert result.returncode == 0, result.stderr
        assert (
            f"wrote {endpoint}: {DAYS} days ({since} to {last}, {ZONE}), {DAYS * 15} samples"
            in (result.stderr)
        ), run
        assert KEY not in result.stderr + result.stdout

        def at_end(expr: str, day: date) -> dict[str, int]:
            found = receiver.query(expr, at=last_second(day, ZONE))
            return {s["metric"].get("dialog_type", ""): int(float(s["value"][1])) for s in found}

        truth = sim.per_day(
            KEY, "messages", midnight(since, ZONE), midnight(last + timedelta(1), ZONE), ZONE
        )
        for day in days:
            assert at_end('connectycube_messages_sent_today{job="connectycube"}', day) == {
                "": truth.get(day.isoformat(), 0)
            }, (run, day)
            end = midnight(day + timedelta(1), ZONE)
            assert at_end("connectycube_dialogs_created", day) == {
                name: sim.count(KEY, code, None, end) for code, name in DIALOG_TYPES.items()
            }
        # One sample a day in each of the 15 series, however many runs: none written twice.
        window = f"[{DAYS + 2}d]"
        [count] = receiver.query(
            f'count_over_time(connectycube_messages_sent_yesterday{{app="default"}}{window})',
            at=last_second(last, ZONE),
        )
        assert count["value"][1] == str(DAYS)
        assert count["metric"] == {
            "app": "default",
            "job": "connectycube",
            "instance": "exporter:19742",
        }
        found = receiver.api(
            "series",
            **{"match[]": '{__name__=~"connectycube_.+"}'},
            start=midnight(since, ZONE),
            end=last_second(last, ZONE),
        )
        assert len(found) == 15


# ------------------------------------------------------------------ endpoints that fail


class Endpoint:
    """A remote-write endpoint that answers a script of (status, headers, body), then 204."""

    def __init__(
        self, script: list[tuple[int, dict[str, str], str]], tls: ssl.SSLContext | None = None
    ) -> None:
        self.script = list(script)
        self.requests: list[tuple[float, dict[str, str], bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.requests.append((time.monotonic(), dict(self.headers), body))
                status, headers, text = owner.script.pop(0) if owner.script else (204, {}, "")
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/api/v1/push"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[type[Endpoint]]:
    started: list[Endpoint] = []

    def start(
        script: list[tuple[int, dict[str, str], str]], tls: ssl.SSLContext | None = None
    ) -> Endpoint:
        started.append(Endpoint(script, tls))
        return started[-1]

    yield start  # type: ignore[misc]
    for one in started:
        one.stop()


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.slow
def test_a_refused_batch_stops_the_run_with_the_endpoints_message(
    simulated: tuple[Simulator, str], endpoint: Any
) -> None:
    """The first batch goes in, the second is refused (400): no retry, exit 1, one line."""
    _, url = simulated
    refusing = endpoint([(204, {}, ""), (400, {}, "out of bounds: sample too old\n")])
    since = local_today(ZONE) - timedelta(300)
    result = backfill_to(url, refusing.url, since)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "failed: remote write: HTTP 400: out of bounds: sample too old;" in line
    assert f"133 of 300 days written to {refusing.url}" in line  # 2000 samples, 15 a day
    assert len(refusing.requests) == 2


@pytest.mark.slow
def test_a_failing_endpoint_is_retried_after_retry_after_with_credentials_and_headers(
    simulated: tuple[Simulator, str], endpoint: Any, tmp_path: Path
) -> None:
    _, url = simulated
    flaky = endpoint([(503, {"Retry-After": "1"}, "busy"), (429, {}, "slow down")])
    (tmp_path / "password").write_text(PASSWORD + "\n")
    since = local_today(ZONE) - timedelta(10)
    result = backfill_to(
        url,
        flaky.url,
        since,
        "--remote-write-username",
        "tenant-1",
        "--remote-write-password-file",
        str(tmp_path / "password"),
        "--remote-write-header",
        "X-Scope-OrgID=tenant-1",
    )
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    assert len(flaky.requests) == 3
    (first, _, body), (second, _, _), (_, headers, last_body) = flaky.requests
    assert second - first >= 1  # Retry-After: 1
    assert body == last_body
    assert headers["Content-Encoding"] == "snappy"
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    assert headers["X-Scope-OrgID"] == "tenant-1"
    assert (
        headers["Authorization"]
        == "Basic " + base64.b64encode(f"tenant-1:{PASSWORD}".encode()).decode()
    )
    payload = bytes(cramjam.snappy.decompress_raw(body))
    assert b"connectycube_messages_sent_today" in payload
    for _, sent_headers, sent_body in flaky.requests:  # the ConnectyCube key stays home
        assert KEY not in str(sent_headers)
        assert KEY.encode() not in bytes(cramjam.snappy.decompress_raw(sent_body))


@pytest.mark.slow
def test_nothing_is_sent_when_the_api_fails(
    served: Callable[[Simulator], str], endpoint: Any
) -> None:
    """The API answers 403 to the dialogs' per-day pages: the messages are all in, and
    still not one request reaches the endpoint."""
    sim = Simulator(api_keys=[KEY], timezone=ZONE, history_days=40)
    sim.set_faults(status=403, paths=[DIALOGS_PER_DAY_PATH])
    waiting = endpoint([])
    result = backfill_to(served(sim), waiting.url, local_today(ZONE) - timedelta(30))
    assert result.returncode == 1
    assert "failed, nothing written" in one_line(result.stderr)
    assert sim.stats()["by_path"][MESSAGES_PER_DAY_PATH] > 0
    assert waiting.requests == []


@pytest.mark.slow
def test_a_bearer_token_is_sent_and_never_shown(
    simulated: tuple[Simulator, str], endpoint: Any, tmp_path: Path
) -> None:
    _, url = simulated
    refusing = endpoint([(401, {}, f"bad token: {TOKEN}")])  # a proxy may echo it
    (tmp_path / "token").write_text(TOKEN)
    result = backfill_to(
        url,
        refusing.url,
        local_today(ZONE) - timedelta(3),
        "--remote-write-bearer-token-file",
        str(tmp_path / "token"),
    )
    assert result.returncode == 1
    assert "HTTP 401: bad token: ***; 0 of 3 days written" in one_line(result.stderr)
    assert TOKEN not in result.stderr + result.stdout
    [(_, headers, _)] = refusing.requests
    assert headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.slow
def test_an_unreachable_endpoint_fails_in_one_line(simulated: tuple[Simulator, str]) -> None:
    _, url = simulated
    nowhere = f"http://user:{PASSWORD}@127.0.0.1:{free_port()}/api/v1/write?secret={TOKEN}"
    result = backfill_to(url, nowhere, local_today(ZONE) - timedelta(3))
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "failed: remote write: ConnectError" in line
    assert "(after 5 attempts); 0 of 3 days written to http://127.0.0.1:" in line
    assert PASSWORD not in line
    assert TOKEN not in line


@pytest.mark.slow
def test_tls_with_a_client_certificate(
    simulated: tuple[Simulator, str], endpoint: Any, pki: PKI
) -> None:
    """An endpoint of a private CA that wants a client certificate: given, it is in."""
    _, url = simulated
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    tls.load_cert_chain(pki.server_cert, pki.server_key)
    tls.verify_mode = ssl.CERT_REQUIRED
    secure = endpoint([], tls)
    since = local_today(ZONE) - timedelta(3)
    ca = ["--remote-write-ca-file", str(pki.ca)]
    client = ["--remote-write-cert-file", str(pki.client_cert)]
    client += ["--remote-write-key-file", str(pki.client_key)]
    result = backfill_to(url, secure.url, since, *ca, *client)
    assert result.returncode == 0, result.stderr
    assert len(secure.requests) == 1
    unknown_ca = backfill_to(url, secure.url, since, *client)  # the system's CAs only
    assert unknown_ca.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in one_line(unknown_ca.stderr)
    assert len(secure.requests) == 1


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--remote-write-url", "ftp://x/"], "is not an http(s) URL"),
        (
            ["--remote-write-url", "http://x/", "--remote-write-username", "u"],
            "needs --remote-write-password-file",
        ),
        (["--output", "-", "--remote-write-username", "u"], "needs --remote-write-url"),
        (
            ["--remote-write-url", "http://x/", "--remote-write-header", "Content-Type=x"],
            "set by the remote-write protocol",
        ),
        (["--remote-write-url", "http://x/", "--remote-write-header", "X"], "is not NAME=VALUE"),
        (["--remote-write-url", "http://x/", "--remote-write-cert-file", "c"], "go together"),
        (
            ["--remote-write-url", "http://x/", "--remote-write-bearer-token-file", "/nonexistent"],
            "cannot read",
        ),
        (["--output", "x", "--remote-write-url", "http://x/"], "not allowed with argument"),
    ],
)
def test_bad_remote_write_arguments_are_exit_2(args: list[str], problem: str) -> None:
    since = str(local_today() - timedelta(3))
    result = run_backfill("http://127.0.0.1:9/", "--since", since, *args)
    assert result.returncode == 2, result.stderr
    assert problem in one_line(result.stderr)


def test_retry_after_in_seconds_or_as_a_date_and_capped() -> None:
    def wait(value: str) -> float | None:
        return retry_after(httpx.Response(503, headers={"Retry-After": value}))

    assert wait("7") == 7
    assert wait("86400") == MAX_RETRY_AFTER
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert 100 < (wait(later) or 0) <= 120
    assert wait(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0
    assert wait("soon") is None
    assert retry_after(httpx.Response(503)) is None
