"""Nothing waits forever: the frame-buffer recycler under a GC pass, stalled decoders."""
from __future__ import annotations

import gc
import threading
from collections import deque

import numpy as np
import torch

from clipae.pipeline.snippets import Recycler


class _CollectingDeque(deque):
    """A free list that starts a full GC pass before every access, as an allocation may."""

    def _collect(self):
        gc.collect()

    def __iter__(self):
        self._collect()
        return super().__iter__()

    def popleft(self):
        self._collect()
        return super().popleft()

    def remove(self, value):
        self._collect()
        return super().remove(value)


class _Cycle:
    pass


def test_recycler_survives_a_gc_pass_inside_empty():
    pool = Recycler(keep=1)
    pool._free = _CollectingDeque()
    pool._give_back(torch.UntypedStorage(64))  # one idle buffer
    held = _Cycle()
    held.me, held.array = held, pool.empty((4, 4), np.uint8)  # freed only by the cyclic GC
    done = threading.Event()
    result = {}

    def take():
        result["array"] = pool.empty((4, 4), np.uint8)  # the GC pass hands `held`'s buffer back meanwhile
        done.set()

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        del held
        thread = threading.Thread(target=take, daemon=True)
        thread.start()
        assert done.wait(timeout=10), "Recycler.empty deadlocked in a GC pass that handed a buffer back"
    finally:
        if was_enabled:
            gc.enable()
    assert result["array"].shape == (4, 4)
    assert len(pool._free) <= 1
