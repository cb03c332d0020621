"""Logging to stderr, as text or JSON: one line per event, whatever its message holds."""

from __future__ import annotations

import json
import logging
import sys
import threading
import unicodedata
from datetime import UTC, datetime
from types import TracebackType

_CONTROL = {code: f"\\x{code:02x}" for code in (*range(32), 127)} | {10: "\\n", 13: "\\r", 9: "\\t"}
# Also invisible or reordering ones: C1, bidi overrides, zero-width, U+2028 (a line end).
_HIDDEN = ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._json = as_json

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        if not self._json:
            # An API's error text with a newline or terminal escape must not forge lines:
            # every control, format or separator character is written as an escape.
            return "".join(
                f"\\u{ord(char):04x}" if unicodedata.category(char) in _HIDDEN else char
                for char in super().format(record).translate(_CONTROL)
            )
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str = "INFO", log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(as_json=log_format == "json"))
    logging.basicConfig(handlers=[handler], level=level, force=True)
    # Libraries whose INFO lines (one per request or job run) are noise; warnings still show.
    for name in ("httpx", "httpcore", "apscheduler"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Library warnings and the tracebacks of a bug in any thread go through the handler
    # too: they would otherwise be raw text in the middle of JSON.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = lambda args: _log_uncaught(
        args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback
    )


def _log_uncaught(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    if not issubclass(kind, KeyboardInterrupt):
        logging.getLogger("exporter").critical("unexpected error", exc_info=(kind, error, trace))
