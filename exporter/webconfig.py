"""The web configuration file: TLS, client certificates, basic auth and extra headers.

The file has the format of the Prometheus exporter-toolkit (``--web.config.file`` of
every official exporter), so one file can serve a whole fleet of exporters:

```yaml
tls_server_config:
  cert_file: server.crt          # relative paths are relative to this file
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  min_version: TLS12
http_server_config:
  headers:
    X-Content-Type-Options: nosniff
basic_auth_users:
  prometheus: $2b$10$...         # bcrypt hash, e.g. from htpasswd -nBC 10 "" | tr -d ':\\n'
```

``load_web_config`` reads and checks it once, at start-up, and returns a ``WebConfig``:
an ``ssl.SSLContext`` ready to wrap the listening socket, the basic auth users and the
headers to add to every response. Every problem is a ``WebConfigError`` with one line
naming the file and the problem, never a password hash or a private key.

Differences from the exporter-toolkit, all because Python's ``ssl`` module (OpenSSL)
cannot express the Go behaviour; each is the closest safe choice:

- ``client_auth_type`` (Go ``crypto/tls.ClientAuthType`` -> ``ssl.VerifyMode``):

  =============================  =================  ====================================
  NoClientCert (default)         CERT_NONE          exact
  RequestClientCert              CERT_NONE          Go asks for a certificate but never
                                                    checks it, so it grants nothing; not
                                                    asking is equivalent for access
  RequireAnyClientCert           CERT_REQUIRED      stricter: OpenSSL cannot require a
                                                    certificate without verifying it, so
                                                    ``client_ca_file`` is required and
                                                    the certificate must chain to it
  VerifyClientCertIfGiven        CERT_OPTIONAL      exact
  RequireAndVerifyClientCert     CERT_REQUIRED      exact
  =============================  =================  ====================================

  ``RequireClientCert``, the toolkit's old name of ``RequireAnyClientCert``, is accepted.
- ``cipher_suites``: Go (IANA) names of TLS 1.0-1.2 suites are mapped to OpenSSL names
  and applied with ``set_ciphers``. TLS 1.3 suite names are accepted and ignored, as Go
  does (neither Go nor Python's ``ssl`` lets them be configured).
- ``prefer_server_cipher_suites`` sets or clears ``OP_CIPHER_SERVER_PREFERENCE`` (Go
  ignores it nowadays; OpenSSL still honours it).
- ``curve_preferences``: one curve is applied exactly (``set_ecdh_curve``). Python 3.11's
  ``ssl`` cannot set a list, so with several curves OpenSSL's default list (strong curves
  only) is kept; the names are still checked.
- ``min_version: TLS10`` / ``TLS11`` are applied, but OpenSSL's security level (2 on
  Debian) may still refuse TLS below 1.2.
- ``http_server_config.http2`` is accepted and ignored: the server speaks HTTP/1.1 only
  (the context offers ``http/1.1`` by ALPN).
- ``client_allowed_sans`` and ``rate_limit`` are refused with an error rather than
  ignored: silently dropping a restriction the operator asked for would be unsafe.
- The file is read once at start-up; the toolkit re-reads it on every connection.
- Stricter than the toolkit: duplicate YAML keys, giving both ``cert`` and ``cert_file``
  (``key``/``key_file``, ``client_ca``/``client_ca_file``), a present ``tls_server_config``
  without a certificate and key, and user names containing ``:`` (they could never log
  in) are errors.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import ssl
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import bcrypt
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from exporter.settingsfile import describe_validation_error, os_reason, read_yaml


class WebConfigError(Exception):
    """The web configuration file is unusable; the message is one line naming the file."""


# --- file schema -------------------------------------------------------------------------


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


# --- TLS tables --------------------------------------------------------------------------

_TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# client_auth_type -> (verify mode, whether a client CA is required); see the module doc.
_CLIENT_AUTH: dict[str, tuple[ssl.VerifyMode, bool]] = {
    "NoClientCert": (ssl.CERT_NONE, False),
    "RequestClientCert": (ssl.CERT_NONE, False),
    "RequireAnyClientCert": (ssl.CERT_REQUIRED, True),
    "RequireClientCert": (ssl.CERT_REQUIRED, True),
    "VerifyClientCertIfGiven": (ssl.CERT_OPTIONAL, True),
    "RequireAndVerifyClientCert": (ssl.CERT_REQUIRED, True),
}

# The suites Go's tls.CipherSuites() offers for TLS 1.0-1.2, by their OpenSSL names
# (from `openssl ciphers -stdname`).
_CIPHERS_TLS12: dict[str, str] = {
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
}
_CIPHERS_TLS13 = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)

_CURVES: dict[str, str] = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}

# Headers the toolkit lets a file set, with their allowed values (None: any value).
_ALLOWED_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

_BCRYPT_HASH = re.compile(rb"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")

# Successful checks kept; a few (user, password) pairs are expected, so this is generous.
_CACHE_SIZE = 1024


# --- basic auth --------------------------------------------------------------------------


class _Flight:
    """One bcrypt check under way, which callers with the same credentials wait for."""

    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


class _BasicAuth:
    """Checks credentials against bcrypt hashes, with a bounded cache of successes.

    Only successes are cached: a flood of wrong passwords then can never evict the
    entries of real scrapers. Concurrent checks of the same credentials share one bcrypt
    run, so 50 clients starting at once cost one hash, not 50.
    """

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = users
        # Unknown users are checked against a hash of the highest cost in use, so that
        # they take as long as a real user. gensalt is cheap: it computes no hash; the
        # 31 filler characters make a well-formed hash no password can match.
        costs = (_BCRYPT_HASH.fullmatch(h) for h in users.values())
        cost = max((int(m[1]) for m in costs if m and 4 <= int(m[1]) <= 31), default=10)
        self._dummy = bcrypt.gensalt(rounds=cost) + b"." * 31
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._flights: dict[bytes, _Flight] = {}

    def check(self, user: str, password: bytes) -> bool:
        hashed = self._users.get(user)
        if hashed is None:
            _checkpw(password, self._dummy)  # spend the same time, then refuse
            return False
        key = _cache_key(user.encode(), password, hashed)
        if self._hit(key):
            return True
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            return flight.ok
        try:
            flight.ok = _checkpw(password, hashed)
        finally:
            with self._lock:
                del self._flights[key]
                if flight.ok:
                    self._cache[key] = None
                    if len(self._cache) > _CACHE_SIZE:
                        self._cache.popitem(last=False)
            flight.done.set()
        return flight.ok

    def cached(self, user: str, password: bytes) -> bool:
        """Whether these credentials passed a check already (no bcrypt run needed)."""
        hashed = self._users.get(user)
        return hashed is not None and self._hit(_cache_key(user.encode(), password, hashed))

    def _hit(self, key: bytes) -> bool:
        with self._lock:
            # A dict lookup by a SHA-256 digest: its timing says nothing of the password.
            if key in self._cache:
                self._cache.move_to_end(key)
                return True
        return False


BCRYPT_MAX_PASSWORD_BYTES = 72


def _checkpw(password: bytes, hashed: bytes) -> bool:
    """``bcrypt.checkpw`` (a constant-time compare), False instead of raising."""
    # bcrypt reads only 72 bytes: some releases would let "right password + anything" in.
    if len(password) > BCRYPT_MAX_PASSWORD_BYTES:
        return False
    try:
        return bool(bcrypt.checkpw(password, hashed))
    except ValueError:  # e.g. a NUL byte in it
        return False


def _cache_key(user: bytes, password: bytes, hashed: bytes) -> bytes:
    # Length prefixes keep ("a:b", "c") and ("a", "b:c") apart.
    digest = hashlib.sha256()
    for part in (user, password, hashed):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


def _parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """``(user, password)`` from ``Basic base64(user:password)``, or None if malformed."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
        user, sep, password = decoded.partition(b":")
        if not sep:
            return None
        return user.decode("utf-8"), password
    except (ValueError, binascii.Error):  # bad base64, non-ASCII header, non-UTF-8 user
        return None


