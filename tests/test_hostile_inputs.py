"""Hostile inputs: an upstream that answers bombs, absurd numbers and cookies; files that
are not what they seem; text that would forge log lines. Real processes, real sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import bcrypt
import httpx
import pytest

from exporter.client import APIError, StatsClient
from exporter.config import load_apps, load_settings
from tests.conftest import SECRET_KEY, streaming_transport
from tests.pki import PKI
from tests.processes import Exporter, run_exporter_once
from tests.simulator import API_KEY_HEADER, Simulator, start_simulator

pytestmark = pytest.mark.slow

MIB = 1 << 20
EVIL_TEXT = "denied\n2026-01-01 INFO fake line\u2028more\u202egnp.exe\x1b[2J\u200b"


def gzipped(chunks: Iterator[bytes]) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return b"".join(compressor.compress(chunk) for chunk in chunks) + compressor.flush()


def zeros(size: int) -> Iterator[bytes]:
    block = b"0" * MIB  # the digit: a JSON number that never ends, were it ever read whole
    for _ in range(size // MIB):
        yield block


@cache
def bombs() -> dict[str, tuple[bytes, str]]:
    """Body and Content-Encoding of each bomb: 256 MiB in one layer, 1 GiB in two."""
    single = gzipped(zeros(256 * MIB))
    stacked = gzipped(iter([gzipped(zeros(1024 * MIB))]))
    return {"bomb": (single, "gzip"), "stacked": (stacked, "gzip, gzip")}


class HostileAPI(BaseHTTPRequestHandler):
    """Answers by API key: bombs, a count of 2^1024, cookies; a healthy app otherwise."""

    cookies_seen: list[tuple[str, str | None]]

    def do_GET(self) -> None:
        key = self.headers.get(API_KEY_HEADER, "")
        self.server.cookies_seen.append((key, self.headers.get("Cookie")))  # type: ignore[attr-defined]
        headers = [("Set-Cookie", f"session={key}-session; Path=/")]
        status = 200
        if key == "evil":
            status, body = 403, json.dumps({"errors": [EVIL_TEXT]}).encode()
        elif key in ("bomb", "stacked"):
            body, encoding = bombs()[key]
            headers.append(("Content-Encoding", encoding))
        elif "per-day" in self.path:
            body = b"{}"  # a quiet day
        elif key == "absurd":
            body = b'{"total": ' + str(2**1024).encode() + b"}"
        else:
            body = b'{"total": 5}'
        self.send_response(status)
        for name, value in [("Content-Type", "application/json"), *headers]:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), HostileAPI)
    server.cookies_seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def exporter_for(server: ThreadingHTTPServer, tmp_path: Path, *keys: str) -> Exporter:
    config = tmp_path / "apps.yml"
    config.write_text("apps:\n" + "".join(f"  - {{name: {key}, api_key: {key}}}\n" for key in keys))
    url = f"http://127.0.0.1:{server.server_address[1]}"
    return Exporter(
        ["--config-file", str(config), "--api-url", url, "--poll-interval-seconds", "2"]
    )


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def test_compressed_bombs_are_refused_within_the_memory_of_a_small_container(
    hostile: ThreadingHTTPServer, tmp_path: Path
) -> None:
    bombs()  # built before the exporter starts, so that its polls meet them at once
    process = exporter_for(hostile, tmp_path, "healthy", "bomb", "stacked")
    try:
        process.wait_for_value("connectycube_polls_total", 3, 30, app="bomb", outcome="failure")
        process.wait_for_value("connectycube_polls_total", 3, 30, app="stacked", outcome="failure")
        process.wait_for_value("connectycube_up", 1, app="healthy")
        before = process.value("connectycube_polls_total", app="healthy", outcome="success")
        assert before is not None
        # Two more of the healthy app's polls succeed (every 2 s; on a busy machine the
        # bombs' decompression may cost it one now and then).
        process.wait_for_value(
            "connectycube_polls_total", before + 2, 20, app="healthy", outcome="success"
        )
        assert process.value("connectycube_up", app="bomb") == 0
        assert process.value("connectycube_up", app="stacked") == 0
        assert peak_rss_mb(process.process.pid) < 300
        process.wait_for_log(r"app bomb: poll failed.*answer is larger than 1048576 bytes")
        process.wait_for_log(r"app stacked: poll failed.*stacked or unsupported Content-Encoding")
    finally:
        assert process.stop() == 0


def test_an_absurd_count_takes_down_only_its_app(
    hostile: ThreadingHTTPServer, tmp_path: Path
) -> None:
    process = exporter_for(hostile, tmp_path, "healthy", "absurd")
    try:
        process.wait_for_value("connectycube_up", 0, app="absurd")
        process.wait_for_value("connectycube_up", 1, app="healthy")
        for _ in range(5):
            response = process.get("/metrics")
            assert response.status_code == 200
        assert process.value("connectycube_messages_sent", app="healthy") == 5
        process.wait_for_log(r"app absurd: poll failed.*larger than 2\^53")
    finally:
        assert process.stop() == 0
    assert "Traceback" not in process.logs


def test_no_cookie_travels_between_apps(hostile: ThreadingHTTPServer, tmp_path: Path) -> None:
    process = exporter_for(hostile, tmp_path, "tenant-a", "tenant-b")
    try:
        process.wait_for_value("connectycube_polls_total", 3, 20, app="tenant-a", outcome="success")
        process.wait_for_value("connectycube_polls_total", 3, 20, app="tenant-b", outcome="success")
    finally:
        process.stop()
    seen = hostile.cookies_seen  # type: ignore[attr-defined]
    assert len(seen) >= 2 * 3 * 10
    assert [cookie for _, cookie in seen if cookie] == []


# --------------------------------------------------------------------------- files


@pytest.fixture
def special_key_files(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.key"
    with big.open("wb") as file:
        file.truncate(100 * MIB)  # sparse: 100 MB of zero bytes, no disk needed
    return {"fifo": fifo, "zero": Path("/dev/zero"), "big": big, "folder": tmp_path}


@pytest.mark.parametrize("kind", ["fifo", "zero", "big", "folder"])
def test_a_key_file_that_is_not_a_small_regular_file_is_a_configuration_error(
    special_key_files: dict[str, Path], kind: str
) -> None:
    started = time.monotonic()
    result = run_exporter_once(["--api-key-file", str(special_key_files[kind])])
    assert time.monotonic() - started < 15
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(
        "connectycube-exporter: configuration error: CONNECTYCUBE_API_KEY_FILE ("
    )
    assert "not a regular file" in line or "larger than 4096 bytes" in line


@pytest.mark.parametrize(
    "text", ["a: " + "[" * 100_000 + "]" * 100_000, "apps:\n  - &x {name: a, api_key: k}\n  - *x\n"]
)
def test_deep_or_aliased_yaml_is_a_configuration_error(tmp_path: Path, text: str) -> None:
    config = tmp_path / "apps.yml"
    config.write_text(text)
    result = run_exporter_once(["--config-file", str(config)])
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "nested deeper than" in line or "aliases" in line


@pytest.mark.parametrize("kind", ["fifo", "zero", "big"])
def test_a_reload_onto_a_special_key_file_keeps_the_running_configuration(
    special_key_files: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    sim = Simulator(api_keys=[SECRET_KEY], random_history=False)
    server = start_simulator(sim)
    key_file = tmp_path / "app.key"
    key_file.write_text(SECRET_KEY)
    config = tmp_path / "apps.yml"
    config.write_text(f"apps:\n  - {{name: prod, api_key_file: {key_file}}}\n")
    process = Exporter(
        ["--config-file", str(config), "--api-url", server.url, "--poll-interval-seconds", "0.3"]
    )
    try:
        process.wait_for_value("connectycube_up", 1, app="prod")
        key_file.unlink()
        key_file.symlink_to(special_key_files[kind])
        process.process.send_signal(signal.SIGHUP)
        process.wait_for_log("reload failed, the running configuration stays")
        polls = process.value("connectycube_polls_total", app="prod", outcome="success")
        assert polls is not None
        process.wait_for_value("connectycube_polls_total", polls + 3, app="prod", outcome="success")
    finally:
        code = process.stop()
        server.stop()
    assert code == 0


# --------------------------------------------------------------------------- backfill output


def run_backfill_to(
    output: str, cwd: Path, url: str = "http://127.0.0.1:9", **options: object
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTYCUBE_")}
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    return subprocess.run(
        [
            *(sys.executable, "-m", "exporter", "backfill", "--since", yesterday),
            *("--output", output, "--api-key", SECRET_KEY, "--api-url", url),
        ],
        env=env,
        cwd=cwd,
        capture_output="stdout" not in options,
        timeout=30,
        check=False,
        **options,  # type: ignore[arg-type]
    )


def test_backfill_never_replaces_a_device_a_fifo_or_a_link_to_one(tmp_path: Path) -> None:
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    link = tmp_path / "stdout-link"
    link.symlink_to("/dev/stdout")
    targets = {fifo: stat.S_ISFIFO, link: stat.S_ISLNK}
    if os.geteuid() == 0:  # only root may make a device node; CI runs as root
        device = tmp_path / "null-copy"
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        targets[device] = stat.S_ISCHR
    for target, still in targets.items():
        result = run_backfill_to(str(target), tmp_path)
        assert result.returncode == 2, result.stderr
        assert b"not a regular file" in result.stderr
        assert still(os.lstat(target).st_mode)


def test_backfill_writes_through_a_link_to_a_regular_file(
    simulator: tuple[Simulator, str], history: dict, tmp_path: Path
) -> None:
    real = tmp_path / "real.om"
    real.write_text("old\n")
    link = tmp_path / "link.om"
    link.symlink_to(real)
    result = run_backfill_to(str(link), tmp_path, simulator[1])
    assert result.returncode == 0, result.stderr
    assert link.is_symlink()
    assert "connectycube_messages_sent_today" in real.read_text()


def test_backfill_to_a_full_stdout_is_a_failure(
    simulator: tuple[Simulator, str], history: dict, tmp_path: Path
) -> None:
    with Path("/dev/full").open("wb") as full:
        result = run_backfill_to("-", tmp_path, simulator[1], stdout=full, stderr=subprocess.PIPE)
    assert result.returncode == 1
    assert b"No space left on device" in result.stderr


# --------------------------------------------------------------------------- logs


ENCODINGS = {
    "verbatim": SECRET_KEY,
    "lowercase": SECRET_KEY.lower(),
    "uppercase": SECRET_KEY.upper(),
    "percent": quote(SECRET_KEY, safe=""),
    "percent-all": "".join(f"%{byte:02X}" for byte in SECRET_KEY.encode()),
    "base64": base64.b64encode(SECRET_KEY.encode()).decode(),
    "hex": SECRET_KEY.encode().hex(),
}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_an_echoed_key_is_masked_in_any_case_and_encoding(encoding: str) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"errors": [f"bad key {ENCODINGS[encoding]}!"]})

    async def ask() -> str:
        async with httpx.AsyncClient(transport=streaming_transport(echo)) as http:
            [app] = load_apps(load_settings({"api_key": SECRET_KEY}))
            try:
                await StatsClient(http).total(app, "messages")
            except APIError as exc:
                return str(exc)
        raise AssertionError("the request did not fail")

    message = asyncio.run(ask())
    assert "bad key ***!" in message
    for spelling in ENCODINGS.values():
        assert spelling.lower() not in message.lower()


def test_text_from_the_api_cannot_forge_or_hide_log_lines(
    hostile: ThreadingHTTPServer, tmp_path: Path
) -> None:
    """Control characters, U+2028 and bidi overrides in an API's error text."""
    process = exporter_for(hostile, tmp_path, "evil")
    try:
        line = process.wait_for_log("access refused")
    finally:
        process.stop()
    assert "denied\\n2026-01-01 INFO fake line\\u2028more\\u202egnp.exe\\x1b[2J\\u200b" in line
    assert not any(char in process.logs for char in "\u2028\u202e\x1b\u200b")
    assert not any("fake line" in line and "INFO" in line[:40] for line in process.lines)


