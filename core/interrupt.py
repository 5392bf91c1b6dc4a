"""Ctrl-C and ``kill``: stop at a safe point, say so, exit 130 / 143; a second one stops at once.

``clipae-extract`` and ``clipae-train`` run their work inside ``with StopSignals(prog) as stop:``
and look at ``stop.requested`` where stopping leaves everything resumable (between network
batches: feature files and checkpoints are only ever replaced whole). The first SIGINT or
SIGTERM sets the flag and prints one line; the second ends the process at once with the same
exit status (what is on disk is still consistent: every write is atomic). Exit statuses follow
the shell's ``128 + signal number``: 130 for SIGINT, 143 for SIGTERM.

The handler only sets a flag and writes with ``os.write``: it takes no lock that the interrupted
code might hold.
"""
from __future__ import annotations

import os
import signal
import threading

from .errors import ClipaeError

#: the signals that ask for a stop, and the exit status for each
EXIT_STATUS = {signal.SIGINT: 128 + signal.SIGINT, signal.SIGTERM: 128 + signal.SIGTERM}


class Stopped(ClipaeError):
    """Raised at a safe point after a stop was asked for; ``signal_name`` says which."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.signal_name}")

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS[self.signum]


class StopSignals:
    """Turns SIGINT / SIGTERM into :attr:`requested` for the duration of a ``with`` block.

    Outside the main thread (where Python cannot install handlers) it does nothing, and a
    signal this process was started ignoring stays ignored.
    """

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        """Raise :class:`Stopped` if a stop was asked for (call it at safe points)."""
        if self.signum is not None:
            raise Stopped(self.signum)

    def _say(self, text: str) -> None:
        try:
            os.write(2, f"{self.prog}: {text}\n".encode())
        except OSError:
            pass

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            self._say(f"second {name}: stopping now")
            os._exit(EXIT_STATUS[signum])
        self.signum = signum
        self._say(f"{name}: stopping at the next safe point (again to stop at once)")

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in EXIT_STATUS:
                if signal.getsignal(s) is not signal.SIG_IGN:  # e.g. SIGINT of a shell's background job
                    self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


def _terminated(signum: int, frame) -> None:
    raise SystemExit(EXIT_STATUS[signum])


def exit_on_sigterm() -> None:
    """A console script's SIGTERM outside its :class:`StopSignals` block (while it starts, or once
    its work is done and it winds down) exits with 143 through ``SystemExit`` instead of killing the
    process with the default action (status -15, no clean-up)."""
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
        signal.signal(signal.SIGTERM, _terminated)


def default_signals_in_child() -> None:
    """For a forked helper process: the default SIGTERM back, SIGINT ignored (the parent handles
    Ctrl-C and stops its helpers itself)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
