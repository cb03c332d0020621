"""``connectycube-exporter healthcheck``: does the exporter answer on its listen address?

For the image's HEALTHCHECK and Kubernetes exec probes: it reads the same settings as the
daemon (listen address, web config), speaks HTTPS when TLS is on and needs nothing but
Python. Exit 0 when ``/-/healthy`` answers 200, 1 when it does not, 2 on a bad setting.
"""

from __future__ import annotations

import argparse
import http.client
import math
import ssl

from exporter import options
from exporter.config import parse_listen_address
from exporter.webconfig import load_web_config

COMMAND = f"{options.PROG} healthcheck"
PATH = "/-/healthy"
# A wildcard listen address is reached on loopback, in the same address family.
LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}
# A server that requires client certificates answers a client without one with one of these
# alerts: its TLS layer, which runs on the exporter's event loop, is alive.
CLIENT_CERTIFICATE_ALERTS = {"TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_HANDSHAKE_FAILURE"}


def seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise ValueError(text)
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = options.ArgumentParser(
        prog=COMMAND,
        description=f"Exit 0 if the exporter answers GET {PATH} on its listen address "
        "(HTTPS when the web config turns TLS on), 1 if not.",
    )
    options.add_settings_arguments(parser)
    parser.add_argument(
        "--timeout-seconds", type=seconds, default=3.0, help="give up after this long (default 3)"
    )
    return parser


def main(argv: list[str]) -> int:
    return options.one_shot(build_parser(), argv, probe)


def probe(args: argparse.Namespace) -> int:
    settings = options.settings_from(args)
    web_config = load_web_config(settings.web_config_file)
    host, port = parse_listen_address(settings.listen_address)
    host = LOOPBACK.get(host, host)
    if web_config.ssl_context is None:
        url = f"http://{host}:{port}{PATH}"
        connection = http.client.HTTPConnection(host, port, timeout=args.timeout_seconds)
    else:
        url = f"https://{host}:{port}{PATH}"
        # The question is whether this exporter answers, not who it is: its certificate may
        # well name another host than the listen address, so it is not verified.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(
            host, port, timeout=args.timeout_seconds, context=context
        )
    try:
        connection.request("GET", PATH)
        status = connection.getresponse().status
    except ssl.SSLError as exc:
        if exc.reason in CLIENT_CERTIFICATE_ALERTS:
            return 0
        raise options.Failure(1, f"{url}: {exc}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise options.Failure(1, f"{url}: {exc or type(exc).__name__}") from None
    finally:
        connection.close()
    if status != 200:
        raise options.Failure(1, f"{url}: HTTP {status}")
    return 0
