"""A throw-away PKI for the TLS tests, made with the openssl command-line tool."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PKI:
    """A test CA, a server certificate for 127.0.0.1/localhost and client certificates."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate from another CA
    stranger_key: Path
    encrypted_key: Path


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(cwd: Path, name: str) -> None:
    _openssl(
        cwd, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
        "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip


def _make_leaf(cwd: Path, name: str, ca: str, extensions: str, serial: int) -> None:
    _openssl(
        cwd, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
    )  # fmt: skip
    (cwd / f"{name}.ext").write_text(
        f"{extensions}\nbasicConstraints=CA:FALSE\nauthorityKeyIdentifier=keyid\n"
    )
    _openssl(
        cwd, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-set_serial", str(serial), "-days", "2", "-out", f"{name}.crt",
        "-extfile", f"{name}.ext",
    )  # fmt: skip


def make_pki(cwd: Path) -> PKI:
    """Certificates made by the openssl command line, in ``cwd``."""
    _make_ca(cwd, "ca")
    _make_ca(cwd, "other-ca")
    server_ext = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"
    _make_leaf(cwd, "server", "ca", server_ext, 2)
    _make_leaf(cwd, "client", "ca", "extendedKeyUsage=clientAuth", 3)
    _make_leaf(cwd, "stranger", "other-ca", "extendedKeyUsage=clientAuth", 4)
    _openssl(
        cwd, "pkey", "-in", "server.key", "-aes256", "-passout", "pass:pass-phrase",
        "-out", "encrypted.key",
    )  # fmt: skip
    return PKI(
        dir=cwd,
        ca=cwd / "ca.crt",
        server_cert=cwd / "server.crt",
        server_key=cwd / "server.key",
        client_cert=cwd / "client.crt",
        client_key=cwd / "client.key",
        stranger_cert=cwd / "stranger.crt",
        stranger_key=cwd / "stranger.key",
        encrypted_key=cwd / "encrypted.key",
    )
