"""Logging into the host's structured log, tagged with the projector's name and
version. Natively, lines go to standard error.

    from refract_sdk import log

    log.warn(f"deposit to unopened account {account}")

Each line is one host call, and the host caps a message's length and the lines per
call: log exceptional things, not every event.
"""

import sys
from enum import Enum

from ._projector import IN_COMPONENT


class Level(Enum):
    """How important a log line is."""

    TRACE = "trace"
    """Very detailed tracing."""
    DEBUG = "debug"
    """Detail for debugging."""
    INFO = "info"
    """Normal operation."""
    WARN = "warn"
    """Something unexpected that the projector handled."""
    ERROR = "error"
    """Something failed."""


if IN_COMPONENT:
    from wit_world.imports import log as _wit

    _WIT_LEVELS = {
        Level.TRACE: _wit.Level.TRACE,
        Level.DEBUG: _wit.Level.DEBUG,
        Level.INFO: _wit.Level.INFO,
        Level.WARN: _wit.Level.WARN,
        Level.ERROR: _wit.Level.ERROR,
    }

    def write(level: Level, message: str) -> None:
        """Writes one line to the host's log."""
        _wit.write(_WIT_LEVELS[level], str(message))

else:

    def write(level: Level, message: str) -> None:
        """Writes one line to the host's log (natively: to standard error)."""
        print(f"[projector {level.value}] {message}", file=sys.stderr)


def trace(message: str) -> None:
    """Logs a line at trace level."""
    write(Level.TRACE, message)


def debug(message: str) -> None:
    """Logs a line at debug level."""
    write(Level.DEBUG, message)


def info(message: str) -> None:
    """Logs a line at info level."""
    write(Level.INFO, message)


def warn(message: str) -> None:
    """Logs a line at warn level."""
    write(Level.WARN, message)


def error(message: str) -> None:
    """Logs a line at error level."""
    write(Level.ERROR, message)
