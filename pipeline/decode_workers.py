"""Decoding in worker processes: several videos decoded at once, beside the networks.

``clipae-extract --decode-workers N`` starts N processes (``spawn``, so they are safe beside
CUDA and threads). Each decodes one video at a time with :func:`clipae.pipeline.snippets.produce`,
the code the in-process thread of :class:`~clipae.pipeline.snippets.SnippetSource` runs, and
hands its batches over as torch tensors, which ``torch.multiprocessing`` moves into shared
memory: the main process maps them without copying. Each video's queue holds at most
``queue_size`` batches, so memory stays bounded whatever the videos' lengths.

Why processes: decoding and resizing hold the GIL for part of their work and a decoder can
crash on a broken file. A worker that dies fails only the video it was reading (one line,
``the decoding process died ...``) and is replaced; the run goes on.

Workers exit by themselves when the main process is gone (``kill -9`` included).
"""
from __future__ import annotations

import os
import pickle
import queue
import signal
from dataclasses import fields
from typing import Iterator

import numpy as np
import torch
import torch.multiprocessing as tmp

from clipae.extractors.base import SnippetBatch
from clipae.pipeline.decode import InputError, one_line
from clipae.pipeline.snippets import End, Failure, VideoFacts, VideoJob, produce

#: seconds between checks that the other side is still alive
POLL_S = 0.5


class Closed:
    """Sent after every job, whatever happened to it: the worker is ready for the next."""


def _to_tensors(batch: SnippetBatch) -> SnippetBatch:
    """The batch's arrays as tensors (torch.multiprocessing sends tensors through shared memory)."""
    return SnippetBatch(**{f.name: None if (v := getattr(batch, f.name)) is None else torch.from_numpy(np.ascontiguousarray(v))
                           for f in fields(SnippetBatch)})


def _to_arrays(batch: SnippetBatch) -> SnippetBatch:
    return SnippetBatch(**{f.name: None if (v := getattr(batch, f.name)) is None else v.numpy()
                           for f in fields(SnippetBatch)})


def _sendable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else the same message in an exception that does."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        kind = InputError if isinstance(error, InputError) else RuntimeError
        return kind(f"{type(error).__name__}: {one_line(error)}")


def _serve(jobs, results, abort, parent: int) -> None:
    """A worker's life: take ``(number, VideoJob)`` from ``jobs`` and decode it into ``results``."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle

    def parent_alive() -> bool:
        return os.getppid() == parent

    while parent_alive():
        try:
            item = jobs.get(timeout=POLL_S)
        except queue.Empty:
            continue
        if item is None:
            return
        number, job = item

        def stopped() -> bool:
            return abort.value == number or not parent_alive()

        def put(x) -> bool:
            if isinstance(x, SnippetBatch):
                x = _to_tensors(x)
            elif isinstance(x, Failure):
                x = Failure(_sendable(x.error))
            while not stopped():
                try:
                    results.put((number, x), timeout=POLL_S)
                    return True
                except queue.Full:
                    pass
            return False

        produce(job, put, stopped)
        put(Closed())


class _Worker:
    def __init__(self, ctx, queue_size: int) -> None:
        self.jobs = ctx.Queue()
        self.results = ctx.Queue(maxsize=queue_size)
        self.abort = ctx.Value("q", -1, lock=False)
        self.process = ctx.Process(target=_serve, args=(self.jobs, self.results, self.abort, os.getpid()),
                                   name="clipae-decode", daemon=True)
        self.process.start()

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
        for q in (self.jobs, self.results):
            q.cancel_join_thread()
            q.close()


class WorkerSource:
    """One video decoded by a worker process; the interface of :class:`SnippetSource`."""

    def __init__(self, pool: "DecodePool", worker: _Worker, number: int, job: VideoJob) -> None:
        self.job = job
        self.path = job.path
        self.backend: str | None = None
        self._pool = pool
        self._worker: _Worker | None = worker
        self._number = number
        self._facts: VideoFacts | None = None
        worker.jobs.put((number, job))

    @property
    def pid(self) -> int | None:
        """The process decoding this video (``None`` once it is done)."""
        return self._worker.process.pid if self._worker is not None else None

    def facts(self) -> VideoFacts:
        """Blocks until the video is opened; raises the video's :class:`InputError` if it cannot be."""
        if self._facts is None:
            self._facts = self._get()
        return self._facts

    def __iter__(self) -> Iterator[SnippetBatch]:
        self.facts()
        while self._worker is not None:
            item = self._get()
            if isinstance(item, End):
                self.backend = item.backend
                self._release()
                return
            yield _to_arrays(item)

    def _get(self):
        worker = self._worker
        if worker is None:
            raise RuntimeError(f"{self.path}: this video's decoding has ended")
        while True:
            try:
                number, item = worker.results.get(timeout=POLL_S)
            except queue.Empty:
                death = worker.death()
                if death is not None:
                    self._release()
                    raise InputError(f"the decoding process died ({death})") from None
                continue
            if number != self._number:
                continue  # the tail of an earlier video this worker read
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

    def __init__(self, workers: int, queue_size: int = 2) -> None:
        if workers < 1:
            raise ValueError("a decode pool needs at least one worker")
        self._ctx = tmp.get_context("spawn")
        self._queue_size = queue_size
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
        return WorkerSource(self, worker, self._jobs, job)

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
