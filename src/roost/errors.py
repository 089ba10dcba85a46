"""The one error family roost raises for things a user can act on.

The CLI prints `RoostError` as one line without a traceback and exits non-zero; the API (later) maps it to an
OpenAI-shaped 4xx body. Anything else escaping is a bug.
"""

from __future__ import annotations


class RoostError(Exception):
    """An error with a message a user can act on (name the file, record, field or setting)."""

    exit_code = 1


class UsageError(RoostError):
    """A command-line option or setting is wrong."""

    exit_code = 2


class FormatError(RoostError):
    """An input file is not in a format roost can read (or not the one that was forced)."""


class StrictModeError(RoostError):
    """`--strict` turned a bad record into a fatal error."""
