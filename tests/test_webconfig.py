"""The web configuration file: parsing, errors, basic auth and real TLS handshakes."""

from __future__ import annotations

import base64
import ssl
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from exporter import webconfig
from exporter.webconfig import WebConfig, WebConfigError, load_web_config
from tests.conftest import SECRET_KEY
from tests.pki import PKI
from tests.processes import run_exporter_once

PASSWORD = "correct horse"
# Fast hashes (cost 4) keep the tests quick; the code does not depend on the cost.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


def _write(directory: Path, text: str) -> Path:
    path = directory / "web-config.yml"
    path.write_text(text)
    return path


def _tls_config(pki: PKI, extra: str = "") -> str:
    return (
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n{extra}"
    )


# --- loading valid files -----------------------------------------------------------------


def test_no_file_means_plain_http_without_auth() -> None:
    config = load_web_config(None)
    assert config == WebConfig(None, {}, ())
    assert config.authorized(None)


def test_empty_file_is_no_restriction(tmp_path: Path) -> None:
    config = load_web_config(_write(tmp_path, "# nothing yet\n"))
    assert config.ssl_context is None
    assert config.users == {}
    assert config.headers == ()


def test_tls_only(pki: PKI) -> None:
    config = load_web_config(_write(pki.dir, _tls_config(pki)))
    context = config.ssl_context
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2  # the toolkit's default
    assert context.maximum_version == ssl.TLSVersion.TLSv1_3
    assert context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert config.users == {}
    assert config.authorized(None)


def test_relative_paths_are_relative_to_the_file(pki: PKI) -> None:
    text = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
    assert load_web_config(_write(pki.dir, text)).ssl_context is not None


@pytest.mark.parametrize(
    ("client_auth_type", "verify_mode"),
    [
        ("RequestClientCert", ssl.CERT_NONE),
        ("RequireAnyClientCert", ssl.CERT_REQUIRED),
        ("RequireClientCert", ssl.CERT_REQUIRED),
        ("VerifyClientCertIfGiven", ssl.CERT_OPTIONAL),
        ("RequireAndVerifyClientCert", ssl.CERT_REQUIRED),
    ],
)
def test_mutual_tls(pki: PKI, client_auth_type: str, verify_mode: ssl.VerifyMode) -> None:
    extra = f"  client_auth_type: {client_auth_type}\n  client_ca_file: {pki.ca}\n"
    context = load_web_config(_write(pki.dir, _tls_config(pki, extra))).ssl_context
    assert context is not None
    assert context.verify_mode == verify_mode


def test_inline_pem(pki: PKI) -> None:
    def block(path: Path) -> str:
        return "\n".join("    " + line for line in path.read_text().splitlines())

    text = (
        "tls_server_config:\n"
        f"  cert: |\n{block(pki.server_cert)}\n"
        f"  key: |\n{block(pki.server_key)}\n"
        f"  client_ca: |\n{block(pki.ca)}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
    )
    context = load_web_config(_write(pki.dir, text)).ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.cert_store_stats()["x509_ca"] == 1


def test_tls_tuning(pki: PKI) -> None:
    extra = (
        "  min_version: TLS13\n"
        "  max_version: TLS13\n"
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n"
        "  prefer_server_cipher_suites: false\n"
        "  curve_preferences: [X25519]\n"
    )
    context = load_web_config(_write(pki.dir, _tls_config(pki, extra))).ssl_context
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert not context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == {"ECDHE-ECDSA-AES128-GCM-SHA256"}


def test_several_curves_and_http2_are_accepted(pki: PKI) -> None:
    extra = "  curve_preferences: [CurveP256, CurveP384, CurveP521, X25519]\n"
    text = _tls_config(pki, extra) + "http_server_config:\n  http2: false\n"
    assert load_web_config(_write(pki.dir, text)).ssl_context is not None


def test_basic_auth_only(tmp_path: Path) -> None:
    config = load_web_config(_write(tmp_path, f"basic_auth_users:\n  alice: '{HASH}'\n"))
    assert config.ssl_context is None
    assert config.users == {"alice": HASH.encode()}
    assert config.authorized(_basic("alice", PASSWORD))
    assert HASH not in repr(config)


def test_headers(tmp_path: Path) -> None:
    text = (
        "http_server_config:\n"
        "  headers:\n"
        "    X-Frame-Options: deny\n"
        "    X-Content-Type-Options: nosniff\n"
        "    X-XSS-Protection: 0\n"
        "    Content-Security-Policy: ''\n"  # blank means unset
        "    Strict-Transport-Security: max-age=31536000; includeSubDomains\n"
    )
    assert load_web_config(_write(tmp_path, text)).headers == (
        ("X-Frame-Options", "deny"),
        ("X-Content-Type-Options", "nosniff"),
        ("X-XSS-Protection", "0"),
        ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
    )


