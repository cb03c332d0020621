"""Reading a YAML settings file strictly, with errors that never quote its content.

Used for the multi-app config file and the web config file alike: a file may hold API
keys or password hashes, so an error names the place (line, column, key path) and the
problem, never the text around it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

MAX_SETTINGS_FILE_BYTES = 1 << 20  # thousands of apps fit in a few hundred kilobytes
MAX_YAML_DEPTH = 32  # the deepest real file is four levels


class FileProblem(Exception):
    """A settings file that cannot be read as it is; the message is one line."""


def read_small_text(path: Path, limit: int) -> str:
    """The UTF-8 text of the regular file ``path``, if it is at most ``limit`` bytes.

    Opened without blocking and checked before any read, so that a FIFO (which would
    wait for a writer for ever) or a device such as /dev/zero (which never ends) is
    refused at once instead of hanging or filling memory.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise FileProblem(f"cannot read the file ({os_reason(exc)})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileProblem("not a regular file (a directory, FIFO, socket or device)")
        data = b""
        while len(data) <= limit and (chunk := os.read(fd, limit + 1 - len(data))):
            data += chunk
    except OSError as exc:
        raise FileProblem(f"cannot read the file ({os_reason(exc)})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileProblem(f"the file is larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FileProblem("the file is not UTF-8 text") from None


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate keys, as Go's strict YAML does, and
    aliases and deep nesting, which no settings file needs and a hostile one abuses."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed", self.peek_event().start_mark
            )
        if self._depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"nested deeper than {MAX_YAML_DEPTH} levels",
                self.peek_event().start_mark,
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def read_yaml(path: Path, fail: Callable[[str], Exception]) -> Any:
    """The parsed document; any problem is raised as ``fail(problem)``."""
    try:
        text = read_small_text(path, MAX_SETTINGS_FILE_BYTES)
    except FileProblem as exc:
        raise fail(str(exc)) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        # Only the problem and its position: str(exc) quotes the line.
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise fail(f"invalid YAML{where}: {exc.problem or 'syntax error'}") from None
    except yaml.YAMLError:
        raise fail("invalid YAML") from None


def key_path(loc: tuple[int | str, ...]) -> str:
    """``("apps", 0, "name")`` -> ``apps[0].name``."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)[1:]


def describe_validation_error(
    error: ValidationError, where: Callable[[tuple[int | str, ...]], str] = key_path
) -> str:
    """One clause per problem, naming where it is (``where(loc)``) and never the value."""
    clauses = []
    for item in error.errors(include_input=False, include_url=False):
        loc = item["loc"]
        if loc and loc[-1] == "[key]":  # a mapping key of the wrong type, e.g. 123:
            wanted = "an integer" if item["type"].startswith("int") else "a string (quote it)"
            place, message = where(loc[:-1]), f"each key must be {wanted}"
        else:
            place = where(loc)
            message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        message = message.removeprefix("Value error, ")
        clauses.append(f"{place}: {message}" if place else message)
    return "; ".join(clauses)
