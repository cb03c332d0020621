"""Reading settings files strictly: a problem is one line naming the place (line, column,
key path), never the content around it, which may hold API keys or password hashes."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

MAX_SETTINGS_FILE_BYTES = 1 << 20  # thousands of apps fit in a few hundred kilobytes
MAX_YAML_DEPTH = 32  # the deepest real file is four levels
Model = TypeVar("Model", bound=BaseModel)


class FileProblem(Exception):
    """A settings file that cannot be used as it is; the message is one line."""


def read_small_text(path: Path, limit: int) -> str:
    """The UTF-8 text of the regular file ``path``, if it is at most ``limit`` bytes."""
    # Opened without blocking, checked before any read: a FIFO or /dev/zero is refused at once.
    # open() of the descriptor would refuse a directory itself, with a vaguer message.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise FileProblem("not a regular file (a directory, FIFO, socket or device)")
            with open(fd, "rb", closefd=False) as file:
                data = file.read(limit + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise FileProblem(f"cannot read the file ({os_reason(exc)})") from None
    if len(data) > limit:
        raise FileProblem(f"the file is larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FileProblem("the file is not UTF-8 text") from None


def os_reason(exc: OSError) -> str:
    """What went wrong, in the system's words (never ``None``)."""
    return exc.strerror or type(exc).__name__


class _StrictLoader(yaml.SafeLoader):
    """No duplicate keys (as in Go's strict YAML), no aliases, no deep nesting."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            problem = "aliases (*name) are not allowed"
        elif self.depth >= MAX_YAML_DEPTH:
            problem = f"nested deeper than {MAX_YAML_DEPTH} levels"
        else:
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1
        raise yaml.composer.ComposerError(None, None, problem, self.peek_event().start_mark)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                break  # the base class reports it
            if key in seen:
                message = f"duplicate key {key!r}"
                raise yaml.constructor.ConstructorError(None, None, message, key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, model: type[Model]) -> Model:
    """The YAML file ``path`` validated as a ``model``; any problem is a ``FileProblem``."""
    text = read_small_text(path, MAX_SETTINGS_FILE_BYTES)
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as exc:
        # Only the problem and its position: str(exc) quotes the line.
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise FileProblem(f"invalid YAML{where}: {exc.problem or 'syntax error'}") from None
    except yaml.YAMLError:
        raise FileProblem("invalid YAML") from None
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise FileProblem(describe_validation_error(exc)) from None


def key_path(loc: tuple[int | str, ...]) -> str:
    """``("apps", 0, "name")`` -> ``apps[0].name``."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)[1:]


def describe_validation_error(
    error: ValidationError, where: Callable[[tuple[int | str, ...]], str] = key_path
) -> str:
    """One clause per problem, naming where it is (``where(loc)``) and never the value."""
    clauses = []
    for item in error.errors(include_input=False, include_url=False):
        loc, message = item["loc"], item["msg"].removeprefix("Value error, ")
        if loc and loc[-1] == "[key]":  # a mapping key of the wrong type, e.g. 123:
            wanted = "an integer" if item["type"].startswith("int") else "a string (quote it)"
            loc, message = loc[:-1], f"each key must be {wanted}"
        elif item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "model_type":  # not "... or instance of _ConfigFile", a class name
            message = "Input should be a valid dictionary"
        place = where(loc)
        clauses.append(f"{place}: {message}" if place else message)
    return "; ".join(clauses)