@dataclass(frozen=True)
class WebConfig:
    """What the web configuration file asks for; ``WebConfig(None, {}, ())`` is no file."""

    ssl_context: ssl.SSLContext | None
    users: Mapping[str, bytes] = field(repr=False)  # hashes stay out of logs and tracebacks
    headers: tuple[tuple[str, str], ...]
    _auth: _BasicAuth = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Read-only copy: the checker and the caller must agree on the users for good.
        object.__setattr__(self, "users", MappingProxyType(dict(self.users)))
        object.__setattr__(self, "_auth", _BasicAuth(self.users))

    def authorized(self, authorization_header: str | None) -> bool:
        """Whether an ``Authorization`` header lets the request in (always, without users).

        Thread-safe; never raises. A successful check is cached in memory, so only the
        first scrape with given credentials pays for bcrypt.
        """
        if not self.users:
            return True
        credentials = _parse_basic(authorization_header)
        if credentials is None:
            return False
        return self._auth.check(*credentials)

    def authorized_without_bcrypt(self, authorization_header: str | None) -> bool | None:
        """``authorized``'s answer when it costs no bcrypt run, else None.

        True without users or for credentials that passed before (cached), False for a
        missing or malformed header; None when only ``authorized`` can tell (a first
        check, a wrong password, an unknown user: each takes bcrypt's time). Never blocks.
        """
        if not self.users:
            return True
        credentials = _parse_basic(authorization_header)
        if credentials is None:
            return False
        return True if self._auth.cached(*credentials) else None