# --------------------------------------------------------------------------- logins


async def wrong_password_flood(url: str, clients: int, seconds: float) -> int:
    """``clients`` connections from 127.0.0.2 sending wrong passwords; requests sent."""
    port = int(url.rsplit(":", 1)[1])
    wrong = base64.b64encode(b"prometheus:not-the-password").decode()
    head = f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {wrong}\r\n\r\n".encode()
    sent = 0
    stop = time.monotonic() + seconds

    async def client() -> None:
        nonlocal sent
        while time.monotonic() < stop:
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=("127.0.0.2", 0)
                )
                while time.monotonic() < stop:
                    writer.write(head)
                    sent += 1
                    status = await asyncio.wait_for(reader.readline(), 5)
                    if not status:
                        break
                    length = 0
                    while (line := await reader.readline()) not in (b"\r\n", b""):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    await reader.readexactly(length)
                writer.close()
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                await asyncio.sleep(0.05)

    await asyncio.gather(*(client() for _ in range(clients)))
    return sent


def test_a_wrong_password_flood_does_not_lock_out_the_right_one(
    simulator: tuple[Simulator, str], history: dict, tmp_path: Path
) -> None:
    password = "the-right-password"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=12)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    process = Exporter(
        ["--api-url", simulator[1], "--web-config-file", str(web)],
        env={"CONNECTYCUBE_API_KEY": SECRET_KEY},
        auth=("prometheus", password),
    )
    try:
        process.wait_for_value("connectycube_up", 1, app="default")  # also caches the login
        results: list[float | None] = []
        flood = threading.Thread(
            target=lambda: results.append(asyncio.run(wrong_password_flood(process.url, 200, 15)))
        )
        flood.start()
        scrapes: list[bool] = []
        while flood.is_alive():
            started = time.monotonic()
            try:
                ok = process.get("/metrics").status_code == 200
            except httpx.HTTPError:
                ok = False
            scrapes.append(ok and time.monotonic() - started < 2)
            time.sleep(max(0.0, 0.25 - (time.monotonic() - started)))
        flood.join()
        assert results[0] is not None
        assert results[0] > 200  # the flood really ran
        assert sum(scrapes) >= 0.95 * len(scrapes), f"{sum(scrapes)} of {len(scrapes)}"
        # A password that starts right but goes on past bcrypt's 72 bytes is refused.
        too_long = httpx.get(
            process.url + "/metrics", auth=("prometheus", password + "x" * 80), timeout=5
        )
        assert too_long.status_code in (401, 429)
    finally:
        assert process.stop() == 0


