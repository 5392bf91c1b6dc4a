"""Whole-process measurements for the benchmarks: a child command's wall time and peak memory.

* :func:`run_measured` runs a command under a timeout and returns a :class:`ChildRun`: wall
  seconds, the peak resident set of its largest process and the peak of the summed proportional
  set sizes (PSS: a page shared by n processes counts 1/n in each, so forked workers are not
  counted twice) of its whole process tree (both from ``/proc``, sampled every ``interval``
  seconds) and its exit status. On timeout the child's whole process group is killed.

  The largest process's peak is the largest ``VmHWM`` (the kernel's high-water mark of one
  address space) seen in any process of the tree, not ``ru_maxrss`` of ``os.wait4``: Linux
  carries the parent's high-water mark into a child across ``vfork``/``exec``, so a child of a big
  process (a benchmark that imported torch, pytest) would report at least its parent's size.
  Growth in the last ``interval`` before a process exits is not seen. Without ``/proc``
  ``ru_maxrss`` is the fallback.
* :class:`RSSSampler` samples the summed PSS of a process tree in a background thread
  (e.g. this process while one stream runs).
* :func:`count_flops` counts a call's FLOPs (the streams' GFLOP per snippet).
"""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
PROC = Path("/proc")


def _children() -> dict[int, list[int]]:
    """{parent pid: [child pids]} of every process visible in /proc."""
    tree: dict[int, list[int]] = {}
    for entry in PROC.glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _status_kib(pid: int | str, key: str) -> int | None:
    """A ``kB`` field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``) in KiB; None when absent."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return None


def _pss(pid: int) -> int | None:
    """Proportional set size of ``pid`` in bytes (``/proc/PID/smaps_rollup``), else its RSS
    (``statm``); None when the process is gone."""
    try:
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    try:
        return int((PROC / str(pid) / "statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return None


def own_peak_rss() -> int:
    """This process's own peak resident set in bytes (``VmHWM``; ``ru_maxrss`` without /proc,
    which may include the parent's mark, see the module's notes)."""
    kib = _status_kib("self", "VmHWM")
    if kib is None:
        import resource
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


def tree_usage(pid: int) -> tuple[int, int]:
    """``(summed PSS, largest VmHWM)`` in bytes over ``pid`` and all its descendants;
    ``(0, 0)`` without /proc."""
    if not PROC.is_dir():
        return 0, 0
    tree, todo, total, largest = _children(), [pid], 0, 0
    while todo:
        p = todo.pop()
        pss = _pss(p)
        if pss is None:
            continue
        total += pss
        largest = max(largest, (_status_kib(p, "VmHWM") or 0) * 1024)
        todo.extend(tree.get(p, ()))
    return total, largest


def tree_rss(pid: int) -> int:
    """Summed PSS (bytes) of ``pid`` and all its descendants; 0 without /proc."""
    return tree_usage(pid)[0]


class RSSSampler:
    """``with RSSSampler(pid) as s: ...`` → ``s.peak``: the largest summed PSS (bytes) of the
    process tree of ``pid`` (default: this process and its children) seen every ``interval`` seconds."""

    def __init__(self, pid: int | None = None, interval: float = 0.05) -> None:
        self.pid, self.interval, self.peak = os.getpid() if pid is None else pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> None:
        self.peak = max(self.peak, tree_rss(self.pid))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "RSSSampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()


@dataclass
class ChildRun:
    """One measured run of a command."""

    wall_s: float
    peak_rss: int      # bytes, the largest single process (VmHWM sampled; ru_maxrss without /proc)
    tree_rss: int      # bytes, peak of the sampled PSS sum over the process tree (0 without /proc)
    status: int        # exit status; negative: killed by that signal
    timed_out: bool
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == 0 and not self.timed_out

    @property
    def last_line(self) -> str:
        """stdout's last line, else stderr's."""
        lines = self.stdout.strip().splitlines() or self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


#: how long a killed child may take to disappear (a process stuck in the kernel, e.g. in a driver,
#: dies only when it leaves it); past that it is reported as killed and left to the system
KILL_WAIT_S = 30.0


def _reap(pid: int, within: float):
    """``(wait status, rusage)`` of a killed child, polled for at most ``within`` seconds."""
    end = time.monotonic() + within
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done or time.monotonic() > end:
            return (status if done else 9), usage  # 9: the raw status of a death by SIGKILL
        time.sleep(0.05)


def run_measured(cmd: list[str], timeout: float | None = None, cwd: str | None = None, env: dict | None = None,
                 interval: float = 0.05) -> ChildRun:
    """Run ``cmd`` (its own process group, stdin closed) until it exits or ``timeout`` seconds pass
    (then its group gets SIGKILL); wall time, peak RSS of its largest process and of its tree."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                                start_new_session=True)
        peak_tree, peak_one, timed_out = 0, 0, False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            total, largest = tree_usage(proc.pid)
            peak_tree, peak_one = max(peak_tree, total), max(peak_one, largest)
            if timeout is not None and time.perf_counter() - start > timeout:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                status, usage = _reap(proc.pid, KILL_WAIT_S)
                break
            time.sleep(interval)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = (f.read().decode("utf-8", "replace") for f in (out, err))
    return ChildRun(wall, peak_one if PROC.is_dir() else usage.ru_maxrss * 1024, peak_tree, proc.returncode,
                    timed_out, stdout, stderr)


def count_flops(fn, *args) -> int:
    """FLOPs of ``fn(*args)`` as ``torch.utils.flop_counter`` counts them (convolutions and matrix
    products), with the fused inference path of ``nn.MultiheadAttention`` turned off meanwhile.

    In eval mode without gradients that path runs the whole attention block as one
    ``_native_multi_head_attention`` operator, which the counter has no formula for: CLIP ViT-B/16
    in float32 read 360.7 GFLOP per 16-frame snippet instead of 539.1 (its QKV and output
    projections uncounted). The unfused path computes the same products.
    """
    import torch   # here, so that the whole-process measurements above do not import torch
    from torch.utils.flop_counter import FlopCounterMode

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:  # a compiled network (``--compile``) runs eagerly here: counted alike, no second compile
        with torch._dynamo.config.patch(disable=True), FlopCounterMode(display=False) as counter:
            fn(*args)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops()
