"""Decoding in worker processes: several videos decoded at once, beside the networks.

``clipae-extract --decode-workers N`` starts N processes. Each decodes one video at a time with
:func:`clipae.decoding.snippets.produce`, the code the in-process thread of
:class:`~clipae.decoding.snippets.SnippetSource` runs, and hands its batches over through
shared memory:

- every worker owns ``queue_size + 3`` *slots*, shared-memory buffers reused from batch to
  batch (a fresh buffer per batch would page-fault ~90 MB per batch of 16 THUMOS snippets);
- the worker copies a batch's arrays into a free slot and sends the slot's number and layout;
  the main process reads them in place (numpy views, no copy);
- a slot is free again once every array viewing it is gone (``weakref.finalize`` on the
  tensor the views hang from), whatever the order, so batches the packing code
  (:mod:`clipae.decoding.packing`) still holds are never overwritten;
- a slot grows when a batch does not fit (another frame size); the new buffer travels with
  that batch, once;
- a worker that finds no free slot for ``SLOT_PATIENCE_S`` adds one, so a caller that keeps
  batches costs memory, never a deadlock.

Each video's queue holds at most ``queue_size`` batches, so memory stays bounded whatever the
videos' lengths. A worker that dies (a decoder crashing on a broken file) fails only the video it
was reading (one line, ``the decoding process died ...``) and is replaced; the run goes on.
Workers exit by themselves when the main process is gone (``kill -9`` included). A worker that
hands over nothing for ``stall_timeout_s`` while its video is being read (a decoder or ffmpeg
stuck) is killed and replaced; the video fails with ``stalled: no frames for N s``.

Workers are forked where the platform can (Linux), as PyTorch's ``DataLoader`` workers are: they
start at once, and never touch CUDA or the networks. Elsewhere they are spawned, which
re-imports the main module: a script that extracts through this API must then guard its entry
point with ``if __name__ == "__main__":``.
"""
from __future__ import annotations

import os
import pickle
import queue
import signal
import time
import weakref
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.multiprocessing as tmp

from ..core.interrupt import default_signals_in_child
from .batch import SnippetBatch
from .decode import InputError, one_line
from .snippets import DEFAULT_STALL_TIMEOUT_S, BatchSource, End, Failure, VideoJob, produce, stalled, storage_bytes

#: seconds between checks that the other side is still alive
POLL_S = 0.5
#: how worker processes start (see the module docstring)
START_METHOD = "fork" if "fork" in tmp.get_all_start_methods() else "spawn"
#: slots per worker beyond the queue: the batch being cut, and two the main process may hold
SPARE_SLOTS = 3
SLOT_PATIENCE_S = 2.0
ALIGN = 64