# --- loading -----------------------------------------------------------------------------


def load_web_config(path: Path | None) -> WebConfig:
    """Read and check the web configuration file; ``None`` means no file (plain HTTP)."""
    if path is None:
        return WebConfig(None, {}, ())
    raw = read_yaml(path, lambda problem: _error(path, problem))
    if raw is not None and not isinstance(raw, dict):
        raise _error(path, "expected a mapping of settings at the top level")
    try:
        parsed = _WebConfigFile.model_validate(raw or {})
    except ValidationError as exc:
        raise _error(path, describe_validation_error(exc)) from None
    if parsed.rate_limit is not None:
        raise _error(path, "rate_limit: not supported by this exporter")
    users = _users(path, parsed.basic_auth_users or {})
    http = parsed.http_server_config
    headers = _headers(path, (http.headers if http else None) or {})
    tls = parsed.tls_server_config
    context = _ssl_context(path, tls) if tls is not None else None
    return WebConfig(context, users, headers)


def _users(path: Path, users: Mapping[str, str]) -> dict[str, bytes]:
    checked: dict[str, bytes] = {}
    for user, hashed in users.items():
        where = f"basic_auth_users: user {user!r}"
        if not user or ":" in user:
            raise _error(path, f"{where}: a user name must be non-empty and have no ':'")
        encoded = hashed.encode("utf-8", "replace")
        match = _BCRYPT_HASH.fullmatch(encoded)
        if match is None or not 4 <= int(match[1]) <= 31:
            raise _error(path, f"{where}: the password is not a bcrypt hash ($2a$, $2b$ or $2y$)")
        checked[user] = encoded
    return checked


