"""The web configuration file of the Prometheus exporter-toolkit: TLS, basic auth, headers.

``load_web_config`` reads every official exporter's ``--web.config.file`` once, at start-up,
into a ``WebConfig``: an ``ssl.SSLContext``, the basic auth users' bcrypt hashes and the
response headers. A problem is a one-line ``WebConfigError`` naming the file, never a password
hash or a private key.

Where OpenSSL cannot do what Go does, the closest safe choice is made: ``RequestClientCert``
asks for no certificate (Go never checks it); ``RequireAnyClientCert`` (``RequireClientCert``)
verifies it, so it needs ``client_ca_file``; TLS 1.3 ``cipher_suites`` are ignored, as in Go;
of several ``curve_preferences`` (Python 3.11 sets one), OpenSSL's default list stays;
``http2`` is ignored; ``client_allowed_sans`` and ``rate_limit`` are refused. Stricter than the
toolkit: duplicate keys, both ``cert`` and ``cert_file`` (``key``, ``client_ca`` alike), a
missing certificate or key, ``:`` in user names, and a ``min_version`` that the linked
OpenSSL will not negotiate (OpenSSL 3 refuses TLS 1.0 and 1.1 at its security level), as a
trial handshake in memory finds.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import ssl
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import bcrypt
from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from exporter.settingsfile import FileProblem, os_reason, read_yaml

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Any mode but CERT_NONE verifies the client's certificate, so it needs client_ca_file.
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "RequireClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Go's tls.CipherSuites(), by their OpenSSL names (openssl ciphers -stdname); those of TLS 1.3
# (None) are not configurable, in Go as in Python's ssl: always all three.
_CIPHERS: dict[str, str | None] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
}
_CURVES = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}
# The headers a file may set, with their allowed values (None: any value).
_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")  # latin-1 without CR, LF or controls
_BCRYPT_HASH = re.compile(rb"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
BCRYPT_MAX_PASSWORD_BYTES = 72
PASSWORD_CACHE_SIZE = 1024  # successful checks kept: a few (user, password) pairs are expected
# Refused rather than ignored: silently dropping a restriction the operator asked for is unsafe.
_NOT_SUPPORTED = "not supported by this exporter"


class WebConfigError(Exception):
    """The web configuration file is unusable; the message is one line naming the file."""


# --- basic auth --------------------------------------------------------------------------


def _parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """``(user, password)`` from ``Basic base64(user:password)``, or None if malformed."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, colon, password = base64.b64decode(token.strip(), validate=True).partition(b":")
        return (user.decode("utf-8"), password) if colon else None
    except ValueError:  # bad base64, a non-ASCII header, a user name not in UTF-8
        return None


def _checkpw(password: bytes, hashed: bytes) -> bool:
    """``bcrypt.checkpw`` (a constant-time compare), False instead of raising."""
    # bcrypt reads only 72 bytes: releases before 5 would let "right password + more" in.
    if len(password) > BCRYPT_MAX_PASSWORD_BYTES:
        return False
    try:
        return bool(bcrypt.checkpw(password, hashed))
    except ValueError:  # e.g. a NUL byte in it
        return False


def _key(user: str, password: bytes) -> bytes:
    # A digest keeps no password in memory; repr keeps ("a:b", "c") and ("a", "b:c") apart.
    return hashlib.sha256(repr((user, password)).encode()).digest()


