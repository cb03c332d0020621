"""The command line's common part, shared by the daemon and the one-shot commands: one
flag per setting, errors that never echo a value; and how a one-shot command loads its
settings, fails in one line, and stops on SIGTERM or SIGINT where it is, with exit 128 + N.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any, NoReturn, TypeVar

from exporter.config import ConfigError, Settings, env_name, load_settings
from exporter.logs import setup_logging
from exporter.webconfig import WebConfigError

PROG = "connectycube-exporter"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
T = TypeVar("T")


def _shown(default: Any) -> str:
    if isinstance(default, list):
        return ",".join(map(str, default))
    return "none" if default is None else str(default)


class ArgumentParser(argparse.ArgumentParser):
    """Errors in one line, and never the value of a mistyped flag: it may be the key."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            tokens = message.partition(":")[2].split()
            flags = [token.split("=", 1)[0] for token in tokens if token.startswith("-")]
            message = "unrecognized arguments: " + (" ".join(flags) or "(values not shown)")
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_settings_arguments(parser: argparse._ActionsContainer) -> None:
    """One flag per setting; shared by the daemon and ``backfill``."""
    for name, field in Settings.model_fields.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            metavar=name.split("_")[-1].upper(),
            default=argparse.SUPPRESS,
            help=f"{field.description} (env {env_name(name)}; default: {_shown(field.default)})",
        )


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings, flags over environment, with logging set up as they say."""
    flags = {name: value for name, value in vars(args).items() if name in Settings.model_fields}
    settings = load_settings(flags)
    setup_logging(settings.log_level, settings.log_format)
    return settings


class Failure(Exception):
    """Ends a one-shot command with exit ``code``; its message is the one line on stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Interrupted(BaseException):
    """SIGTERM or SIGINT, its ``signal.Signals`` the one argument, during a one-shot command."""


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum))


def one_shot(
    parser: argparse.ArgumentParser,
    argv: list[str],
    body: Callable[[argparse.Namespace], int],
    stopped: str = "",
) -> int:
    """Run a one-shot command's ``body`` on its parsed ``argv``, stopped where it is by SIGTERM
    and SIGINT (exit 128 + the signal). A bad setting (exit 2), a ``Failure`` or a stop signal
    ends it in one line on stderr."""
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in STOP_SIGNALS}
    try:
        return body(parser.parse_args(argv))
    except (ConfigError, WebConfigError) as exc:
        code, message = 2, f"configuration error: {exc}"
    except Failure as exc:
        code, message = exc.code, str(exc)
    except Interrupted as stop:
        [signum] = stop.args
        code, message = 128 + signum, f"stopped by {signum.name}{stopped}"
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"{parser.prog}: {message}", file=sys.stderr)
    return code


def run_until_stopped(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` in an event loop; SIGTERM or SIGINT cancel it (so that every request is
    closed), which then raises ``Interrupted``."""

    async def cancellable() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        received: list[signal.Signals] = []

        def stop(signum: signal.Signals) -> None:
            received.append(signum)
            task.cancel()

        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, stop, signum)
        try:
            return await work
        except asyncio.CancelledError:
            if received:
                raise Interrupted(received[0]) from None
            raise
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)  # which leaves the default handler
                signal.signal(signum, _raise_interrupted)

    return asyncio.run(cancellable())