def auto_decode_workers(device: torch.device) -> int:
    """``--decode-workers auto``: 0 (a thread) when the networks run on the CPU, which needs its
    cores for them (decoding processes were slower there, see the README); otherwise half the
    cores this process may use, shared by the ranks on this node (``LOCAL_WORLD_SIZE``), 1 to 8."""
    if torch.device(device).type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ranks_here = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    return max(1, min(8, cores // (2 * ranks_here)))


class Closed:
    """Sent after every job, whatever happened to it: the worker is ready for the next."""


@dataclass
class SlotBatch:
    """A :class:`SnippetBatch` lying in slot ``slot``: ``layout`` = ``[(field, dtype, shape, offset)]``.
    ``storage`` is the slot's buffer when it is new (first use or grown), else ``None``."""

    slot: int
    layout: list[tuple[str, str, tuple[int, ...], int]]
    storage: torch.UntypedStorage | None = None


def _layout(batch: SnippetBatch) -> tuple[list[tuple[str, str, tuple[int, ...], int]], int]:
    layout, offset = [], 0
    for f in fields(SnippetBatch):
        value = getattr(batch, f.name)
        if value is not None:
            layout.append((f.name, value.dtype.str, value.shape, offset))
            offset += -(-value.nbytes // ALIGN) * ALIGN
    return layout, offset


def _sendable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else the same message in an exception that does."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        kind = InputError if isinstance(error, InputError) else RuntimeError
        return kind(f"{type(error).__name__}: {one_line(error)}")


def _serve(jobs, results, free, abort, parent: int) -> None:
    """A worker's life: take ``(number, VideoJob)`` from ``jobs`` and decode it into ``results``."""
    torch.set_num_threads(1)
    default_signals_in_child()  # Ctrl-C and SIGTERM are the main process's to handle
    storages: dict[int, torch.UntypedStorage] = {}

    def parent_alive() -> bool:
        return os.getppid() == parent

    def wait(get, stopped, patience: float = float("inf")):
        waited = 0.0
        while not stopped() and waited < patience:
            try:
                return get(timeout=min(POLL_S, patience))
            except queue.Empty:
                waited += POLL_S
        return None

    def to_slot(batch: SnippetBatch, stopped, waiting) -> SlotBatch | None:
        try:
            slot = free.get_nowait()
        except queue.Empty:
            waiting()
            slot = wait(free.get, stopped, SLOT_PATIENCE_S)
        if stopped():
            return None
        if slot is None:  # the main process holds every slot: one more
            slot = max(storages, default=-1) + 1
        layout, nbytes = _layout(batch)
        new = None
        if slot not in storages or storages[slot].nbytes() < nbytes:
            new = storages[slot] = torch.UntypedStorage(nbytes).share_memory_()
        buffer = storage_bytes(storages[slot])
        for name, dtype, shape, offset in layout:
            value = getattr(batch, name)
            np.copyto(buffer[offset:offset + value.nbytes].view(dtype).reshape(shape), value)
        return SlotBatch(slot, layout, new)

    while parent_alive():
        item = wait(jobs.get, lambda: not parent_alive())
        if item is None:
            return
        number, job = item

        def stopped() -> bool:
            return abort.value == number or not parent_alive()

        def put(x, waiting) -> bool:
            if isinstance(x, SnippetBatch):
                x = to_slot(x, stopped, waiting)
                if x is None:
                    return False
            elif isinstance(x, Failure):
                x = Failure(_sendable(x.error))
            if not stopped():
                try:
                    results.put_nowait((number, x))
                    return True
                except queue.Full:
                    waiting()
            while not stopped():
                try:
                    results.put((number, x), timeout=POLL_S)
                    return True
                except queue.Full:
                    pass
            return False

        produce(job, put, stopped)
        put(Closed(), lambda: None)


def _free_slot(free, slot: int) -> None:
    try:
        free.put(slot)
    except (ValueError, OSError):  # the worker is gone and its queue closed
        pass


class _Worker:
    def __init__(self, ctx, queue_size: int) -> None:
        self.jobs = ctx.Queue()
        self.results = ctx.Queue(maxsize=queue_size)
        self.free = ctx.Queue()
        for slot in range(queue_size + SPARE_SLOTS):
            self.free.put(slot)
        self.storages: dict[int, torch.UntypedStorage] = {}
        self.abort = ctx.Value("q", -1, lock=False)
        self.process = ctx.Process(target=_serve, args=(self.jobs, self.results, self.free, self.abort, os.getpid()),
                                   name="clipae-decode", daemon=True)
        self.process.start()

    def batch(self, item: SlotBatch) -> SnippetBatch:
        """The batch in slot ``item.slot``, as numpy views; the slot is freed once they are all gone."""
        if item.storage is not None:
            self.storages[item.slot] = item.storage
        buffer = storage_bytes(self.storages[item.slot])
        weakref.finalize(buffer.base, _free_slot, self.free, item.slot)
        arrays = {name: buffer[offset:offset + int(np.prod(shape)) * np.dtype(dtype).itemsize].view(dtype).reshape(shape)
                  for name, dtype, shape, offset in item.layout}
        return SnippetBatch(**arrays)

    def discard(self, item) -> None:
        """A message nobody will read (an abandoned video's tail): free its slot."""
        if isinstance(item, SlotBatch):
            if item.storage is not None:
                self.storages[item.slot] = item.storage
            _free_slot(self.free, item.slot)

    def death(self) -> str | None:
        """Why the process is gone (``None`` while it runs)."""
        if self.process.is_alive():
            return None
        code = self.process.exitcode
        return f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"

    def stop(self) -> None:
        if self.process.is_alive():
            self.jobs.put(None)
            self.process.join(timeout=2 * POLL_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        for q in (self.jobs, self.results, self.free):
            q.cancel_join_thread()
            q.close()


class WorkerSource(BatchSource):
    """One video decoded by a worker process (see :class:`BatchSource`)."""

    def __init__(self, pool: "DecodePool", worker: _Worker, number: int, job: VideoJob,
                 stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S) -> None:
        self.job = job
        self._stall_s = stall_timeout_s
        self.path = job.path
        self._pool = pool
        self._worker: _Worker | None = worker
        self._number = number
        worker.jobs.put((number, job))

    @property
    def pid(self) -> int | None:
        """The process decoding this video (``None`` once it is done)."""
        return self._worker.process.pid if self._worker is not None else None

    def _next(self) -> SnippetBatch | None:
        worker = self._worker
        if worker is None:
            return None
        item = self._get()
        if isinstance(item, End):
            self.backend = item.backend
            self._release()
            return None
        return worker.batch(item)

    def _get(self):
        worker = self._worker
        if worker is None:
            raise RuntimeError(f"{self.path}: this video's decoding has ended")
        waiting_since = time.monotonic()
        while True:
            try:
                number, item = worker.results.get(timeout=POLL_S)
            except queue.Empty:
                death = worker.death()
                if death is not None:
                    self._release()
                    raise InputError(f"the decoding process died ({death})") from None
                if time.monotonic() - waiting_since >= self._stall_s:
                    worker.process.kill()  # stuck in its decoder; the pool starts a fresh one
                    worker.process.join(timeout=POLL_S * 10)
                    self._release()
                    raise stalled(self._stall_s) from None
                continue
            if number != self._number:
                worker.discard(item)  # the tail of an earlier video this worker read
                continue
            if isinstance(item, Closed):
                self._release()
                raise RuntimeError("the decoding process stopped before the video's end")
            if isinstance(item, Failure):
                self._release()
                raise item.error
            return item

    def _release(self) -> None:
        if self._worker is not None:
            self._pool._give_back(self._worker)
            self._worker = None

    def close(self) -> None:
        """Stop decoding this video (also mid-video); the worker goes back to the pool."""
        if self._worker is not None:
            self._worker.abort.value = self._number
            self._release()


class DecodePool:
    """``workers`` decoding processes; :meth:`open` gives each video to an idle one.

    At most ``workers`` sources are open at a time (a source holds its worker until its last
    batch is read or it is closed). Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, workers: int, queue_size: int = 2, stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S) -> None:
        if workers < 1:
            raise ValueError("a decode pool needs at least one worker")
        self._ctx = tmp.get_context(START_METHOD)
        self._queue_size = queue_size
        self._stall_s = stall_timeout_s
        self.size = workers
        self._idle = [_Worker(self._ctx, queue_size) for _ in range(workers)]
        self._busy: list[_Worker] = []
        self._jobs = 0

    def open(self, job: VideoJob, after: object = None) -> WorkerSource:
        """Start decoding ``job`` in an idle worker (``after`` is ignored: workers decode side by side)."""
        if not self._idle:
            raise RuntimeError(f"all {self.size} decoding processes are busy")
        worker = self._idle.pop()
        self._busy.append(worker)
        self._jobs += 1
        return WorkerSource(self, worker, self._jobs, job, self._stall_s)

    def _give_back(self, worker: _Worker) -> None:
        self._busy.remove(worker)
        if worker.death() is not None:
            worker.stop()
            worker = _Worker(self._ctx, self._queue_size)
        self._idle.append(worker)

    def close(self) -> None:
        for worker in self._idle + self._busy:
            worker.stop()
        self._idle, self._busy = [], []

    def __enter__(self) -> "DecodePool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