@dataclass(frozen=True)
class WebConfig:
    """What the web configuration file asks for; ``WebConfig(None, {}, ())`` is no file.

    Basic auth keeps one future per credentials, least recently used first: a check under
    way, which callers with the same credentials wait for (50 clients starting at once cost
    one hash), or a success. A failure is forgotten at once: a flood of wrong passwords never
    evicts the real scrapers.
    """

    ssl_context: ssl.SSLContext | None
    users: Mapping[str, bytes] = field(repr=False)  # hashes stay out of logs and tracebacks
    headers: tuple[tuple[str, str], ...]
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )
    _checks: OrderedDict[bytes, Future[bool]] = field(
        default_factory=OrderedDict, init=False, repr=False, compare=False
    )
    _dummy: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A read-only copy: the users checked are those loaded, whatever the caller does later.
        users = MappingProxyType(dict(self.users))
        object.__setattr__(self, "users", users)
        # Unknown users are checked against a hash of the highest cost in use, so that they
        # take as long as a real user; the filler makes a hash that no password matches.
        costs = [int(m[1]) for hashed in users.values() if (m := _BCRYPT_HASH.fullmatch(hashed))]
        dummy = bcrypt.gensalt(rounds=max(costs, default=10)) + b"." * 31
        object.__setattr__(self, "_dummy", dummy)

    def authorized(self, authorization_header: str | None) -> bool:
        """Whether an ``Authorization`` header lets the request in (always, without users).
        Thread-safe, never raises; only the first success of given credentials pays bcrypt."""
        if not self.users:
            return True
        credentials = _parse_basic(authorization_header)
        return credentials is not None and self._check(*credentials)

    def authorized_without_bcrypt(self, authorization_header: str | None) -> bool | None:
        """``authorized``'s answer if it costs no bcrypt run (never blocks), else None: for a
        first check, a wrong password or an unknown user, which each take bcrypt's time."""
        if not self.users:
            return True
        credentials = _parse_basic(authorization_header)
        if credentials is None:
            return False
        key = _key(*credentials)
        with self._lock:  # a lookup by a digest: its timing says nothing of the password
            check = self._checks.get(key)
            if check is None or not check.done():
                return None
            self._checks.move_to_end(key)
            return True

    def _check(self, user: str, password: bytes) -> bool:
        hashed = self.users.get(user)
        if hashed is None:
            _checkpw(password, self._dummy)  # spend the same time, then refuse
            return False
        key = _key(user, password)
        with self._lock:
            check = self._checks.get(key)
            leader = check is None
            if check is None:
                check = self._checks[key] = Future()
            self._checks.move_to_end(key)
        if leader:
            ok = False
            try:
                ok = _checkpw(password, hashed)
            finally:
                with self._lock:
                    if not ok:
                        self._checks.pop(key, None)
                    elif len(self._checks) > PASSWORD_CACHE_SIZE:
                        self._checks.popitem(last=False)
                check.set_result(ok)
        return check.result()


# --- the file ----------------------------------------------------------------------------


class _Strict(BaseModel):
    # strict: YAML already gives typed values; coercing "yes" or 1 would hide mistakes.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _TLSServerConfig(_Strict):
    cert: str | None = None
    key: SecretStr | None = None  # a private key: SecretStr keeps it out of any repr
    client_ca: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    client_auth_type: str | None = None
    client_ca_file: str | None = None
    client_allowed_sans: list[str] | None = None
    min_version: str | None = None
    max_version: str | None = None
    cipher_suites: list[str] | None = None
    prefer_server_cipher_suites: bool | None = None
    curve_preferences: list[str] | None = None


class _HTTPServerConfig(_Strict):
    http2: bool | None = None
    headers: dict[str, Any] | None = None  # values checked by hand: str, int or blank


class _WebConfigFile(_Strict):
    tls_server_config: _TLSServerConfig | None = None
    http_server_config: _HTTPServerConfig | None = None
    basic_auth_users: dict[str, str] | None = None
    rate_limit: Any = None

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, document: Any) -> Any:
        if document is not None and not isinstance(document, dict):
            raise ValueError("expected a mapping of settings at the top level")
        return document or {}


def _users(users: Mapping[str, str]) -> dict[str, bytes]:
    for user, hashed in users.items():
        where = f"basic_auth_users: user {user!r}"
        if not user or ":" in user:
            raise FileProblem(f"{where}: a user name must be non-empty and have no ':'")
        if not _BCRYPT_HASH.fullmatch(hashed.encode("utf-8", "replace")):
            raise FileProblem(f"{where}: the password is not a bcrypt hash ($2a$, $2b$ or $2y$)")
    return {user: hashed.encode() for user, hashed in users.items()}