# --- errors ------------------------------------------------------------------------------

TLS = "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
ERRORS = [
    ("basic_auth_users:\n  alice: {hash}: oops\n", "invalid YAML at line 2"),
    ("- a\n- list\n", "mapping of settings"),
    ("tls_config: {{}}\n", "tls_config: unknown key"),
    (TLS + "  client_auth: RequireAndVerifyClientCert\n", "tls_server_config.client_auth"),
    ("http_server_config:\n  http3: true\n", "http_server_config.http3: unknown key"),
    (TLS + "  min_version: 12\n", "tls_server_config.min_version: Input should be"),
    ("basic_auth_users: [alice]\n", "basic_auth_users: Input should be a valid dictionary"),
    ("tls_server_config: 5\n", "tls_server_config: Input should be a valid dictionary"),
    ("tls_server_config:\n  key_file: {key}\n", "cert_file (or cert) is required"),
    ("tls_server_config:\n  cert_file: {cert}\n", "key_file (or key) is required"),
    ("tls_server_config:\n  min_version: TLS13\n", "cert_file (or cert) is required"),
    (TLS + "  cert: inline\n", "give cert or cert_file, not both"),
    ("tls_server_config:\n  cert_file: nope.crt\n  key_file: {key}\n", "cannot read"),
    ("tls_server_config:\n  cert_file: {cert}\n  key_file: {client_key}\n", "does not match"),
    ("tls_server_config:\n  cert_file: {key}\n  key_file: {key}\n", "not a PEM certificate"),
    ("tls_server_config:\n  cert_file: {cert}\n  key_file: {cert}\n", "not a PEM private key"),
    ("tls_server_config:\n  cert_file: {cert}\n  key_file: {encrypted}\n", "is encrypted"),
    (
        "tls_server_config:\n  cert_file: {cert}\n  key: '-----BEGIN PRIVATE KEY-----'\n",
        "cannot load cert_file",
    ),
    (TLS + "  client_auth_type: VerifyAll\n", "client_auth_type: unknown value"),
    (TLS + "  client_auth_type: RequireAndVerifyClientCert\n", "needs client_ca_file"),
    (TLS + "  client_auth_type: RequireAnyClientCert\n", "needs client_ca_file"),
    (TLS + "  client_ca_file: {ca}\n", "client_auth_type is NoClientCert"),
    (
        TLS + "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: {key}\n",
        "cannot load client_ca_file",
    ),
    (TLS + "  min_version: SSL3\n", "min_version: unknown TLS version"),
    (TLS + "  min_version: TLS13\n  max_version: TLS12\n", "above max_version"),
    (TLS + "  cipher_suites: [RC4]\n", "unknown cipher 'RC4'"),
    (TLS + "  curve_preferences: [CurveP224]\n", "unknown curve 'CurveP224'"),
    (TLS + "  client_allowed_sans: [client]\n", "client_allowed_sans: not supported"),
    ("rate_limit:\n  interval: 1s\n  burst: 10\n", "rate_limit: not supported"),
    ("basic_auth_users:\n  alice: hunter2-plain\n", "user 'alice': the password is not a"),
    ("basic_auth_users:\n  'a:b': '{hash}'\n", "have no ':'"),
    ("basic_auth_users:\n  alice: '{hash}'\n  alice: '{hash}'\n", "duplicate key 'alice'"),
    ("basic_auth_users:\n  123: '{hash}'\n", "basic_auth_users[123]: each key must be a string"),
    ("http_server_config:\n  headers:\n    Server: x\n", "can not be configured"),
    ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "one of deny"),
    (
        'http_server_config:\n  headers:\n    X-XSS-Protection: "1\\r\\nSet-Cookie: a=b"\n',
        "control",
    ),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS)
def test_error(pki: PKI, tmp_path: Path, text: str, expected: str) -> None:
    key_text = pki.server_key.read_text()
    path = _write(
        tmp_path,
        text.format(
            cert=pki.server_cert,
            key=pki.server_key,
            client_key=pki.client_key,
            encrypted=pki.encrypted_key,
            ca=pki.ca,
            hash=HASH,
        ),
    )
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    message = str(caught.value)
    assert expected in message
    assert "instance of" not in message  # never a class name of ours
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    for secret in (HASH, "hunter2", key_text.splitlines()[1], "pass-phrase"):
        assert secret not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError, match=r"web\.yml: cannot read the file"):
        load_web_config(tmp_path / "web.yml")


# --- basic auth --------------------------------------------------------------------------


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def users_config(tmp_path: Path) -> WebConfig:
    other = bcrypt.hashpw(b"other", bcrypt.gensalt(rounds=4)).decode()
    text = f"basic_auth_users:\n  alice: '{HASH}'\n  bob: '{other}'\n  émile: '{HASH}'\n"
    return load_web_config(_write(tmp_path, text))


