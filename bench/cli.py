"""``clipae-bench <what> ...``: benchmark commands that print numbers.

Each benchmark lives beside the code it measures and exposes ``main(argv) -> int``.
"""
from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "extract": "clipae.bench.extract",  # decode, per-stream snippets/s, memory, FLOP/s
    "streams": "clipae.bench.streams",         # the visual streams' networks alone, per stream
    "train": "clipae.bench.train",               # one unsupervised training on synthetic features
    "eval": "clipae.bench.eval",                  # evaluator speed on ActivityNet-sized predictions
    "utal": "clipae.bench.utal",             # unsupervised localisation on held-out synthetic families
    "soak": "clipae.bench.soak",               # extraction under random kill -9 / SIGINT / SIGTERM, checked
    "side-by-side": "clipae.bench.side", # two whole commands, A/B alternating: wall time, peak RSS
    "gpu": "clipae.bench.gpu",           # the one-shot check of a GPU machine (--dry-run: CPU, tiny)
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: clipae-bench {{{','.join(BENCHMARKS)}}} [options]", file=sys.stderr)
        return 2
    return int(importlib.import_module(BENCHMARKS[argv[0]]).main(argv[1:]) or 0)