def _headers(headers: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    checked = []
    for name, value in headers.items():
        where = f"http_server_config.headers.{name}"
        if name not in _HEADERS:
            only = ", ".join(_HEADERS)
            raise FileProblem(f"{where}: this header can not be configured (only {only})")
        allowed = _HEADERS[name]
        if value is None or value == "":
            continue  # blank means unset, as in the toolkit
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise FileProblem(f"{where}: expected a string")
        text = str(value)
        if not _HEADER_VALUE.fullmatch(text):
            raise FileProblem(f"{where}: control or non-latin-1 characters are not allowed")
        if allowed is not None and text not in allowed:
            raise FileProblem(f"{where}: expected one of {', '.join(allowed)}")
        checked.append((name, text))
    return tuple(checked)


def _tls_problem(problem: str, setting: str = "") -> FileProblem:
    return FileProblem(f"tls_server_config{'.' if setting else ''}{setting}: {problem}")


def _check(tls: _TLSServerConfig) -> None:
    """What the schema cannot say of ``tls_server_config``."""
    for inline in ("cert", "key", "client_ca"):
        if getattr(tls, inline) is not None and getattr(tls, inline + "_file") is not None:
            raise _tls_problem(f"give {inline} or {inline}_file, not both")
    if tls.cert is None and tls.cert_file is None:
        raise _tls_problem("cert_file (or cert) is required")
    if tls.key is None and tls.key_file is None:
        raise _tls_problem("key_file (or key) is required")
    if tls.client_allowed_sans is not None:
        raise _tls_problem(_NOT_SUPPORTED, "client_allowed_sans")
    auth_type = tls.client_auth_type or "NoClientCert"
    if auth_type not in _CLIENT_AUTH:
        choices = ", ".join(name for name in _CLIENT_AUTH if name != "RequireClientCert")
        raise _tls_problem(f"unknown value (expected {choices})", "client_auth_type")
    has_ca = tls.client_ca is not None or tls.client_ca_file is not None
    if has_ca and auth_type == "NoClientCert":
        raise _tls_problem("client_ca_file is set but client_auth_type is NoClientCert")
    if _CLIENT_AUTH[auth_type] != ssl.CERT_NONE and not has_ca:
        raise _tls_problem(f"client_auth_type {auth_type} needs client_ca_file")
    for name in ("min_version", "max_version"):
        if getattr(tls, name) and getattr(tls, name) not in _TLS_VERSIONS:
            expected = ", ".join(_TLS_VERSIONS)
            raise _tls_problem(f"unknown TLS version (expected {expected})", name)
    if _TLS_VERSIONS[tls.min_version or "TLS12"] > _TLS_VERSIONS[tls.max_version or "TLS13"]:
        raise _tls_problem("min_version is above max_version")


def _ssl_context(tls: _TLSServerConfig, directory: Path) -> ssl.SSLContext:
    """The server context of ``tls``; relative paths are relative to ``directory``."""
    _check(tls)
    files: dict[str, Path] = {}
    for name in ("cert_file", "key_file", "client_ca_file"):
        if getattr(tls, name) is not None:
            file = files[name] = directory / Path(getattr(tls, name)).expanduser()
            try:  # OpenSSL's errors do not say which file is missing
                file.open("rb").close()
            except OSError as exc:
                raise _tls_problem(f"cannot read {file} ({os_reason(exc)})", name) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0 or 1.1: as asked
        context.minimum_version = _TLS_VERSIONS[tls.min_version or "TLS12"]
        context.maximum_version = _TLS_VERSIONS[tls.max_version or "TLS13"]
    _load_cert_chain(context, tls, files.get("cert_file"), files.get("key_file"))
    ca_file = files.get("client_ca_file")
    if ca_file is not None or tls.client_ca is not None:
        try:
            context.load_verify_locations(ca_file, cadata=None if ca_file else tls.client_ca)
        except (ssl.SSLError, OSError, ValueError) as exc:
            name = f"client_ca_file {ca_file}" if ca_file else "client_ca"
            raise _tls_problem(f"cannot load {name} ({_ssl_reason(exc)})") from None
    for name in tls.cipher_suites or []:
        if name not in _CIPHERS:
            raise _tls_problem(f"unknown cipher {name!r}", "cipher_suites")
    ciphers = [cipher for name in tls.cipher_suites or [] if (cipher := _CIPHERS[name])]
    if ciphers:
        try:
            context.set_ciphers(":".join(ciphers))
        except ssl.SSLError:
            problem = "none of these is available in OpenSSL"
            raise _tls_problem(problem, "cipher_suites") from None
    if tls.prefer_server_cipher_suites is False:  # the toolkit's default is true
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    for name in tls.curve_preferences or []:
        if name not in _CURVES:
            problem = f"unknown curve {name!r} (expected {', '.join(_CURVES)})"
            raise _tls_problem(problem, "curve_preferences")
    if tls.curve_preferences and len(tls.curve_preferences) == 1:
        context.set_ecdh_curve(_CURVES[tls.curve_preferences[0]])
    context.set_alpn_protocols(["http/1.1"])  # http2 is accepted but not served
    oldest = _TLS_VERSIONS[tls.min_version or "TLS12"]
    if oldest < ssl.TLSVersion.TLSv1_2:  # OpenSSL 3's security level may refuse them
        refused = _refused(context, oldest)
        if refused is not None:
            problem = (
                f"{ssl.OPENSSL_VERSION} will not negotiate {tls.min_version} with these "
                f"settings ({refused}); use TLS12 or TLS13"
            )
            raise _tls_problem(problem, "min_version")
    # Last: the trial client has no certificate to show.
    context.verify_mode = _CLIENT_AUTH[tls.client_auth_type or "NoClientCert"]
    return context


def _refused(server: ssl.SSLContext, version: ssl.TLSVersion) -> str | None:
    """Why a client speaking ``version`` only cannot finish a handshake with ``server``, or
    None if it can: a handshake in memory, as the linked OpenSSL runs it. The client
    accepts anything, so that what is tried is the server's side."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client.minimum_version = client.maximum_version = version
    client.set_ciphers("ALL:@SECLEVEL=0")
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    ends = (
        client.wrap_bio(to_client, to_server),
        server.wrap_bio(to_server, to_client, server_side=True),
    )
    for _ in range(8):  # each round passes one flight each way; TLS 1.0 needs two
        finished = 0
        for end in ends:
            try:
                end.do_handshake()
                finished += 1
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                return _ssl_reason(exc)
        if finished == len(ends):
            return None
    return "the handshake did not finish"


def _load_cert_chain(
    context: ssl.SSLContext, tls: _TLSServerConfig, cert_file: Path | None, key_file: Path | None
) -> None:
    cert_name = f"cert_file {cert_file}" if cert_file else "cert"
    key_name = f"key_file {key_file}" if key_file else "key"
    cert = cert_file.read_bytes() if cert_file else (tls.cert or "").encode()
    secret = tls.key.get_secret_value() if tls.key else ""
    key = key_file.read_bytes() if key_file else secret.encode()
    if b"CERTIFICATE-----" not in cert:
        raise _tls_problem(f"{cert_name} is not a PEM certificate")
    if b"PRIVATE KEY-----" not in key:
        raise _tls_problem(f"{key_name} is not a PEM private key")

    def refuse_passphrase() -> bytes:
        # A daemon cannot type one: without this, OpenSSL would prompt on the terminal.
        raise _tls_problem(f"{key_name} is encrypted; give an unencrypted key")

    # load_cert_chain reads only files: inline PEM goes to a private temporary directory
    # (mode 0700, files 0600), removed as soon as OpenSSL has read it.
    with tempfile.TemporaryDirectory(prefix="webconfig-") as tmp:
        cert_file = cert_file or _write_private(Path(tmp) / "cert.pem", cert)
        key_file = key_file or _write_private(Path(tmp) / "key.pem", key)
        try:
            context.load_cert_chain(cert_file, key_file, password=refuse_passphrase)
        except (ssl.SSLError, OSError) as exc:
            problem = f"cannot load {cert_name} with {key_name} ({_ssl_reason(exc)})"
            raise _tls_problem(problem) from None


def _write_private(file: Path, data: bytes) -> Path:
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return file


def _ssl_reason(exc: BaseException) -> str:
    """OpenSSL's reason in words, without the ``(_ssl.c:1234)`` location."""
    reason = getattr(exc, "reason", None)
    if reason == "KEY_VALUES_MISMATCH":
        return "the key does not match the certificate"
    if reason:
        return str(reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        if "PEM lib" in exc.strerror:
            return "OpenSSL cannot parse the PEM data"
        return re.sub(r"\s*\(_ssl\.c:\d+\)", "", exc.strerror)
    return str(exc) or type(exc).__name__


def load_web_config(path: Path | None) -> WebConfig:
    """Read and check the web configuration file; ``None`` means no file (plain HTTP)."""
    if path is None:
        return WebConfig(None, {}, ())
    try:
        parsed = read_yaml(path, _WebConfigFile)
        if parsed.rate_limit is not None:
            raise FileProblem(f"rate_limit: {_NOT_SUPPORTED}")
        users = _users(parsed.basic_auth_users or {})
        http = parsed.http_server_config
        headers = _headers((http.headers if http else None) or {})
        tls = parsed.tls_server_config
        context = _ssl_context(tls, path.parent) if tls is not None else None
    except FileProblem as exc:
        raise WebConfigError(" ".join(f"{path}: {exc}".split())) from None  # one line, always
    return WebConfig(context, users, headers)