def test_sigterm_during_password_checks_exits_cleanly(
    simulator: tuple[Simulator, str], tmp_path: Path
) -> None:
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=12)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    process = Exporter(
        ["--api-url", simulator[1], "--web-config-file", str(web)],
        env={"CONNECTYCUBE_API_KEY": SECRET_KEY},
    )
    flood = threading.Thread(
        target=lambda: asyncio.run(wrong_password_flood(process.url, 50, 3)), daemon=True
    )
    flood.start()
    time.sleep(1.5)  # bcrypt checks are running now
    code = process.stop()
    flood.join()
    assert code == 0, process.logs


def test_json_logging_covers_every_line(
    hostile: ThreadingHTTPServer, tmp_path: Path, pki: PKI
) -> None:
    """Failures from the API, a TLS client gone mid-request, a configuration error."""
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
    )
    config = tmp_path / "apps.yml"
    config.write_text("apps:\n  - {name: evil, api_key: evil}\n  - {name: bomb, api_key: bomb}\n")
    url = f"http://127.0.0.1:{hostile.server_address[1]}"
    process = Exporter(
        [
            *("--config-file", str(config), "--api-url", url, "--web-config-file", str(web)),
            *("--log-format", "json", "--log-level", "DEBUG"),
        ],
        verify=str(pki.ca),
    )
    try:
        process.wait_for_log("access refused")
        host, port = process.url.removeprefix("https://").rsplit(":", 1)
        context = ssl.create_default_context(cafile=str(pki.ca))
        for _ in range(20):  # gone in the middle of a request, after the handshake
            with (
                socket.create_connection((host, int(port))) as raw,
                context.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                tls.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    finally:
        assert process.stop() == 0
    refused = run_exporter_once(["--api-key-file", "/dev/zero", "--log-format", "json"])
    lines = [*process.lines, *refused.stderr.splitlines()]
    assert len(lines) > 5
    for line in lines:
        assert isinstance(json.loads(line), dict), line