def _headers(path: Path, headers: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    result: list[tuple[str, str]] = []
    for name, value in headers.items():
        where = f"http_server_config.headers.{name}"
        if name not in _ALLOWED_HEADERS:
            allowed = ", ".join(_ALLOWED_HEADERS)
            raise _error(path, f"{where}: this header can not be configured (only {allowed})")
        if value is None or value == "":
            continue  # blank means unset, as in the toolkit
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise _error(path, f"{where}: expected a string")
        text = str(value)
        # A CR or LF would let the file inject headers; the server sends latin-1.
        if not _latin1(text) or any(_is_control(c) for c in text):
            raise _error(path, f"{where}: control or non-latin-1 characters are not allowed")
        values = _ALLOWED_HEADERS[name]
        if values is not None and text not in values:
            raise _error(path, f"{where}: expected one of {', '.join(values)}")
        result.append((name, text))
    return tuple(result)


def _is_control(char: str) -> bool:
    return (ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _ssl_context(path: Path, tls: _TLSServerConfig) -> ssl.SSLContext:
    """Build the server context of ``tls_server_config``; see the module doc for mapping."""
    section = "tls_server_config"
    for inline, file in (
        ("cert", "cert_file"),
        ("key", "key_file"),
        ("client_ca", "client_ca_file"),
    ):
        if getattr(tls, inline) is not None and getattr(tls, file) is not None:
            raise _error(path, f"{section}: give {inline} or {file}, not both")
    if tls.cert is None and tls.cert_file is None:
        raise _error(path, f"{section}: cert_file (or cert) is required")
    if tls.key is None and tls.key_file is None:
        raise _error(path, f"{section}: key_file (or key) is required")
    if tls.client_allowed_sans is not None:
        raise _error(path, f"{section}.client_allowed_sans: not supported by this exporter")

    auth_type = tls.client_auth_type or "NoClientCert"
    if auth_type not in _CLIENT_AUTH:
        choices = ", ".join(name for name in _CLIENT_AUTH if name != "RequireClientCert")
        raise _error(path, f"{section}.client_auth_type: unknown value (expected {choices})")
    verify_mode, needs_ca = _CLIENT_AUTH[auth_type]
    has_ca = tls.client_ca_file is not None or tls.client_ca is not None
    if has_ca and auth_type == "NoClientCert":
        raise _error(path, f"{section}: client_ca_file is set but client_auth_type is NoClientCert")
    if needs_ca and not has_ca:
        raise _error(path, f"{section}: client_auth_type {auth_type} needs client_ca_file")

    minimum = _version(path, "min_version", tls.min_version or "TLS12")
    maximum = _version(path, "max_version", tls.max_version or "TLS13")
    if minimum > maximum:
        raise _error(path, f"{section}: min_version is above max_version")

    cert_file = _resolve(path, tls.cert_file)
    key_file = _resolve(path, tls.key_file)
    ca_file = _resolve(path, tls.client_ca_file)
    for name, file in (
        ("cert_file", cert_file),
        ("key_file", key_file),
        ("client_ca_file", ca_file),
    ):
        if file is not None:
            _check_readable(path, f"{section}.{name}", file)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        # Python warns that TLS 1.0 and 1.1 are deprecated; the operator asked for them.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = minimum
        context.maximum_version = maximum
    _load_cert_chain(path, context, tls, cert_file, key_file)
    if has_ca:
        _load_client_ca(path, context, tls, ca_file)
    # RequestClientCert maps to CERT_NONE, so a CA given with it is loaded but unused.
    context.verify_mode = verify_mode

    if tls.cipher_suites:
        _set_ciphers(path, context, tls.cipher_suites)
    if tls.prefer_server_cipher_suites is False:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    else:  # the toolkit's default is true
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.curve_preferences:
        _set_curves(path, context, tls.curve_preferences)
    context.set_alpn_protocols(["http/1.1"])  # http2 is accepted but not served
    return context


def _version(path: Path, name: str, value: str) -> ssl.TLSVersion:
    if value not in _TLS_VERSIONS:
        expected = ", ".join(_TLS_VERSIONS)
        raise _error(path, f"tls_server_config.{name}: unknown TLS version (expected {expected})")
    return _TLS_VERSIONS[value]


def _resolve(path: Path, file: str | None) -> Path | None:
    """Relative paths are relative to the web config file's directory, as in the toolkit."""
    if file is None:
        return None
    return path.parent / Path(file).expanduser()


def _check_readable(path: Path, where: str, file: Path) -> None:
    # OpenSSL's errors do not say which file is missing; this check does.
    try:
        with file.open("rb"):
            pass
    except OSError as exc:
        raise _error(path, f"{where}: cannot read {file} ({os_reason(exc)})") from None


class _EncryptedKeyError(Exception):
    """Raised by the password callback: a daemon cannot type a passphrase."""


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal and hang the start-up.
    raise _EncryptedKeyError


def _load_cert_chain(
    path: Path,
    context: ssl.SSLContext,
    tls: _TLSServerConfig,
    cert_file: Path | None,
    key_file: Path | None,
) -> None:
    cert_name = f"cert_file {cert_file}" if cert_file else "cert"
    key_name = f"key_file {key_file}" if key_file else "key"
    # load_cert_chain reads only files: inline PEM goes to a private temporary directory
    # (mode 0700, files 0600), removed as soon as OpenSSL has read it.
    with tempfile.TemporaryDirectory(prefix="webconfig-") as tmp:
        if cert_file is None:
            cert_file = _write_private(Path(tmp) / "cert.pem", tls.cert or "")
        if key_file is None:
            key_secret = tls.key.get_secret_value() if tls.key else ""
            key_file = _write_private(Path(tmp) / "key.pem", key_secret)
        if b"CERTIFICATE-----" not in cert_file.read_bytes():
            raise _error(path, f"tls_server_config: {cert_name} is not a PEM certificate")
        if b"PRIVATE KEY-----" not in key_file.read_bytes():
            raise _error(path, f"tls_server_config: {key_name} is not a PEM private key")
        try:
            context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
        except _EncryptedKeyError:
            raise _error(
                path, f"tls_server_config: {key_name} is encrypted; give an unencrypted key"
            ) from None
        except (ssl.SSLError, OSError) as exc:
            raise _error(
                path,
                f"tls_server_config: cannot load {cert_name} with {key_name} ({_ssl_reason(exc)})",
            ) from None


def _load_client_ca(
    path: Path, context: ssl.SSLContext, tls: _TLSServerConfig, ca_file: Path | None
) -> None:
    name = f"client_ca_file {ca_file}" if ca_file else "client_ca"
    try:
        if ca_file is not None:
            context.load_verify_locations(cafile=ca_file)
        else:
            context.load_verify_locations(cadata=tls.client_ca or "")
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise _error(path, f"tls_server_config: cannot load {name} ({_ssl_reason(exc)})") from None


def _set_ciphers(path: Path, context: ssl.SSLContext, names: list[str]) -> None:
    openssl_names = []
    for name in names:
        if name in _CIPHERS_TLS13:
            continue  # not configurable, in Go as in Python: always all three
        if name not in _CIPHERS_TLS12:
            raise _error(path, f"tls_server_config.cipher_suites: unknown cipher {name!r}")
        openssl_names.append(_CIPHERS_TLS12[name])
    if not openssl_names:
        return
    try:
        context.set_ciphers(":".join(openssl_names))
    except ssl.SSLError:
        raise _error(
            path, "tls_server_config.cipher_suites: none of these is available in OpenSSL"
        ) from None


def _set_curves(path: Path, context: ssl.SSLContext, names: list[str]) -> None:
    for name in names:
        if name not in _CURVES:
            expected = ", ".join(_CURVES)
            raise _error(
                path,
                f"tls_server_config.curve_preferences: unknown curve {name!r} "
                f"(expected {expected})",
            )
    if len(names) == 1:  # Python 3.11 can restrict to one curve, not set an ordered list
        context.set_ecdh_curve(_CURVES[names[0]])


def _write_private(file: Path, text: str) -> Path:
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
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


def _error(path: Path, problem: str) -> WebConfigError:
    # One line whatever the problem text holds.
    return WebConfigError(" ".join(f"{path}: {problem}".split()))
