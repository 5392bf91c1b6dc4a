"""The one error spine: every failure clipae reports as a single line derives from :class:`ClipaeError`.

``exit_status`` is what a console script exits with (:mod:`clipae.cli`): 2 for bad input (an
argument, a file, a format the command cannot use), 1 for work that was started and failed.
Anything else that escapes a command is a bug: its traceback goes to a log file, never the terminal.
"""
from __future__ import annotations


class ClipaeError(Exception):
    """Base of every error that is reported as one line."""

    exit_status = 1


class BadInput(ClipaeError):
    """What the user gave cannot be used: a wrong argument, a missing or malformed file."""

    exit_status = 2


class WorkFailed(ClipaeError):
    """Work that was started could not be completed (a download, a write, a failed video)."""

    exit_status = 1