@pytest.fixture
def checkpw_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Counts bcrypt checks; each entry is the hash checked against."""
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    return calls


def test_right_password(users_config: WebConfig) -> None:
    assert users_config.authorized(_basic("alice", PASSWORD))
    assert users_config.authorized(_basic("bob", "other"))
    assert users_config.authorized(_basic("émile", PASSWORD))
    assert users_config.authorized("basic " + _basic("alice", PASSWORD)[6:])  # any case


def test_password_may_hold_colons(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"a:b:c", bcrypt.gensalt(rounds=4)).decode()
    config = load_web_config(_write(tmp_path, f"basic_auth_users:\n  u: '{hashed}'\n"))
    assert config.authorized(_basic("u", "a:b:c"))


def test_wrong_password(users_config: WebConfig) -> None:
    assert not users_config.authorized(_basic("alice", "wrong"))
    assert not users_config.authorized(_basic("bob", PASSWORD))  # another user's password
    assert not users_config.authorized(_basic("alice", ""))
    assert not users_config.authorized(_basic("alice", "x" * 100))  # over bcrypt's 72 bytes


def test_unknown_user_costs_a_bcrypt_check(
    users_config: WebConfig, checkpw_calls: list[bytes]
) -> None:
    assert not users_config.authorized(_basic("mallory", PASSWORD))
    assert not users_config.authorized(_basic("", PASSWORD))
    # Each unknown user paid for one check, against a hash of the configured cost.
    assert len(checkpw_calls) == 2
    assert all(hashed.startswith(b"$2b$04$") for hashed in checkpw_calls)
    assert HASH.encode() not in checkpw_calls


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "Basic",
        "Basic ",
        "Bearer " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode(),
        "Basic !!!not-base64!!!",
        "Basic YWxpY2U",  # "alice" with the padding cut off
        "Basic " + base64.b64encode(b"alice").decode(),  # no colon
        "Basic " + base64.b64encode(b"\xff\xfe:" + PASSWORD.encode()).decode(),  # not UTF-8
        "Basic Ã©Ã©Ã©",  # non-ASCII, as the server hands latin-1 headers over
        "Digest username=alice",
    ],
)
def test_malformed_header(
    users_config: WebConfig, checkpw_calls: list[bytes], header: str | None
) -> None:
    assert users_config.authorized(header) is False
    assert checkpw_calls == []  # refused before any bcrypt work


def test_successful_checks_are_cached(users_config: WebConfig, checkpw_calls: list[bytes]) -> None:
    for _ in range(5):
        assert users_config.authorized(_basic("alice", PASSWORD))
    assert len(checkpw_calls) == 1
    # Failures are not cached: they could otherwise evict real scrapers' entries.
    for _ in range(3):
        assert not users_config.authorized(_basic("alice", "wrong"))
    assert len(checkpw_calls) == 4
    # Another user, or a reloaded file with its own cache, checks again.
    assert users_config.authorized(_basic("bob", "other"))
    assert len(checkpw_calls) == 5


def test_cache_is_bounded(tmp_path: Path, checkpw_calls: list[bytes]) -> None:
    users = [f"user{index}" for index in range(webconfig.PASSWORD_CACHE_SIZE + 1)]
    lines = "".join(f"  {user}: '{HASH}'\n" for user in users)
    config = load_web_config(_write(tmp_path, f"basic_auth_users:\n{lines}"))
    for user in users:  # one more than the cache holds
        assert config.authorized(_basic(user, PASSWORD))
    assert len(checkpw_calls) == len(users)
    assert config.authorized(_basic(users[-1], PASSWORD))  # the newest, still cached
    assert len(checkpw_calls) == len(users)
    assert config.authorized(_basic(users[0], PASSWORD))  # the oldest, evicted
    assert len(checkpw_calls) == len(users) + 1


def test_concurrent_checks_share_one_bcrypt_run(
    users_config: WebConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    real = bcrypt.checkpw
    barrier = threading.Barrier(20)

    def slow(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        threading.Event().wait(0.1)  # a real cost-10 check takes about this long
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", slow)
    results: list[bool] = []

    def scrape() -> None:
        barrier.wait()
        results.append(users_config.authorized(_basic("alice", PASSWORD)))

    threads = [threading.Thread(target=scrape) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == [True] * 20
    assert len(calls) == 1


# --- real TLS handshakes -----------------------------------------------------------------


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _https_server(context: ssl.SSLContext) -> Iterator[str]:
    """A tiny HTTPS server on a free port; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.daemon_threads = True
    # A failed handshake raises in accept(), which socketserver ignores (an OSError).
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _client(pki: PKI, cert: tuple[Path, Path] | None = None, **options: Any) -> httpx.Client:
    context = ssl.create_default_context(cafile=pki.ca)
    if cert:
        context.load_cert_chain(*cert)
    for name, value in options.items():
        setattr(context, name, value)
    return httpx.Client(verify=context, trust_env=False, timeout=5)


