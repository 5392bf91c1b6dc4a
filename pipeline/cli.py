"""Console entry points. Each command lives in its own module; this file only dispatches."""
from __future__ import annotations

import importlib
import sys

# command -> module whose ``main(argv) -> int`` implements it
COMMANDS = {
    "extract": "clipae.pipeline.extract_cli",
    "train": "clipae.models.train",
    "localize": "clipae.eval.localize",
    "eval": "clipae.eval.cli",
    "bench": "clipae.pipeline.bench",
}


def _run(command: str, argv: list[str] | None = None) -> int:
    module = COMMANDS[command]
    try:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                print(f"clipae-{command}: not available yet", file=sys.stderr)
                return 2
            raise
        return int(mod.main(sys.argv[1:] if argv is None else argv) or 0)
    except KeyboardInterrupt:  # Ctrl-C where a command has no safe point of its own (start-up included)
        print(f"clipae-{command}: interrupted", file=sys.stderr)
        return 130


def extract_main(argv=None) -> int:
    return _run("extract", argv)


def train_main(argv=None) -> int:
    return _run("train", argv)


def localize_main(argv=None) -> int:
    return _run("localize", argv)


def eval_main(argv=None) -> int:
    return _run("eval", argv)


def bench_main(argv=None) -> int:
    return _run("bench", argv)
