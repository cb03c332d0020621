"""The command line's common part: one flag per setting, and errors that never echo a
value. The daemon, ``backfill`` and ``check`` all build their parsers from it.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from exporter.config import Settings, env_name, load_settings
from exporter.logs import setup_logging

PROG = "connectycube-exporter"


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
            dest=name,
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
