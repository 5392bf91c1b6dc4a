"""``clipae-bench side-by-side``: two whole commands, A/B alternating, wall time and peak memory.

    clipae-bench side-by-side --ours "clipae-extract videos/ out/ --streams i3d_rgb" \\
        --theirs "python main.py feature_type=i3d video_paths=[...]" --theirs-cwd ../video_features --runs 3

Each of ``--runs`` rounds runs both commands once, in alternating order (ours first in odd rounds,
theirs first in even ones, so a drift of the machine hits both alike), each as a whole process in
its own process group, killed after ``--timeout`` seconds. Per run it prints the wall time, the
peak resident set of the largest process (its ``VmHWM``) and the peak of the summed
proportional set sizes (PSS) of the whole process tree (``/proc``, sampled every 50 ms; see
:mod:`clipae.bench.measure`); then the medians,
the ratios ours / theirs of the medians and the range of the per-round ratios. A command is split
like a shell would (``shlex``) but not run through one: write ``sh -c '...'`` for pipes or ``cd``.
A run that fails or times out stops the comparison (exit status 1).
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

from .extract import exit_text
from .measure import ChildRun, MiB, run_measured

PROG = "clipae-bench side-by-side"
MEASURES = (("wall_s", "wall s", 1.0), ("peak_rss", "peak RSS MiB (largest process)", MiB),
            ("tree_rss", "peak PSS MiB (all processes)", MiB))


def round_order(i: int) -> tuple[int, int]:
    """Which command goes first in round ``i`` (0-based): 0 = ours, 1 = theirs; A B, B A, A B, ..."""
    return (0, 1) if i % 2 == 0 else (1, 0)


def compare(commands: list[list[str]], cwds: list[str | None], runs: int, timeout: float,
            names: list[str]) -> tuple[list[list[ChildRun]], str | None]:
    """``runs`` alternating rounds; ``(runs per command, error or None)``, stopping at the first failed run."""
    done: list[list[ChildRun]] = [[], []]
    for i in range(runs):
        for which in round_order(i):
            run = run_measured(commands[which], timeout=timeout, cwd=cwds[which])
            print(f"round {i + 1} {names[which]:>8}: {run.wall_s:8.2f} s, peak RSS {run.peak_rss / MiB:7.0f} MiB "
                  f"(largest process), PSS {run.tree_rss / MiB:7.0f} MiB (all processes), {exit_text(run)}", flush=True)
            if not run.ok:
                return done, f"{names[which]} failed in round {i + 1} ({exit_text(run)}): {run.last_line}"
            done[which].append(run)
    return done, None


def summarize(done: list[list[ChildRun]], names: list[str]) -> dict:
    """Medians per command and measure, ratios ours / theirs of the medians, and per-round ratio ranges."""
    out = {}
    for key, _, _ in MEASURES:
        values = [[getattr(r, key) for r in runs] for runs in done]
        medians = [statistics.median(v) for v in values]
        pairs = [a / b for a, b in zip(*values) if b]
        out[key] = {names[0]: medians[0], names[1]: medians[1],
                    "ratio": medians[0] / medians[1] if medians[1] else float("nan"),
                    "round_ratios": pairs}
    return out


def print_summary(summary: dict, names: list[str], runs: int) -> None:
    print(f"medians of {runs} runs{'':16} {names[0]:>10} {names[1]:>10} {names[0] + ' / ' + names[1]:>16}  per round")
    for key, label, unit in MEASURES:
        s = summary[key]
        spread = f"{min(s['round_ratios']):.2f}-{max(s['round_ratios']):.2f}" if s["round_ratios"] else "-"
        print(f"{label:38} {s[names[0]] / unit:10.2f} {s[names[1]] / unit:10.2f} {s['ratio']:16.2f}  {spread}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--ours", required=True, metavar="COMMAND", help="the first command, e.g. a clipae-extract call")
    p.add_argument("--theirs", required=True, metavar="COMMAND", help="the command to compare with")
    p.add_argument("--runs", type=int, default=3, help="rounds of both commands (default %(default)s)")
    p.add_argument("--timeout", type=float, default=3600, metavar="SECONDS",
                   help="a run is killed after this long (default %(default)s)")
    p.add_argument("--ours-cwd", metavar="DIR", help="working folder of --ours (default: this one)")
    p.add_argument("--theirs-cwd", metavar="DIR", help="working folder of --theirs (default: this one)")
    p.add_argument("--names", default="ours,theirs", help="two labels for the table (default %(default)s)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write every run and the summary here")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    names = [n.strip() for n in a.names.split(",")]
    try:
        commands = [shlex.split(a.ours), shlex.split(a.theirs)]
    except ValueError as e:
        print(f"{PROG}: error: a command does not parse: {e}", file=sys.stderr)
        return 2
    problem = ("--runs must be at least 1" if a.runs < 1 else "--names takes two labels" if len(names) != 2
               else "--timeout must be positive" if a.timeout <= 0 else "a command is empty" if not all(commands)
               else next((f"{flag} {d} is not a folder" for flag, d in (("--ours-cwd", a.ours_cwd),
                          ("--theirs-cwd", a.theirs_cwd)) if d and not Path(d).is_dir()), None))
    if problem:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    try:
        done, error = compare(commands, [a.ours_cwd, a.theirs_cwd], a.runs, a.timeout, names)
    except OSError as e:  # the program does not exist or cannot run
        print(f"{PROG}: error: cannot run a command: {e}", file=sys.stderr)
        return 2
    if error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    summary = summarize(done, names)
    print_summary(summary, names, a.runs)
    if a.json:
        try:
            write_json(a.json, names, commands, summary, done)
        except OSError as e:
            print(f"{PROG}: error: cannot write {a.json}: {e.strerror or e}", file=sys.stderr)
            return 2
    return 0


def write_json(path: Path, names: list[str], commands: list[list[str]], summary: dict,
               done: list[list[ChildRun]]) -> None:
    """The commands, the summary and every run (seconds, bytes) as JSON."""
    runs = {n: [{"wall_s": r.wall_s, "peak_rss": r.peak_rss, "tree_rss": r.tree_rss} for r in rs]
            for n, rs in zip(names, done)}
    path.write_text(json.dumps({"commands": dict(zip(names, commands)), "summary": summary, "runs": runs}, indent=1),
                    encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
