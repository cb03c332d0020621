"""Logging to stderr, one line per event, as text or JSON."""

from __future__ import annotations

import json
import logging
import sys
import threading
import unicodedata
from datetime import UTC, datetime
from types import TracebackType

# Libraries whose INFO and DEBUG lines are noise for an operator (one per request
# or per job run); their warnings and errors still come through.
_CHATTY = ("httpx", "httpcore", "apscheduler")
_CONTROL = {code: f"\\x{code:02x}" for code in (*range(32), 127)} | {10: "\\n", 13: "\\r", 9: "\\t"}
# Also invisible or reordering characters: C1 controls, bidi overrides, zero-width and
# line or paragraph separators (U+2028 ends a line for some log viewers).
_HIDDEN = ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")


def escape(text: str) -> str:
    """``text`` with every control, format or separator character written as an escape."""
    text = text.translate(_CONTROL)
    if text.isascii():
        return text
    return "".join(
        f"\\u{ord(char):04x}" if unicodedata.category(char) in _HIDDEN else char for char in text
    )


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        # One event, one line: a newline (or a carriage return, or a terminal escape)
        # inside a message, maybe from an API's error text, would forge or split lines.
        return escape(super().format(record))


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str = "INFO", log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JSONFormatter() if log_format == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Every line the process writes goes through the handler, in its format: library
    # warnings, and the tracebacks of a bug in any thread, which would otherwise be raw
    # text in the middle of JSON.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = lambda args: _log_uncaught(
        args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback
    )


def _log_uncaught(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        return
    logging.getLogger("exporter").critical("unexpected error", exc_info=(kind, error, trace))