def _get(client_factory: Callable[[], httpx.Client], url: str) -> httpx.Response:
    with client_factory() as client:
        return client.get(url)


def test_tls_handshake(pki: PKI) -> None:
    context = load_web_config(_write(pki.dir, _tls_config(pki))).ssl_context
    assert context is not None
    with _https_server(context) as url:
        assert _get(lambda: _client(pki), url).text == "ok"
        assert _get(lambda: _client(pki), url.replace("localhost", "127.0.0.1")).text == "ok"


def test_mutual_tls_handshake(pki: PKI) -> None:
    extra = f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.ca}\n"
    context = load_web_config(_write(pki.dir, _tls_config(pki, extra))).ssl_context
    assert context is not None
    with _https_server(context) as url:
        good = (pki.client_cert, pki.client_key)
        assert _get(lambda: _client(pki, good), url).text == "ok"
        with pytest.raises(httpx.TransportError):
            _get(lambda: _client(pki), url)  # no certificate
        stranger = (pki.stranger_cert, pki.stranger_key)
        with pytest.raises(httpx.TransportError):
            _get(lambda: _client(pki, stranger), url)  # signed by another CA


def test_min_version_refuses_older_clients(pki: PKI) -> None:
    context = load_web_config(
        _write(pki.dir, _tls_config(pki, "  min_version: TLS13\n"))
    ).ssl_context
    assert context is not None
    with _https_server(context) as url:
        assert _get(lambda: _client(pki), url).text == "ok"
        old = {"maximum_version": ssl.TLSVersion.TLSv1_2}
        with pytest.raises(httpx.ConnectError):
            _get(lambda: _client(pki, **old), url)


def _negotiable(pki: PKI, version: ssl.TLSVersion) -> bool:
    """Whether a client speaking ``version`` only gets through a real handshake with a server
    that allows it, as the OpenSSL linked here runs them (the client accepts any cipher:
    what is tried is the server's side)."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(pki.ca)
    client.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server.minimum_version = client.maximum_version = version
    server.load_cert_chain(pki.server_cert, pki.server_key)
    with _https_server(server) as url:
        try:
            return (
                _get(lambda: httpx.Client(verify=client, trust_env=False, timeout=5), url).text
                == "ok"
            )
        except httpx.TransportError:
            return False


@pytest.mark.parametrize(
    ("name", "version"), [("TLS10", ssl.TLSVersion.TLSv1), ("TLS11", ssl.TLSVersion.TLSv1_1)]
)
def test_a_min_version_openssl_will_not_negotiate_is_refused_at_start(
    pki: PKI, tmp_path: Path, name: str, version: ssl.TLSVersion
) -> None:
    """OpenSSL 3 refuses TLS 1.0 and 1.1 at its security level, whatever the versions a
    context allows: accepted, every such client would fail its handshake, unexplained."""
    path = _write(tmp_path, _tls_config(pki, f"  min_version: {name}\n"))
    args = ["--web-config-file", str(path), "--api-url", "http://127.0.0.1:9"]
    args += ["--listen-address", "127.0.0.1:0"]  # were it to start
    if _negotiable(pki, version):  # an OpenSSL that still speaks it: the file is fine
        assert load_web_config(path).ssl_context is not None
        return
    result = run_exporter_once(args, {"CONNECTYCUBE_API_KEY": SECRET_KEY})
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert f"tls_server_config.min_version: {ssl.OPENSSL_VERSION} will not" in result.stderr
    assert "use TLS12 or TLS13" in result.stderr


def test_answers_without_bcrypt_when_it_can(
    users_config: WebConfig, checkpw_calls: list[bytes]
) -> None:
    """What the server may decide on its event loop; None sends the check to a thread."""
    quick = users_config.authorized_without_bcrypt
    assert quick(None) is False
    assert quick("Basic !!!") is False
    assert quick(_basic("alice", PASSWORD)) is None  # never checked yet
    assert quick(_basic("mallory", PASSWORD)) is None  # unknown users cost bcrypt too
    assert users_config.authorized(_basic("alice", PASSWORD))
    assert quick(_basic("alice", PASSWORD)) is True  # now cached
    assert quick(_basic("alice", "wrong")) is None  # failures are never cached
    assert len(checkpw_calls) == 1
    assert load_web_config(None).authorized_without_bcrypt(None) is True
