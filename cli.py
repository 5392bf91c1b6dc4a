"""The console scripts, and the one wrapper they all run through.

Each command lives in its own module with ``main(argv) -> int``; :func:`run` calls it and turns
whatever escapes into one line on stderr and an exit status: a :class:`~clipae.core.errors.ClipaeError`
exits with its own status (2 bad input, 1 failed work), an ``OSError`` (a path that cannot be read or
written) with 2, Ctrl-C with
130; an unexpected exception (a bug) prints one line naming a log file that holds its traceback.
``python -m clipae COMMAND ...`` (and ``torchrun ... -m clipae train ...``) runs the same commands.
"""
from __future__ import annotations

import datetime
import importlib
import os
import sys
import traceback
from functools import partial
from pathlib import Path
from typing import Callable

from .core.errors import ClipaeError
from .core.fsio import CACHE_DIR

# command -> module whose ``main(argv) -> int`` implements it
COMMANDS = {
    "extract": "clipae.pipeline.extract_cli",
    "train": "clipae.models.train",
    "localize": "clipae.eval.localize",
    "eval": "clipae.eval.cli",
    "bench": "clipae.bench.cli",
    "convert-gt": "clipae.datasets.annotations",
    "import-features": "clipae.datasets.import_features",
    "compare-features": "clipae.datasets.compare_features",
}
#: where an unexpected error's traceback is written (``$CLIPAE_LOG_DIR`` overrides)
LOG_DIR = Path(os.environ.get("CLIPAE_LOG_DIR", CACHE_DIR / "logs"))


def command_main(command: str) -> Callable[[list[str]], int]:
    """The ``main(argv)`` of ``command``; ``train`` is given the cluster-naming step of ``--class-names``,
    which lives with evaluation (it scores clusters against CLIP text), above the model."""
    main = importlib.import_module(COMMANDS[command]).main
    if command == "train":
        from .eval.naming import name_after_training
        return lambda argv: main(argv, name_clusters=name_after_training)
    return main


def _log_traceback(prog: str) -> Path | None:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        path = LOG_DIR / f"{prog}-{stamp}-{os.getpid()}.log"
        path.write_text(traceback.format_exc(), encoding="utf-8")
        return path
    except OSError:
        return None


def run(command: str, argv: list[str] | None = None, main: Callable[[list[str]], int] | None = None) -> int:
    """Run ``clipae-COMMAND argv`` and return its exit status; nothing but one line reaches stderr on
    failure. ``main``: the command's function (default: :func:`command_main`; tests give their own)."""
    prog = f"clipae-{command}"
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return int((main or command_main(command))(argv) or 0)
    except KeyboardInterrupt:   # Ctrl-C where a command has no safe point of its own (start-up included)
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except ClipaeError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_status
    except OSError as e:        # a file that cannot be read or written: no permission, disk full, a file as folder
        where = f"{e.filename}: " if e.filename else ""
        print(f"{prog}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except Exception as e:      # noqa: BLE001 -- a bug: one line here, the traceback in a log file
        log = _log_traceback(prog)
        print(f"{prog}: internal error: {type(e).__name__}: {e}"
              + (f" (traceback in {log})" if log else ""), file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """``python -m clipae COMMAND ...``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m clipae {{{','.join(COMMANDS)}}} [options]", file=sys.stderr)
        return 2
    return run(argv[0], argv[1:])


def __getattr__(name: str) -> Callable[[list[str] | None], int]:
    """The console scripts of ``setup.cfg``: ``extract_main``, ``train_main``, ``convert_gt_main``, ...
    (``clipae-extract`` → ``run("extract")``)."""
    command = name.removesuffix("_main").replace("_", "-")
    if name.endswith("_main") and command in COMMANDS:
        return partial(run, command)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
