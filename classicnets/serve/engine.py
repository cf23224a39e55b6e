"""Where the web app's PyTorch work runs: a bounded pool of worker threads, and the models, loaded once and
kept (the few most recently used).

* ``WorkerPool``: ``workers`` threads (torch set to one intra-op thread, so each worker is one core) and at
  most ``queue`` jobs waiting, taken by priority (predictions first). A job that finds every slot taken is
  refused at once with 503 and ``Retry-After`` instead of queueing without bound; the event loop never runs
  PyTorch, so the page, the model list and the API docs stay responsive while the workers are busy, and one
  slow request (a big model loading, a VGG Grad-CAM) holds one worker, not the server.
* ``ModelCache``: an LRU of ``capacity`` loaded models. Each loaded model has one replica per worker, lent
  to one job at a time: the feature-map and Grad-CAM views attach forward hooks, which must never fire in
  another request's forward pass on the same module.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from queue import PriorityQueue
from typing import Any

import torch
from torch import nn

from ..checkpoint import RunRecord
from .catalog import ModelEntry
from .errors import ApiError

RETRY_AFTER_S = 1
# Job priorities: a worker takes the most urgent waiting job first, so the top-5 answer that the page asks
# for while the pen moves never waits behind a queue of feature maps and Grad-CAMs (first come, first
# served among equals). Starvation is bounded: the queue is, and a client waits for its answer.
PREDICT, VIEW, EXPLAIN = 0, 1, 2
_STOP = 99  # after everything else


class WorkerPool:
    """``workers`` threads running jobs by priority, at most ``queue`` more waiting; beyond that, 503 at once."""

    def __init__(self, workers: int = 2, queue: int = 16) -> None:
        if workers < 1 or queue < 0:
            raise ValueError(f"the worker pool needs workers >= 1 and queue >= 0, got {workers} and {queue}")
        self.workers, self.queue = workers, queue
        self._slots = threading.BoundedSemaphore(workers + queue)
        self._jobs: PriorityQueue = PriorityQueue()
        self._order = itertools.count()
        self._threads = [threading.Thread(target=self._work, name=f"classicnets-serve-{i}", daemon=True)
                         for i in range(workers)]  # fmt: skip
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, priority: int = VIEW) -> Future:
        """``fn(*args)`` on a worker, as a Future; an ``ApiError(503)`` with ``Retry-After`` if the pool is full."""
        if not self._slots.acquire(blocking=False):
            raise ApiError(503, f"the server is busy ({self.workers} requests running, {self.queue} waiting); "
                                f"retry in {RETRY_AFTER_S} s", {"Retry-After": str(RETRY_AFTER_S)})  # fmt: skip
        future: Future = Future()
        self._jobs.put((priority, next(self._order), future, fn, args))
        return future

    async def run(self, fn: Callable[..., Any], *args: Any, priority: int = VIEW) -> Any:
        """Await ``fn(*args)`` on a worker (see :meth:`submit`); the event loop stays free meanwhile."""
        return await asyncio.wrap_future(self.submit(fn, *args, priority=priority))

    def _work(self) -> None:
        torch.set_num_threads(1)  # one core per worker: two workers never fight over the same cores
        while True:
            priority, _, future, fn, args = self._jobs.get()
            if priority == _STOP:
                return
            if not future.set_running_or_notify_cancel():
                self._slots.release()
                continue
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting request
                result, error = None, exc
            self._slots.release()  # before the answer: whoever sees it may submit again at once
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    def close(self) -> None:
        """Finish the jobs already queued, then stop the workers."""
        for _ in self._threads:
            self._jobs.put((_STOP, next(self._order), None, None, ()))
        for thread in self._threads:
            thread.join()


@dataclass
class Loaded:
    """A loaded model: its entry and run record, and ``replicas`` (one per worker) lent one job at a time."""

    entry: ModelEntry
    record: RunRecord
    replicas: queue.SimpleQueue
    amp: torch.dtype | None  # the run's evaluation autocast, as `classicnets eval` and `predict` use it
    fast: nn.Module | None = None  # engine "onnxruntime": the predictor (thread-safe, one session for all workers)
    cache: dict[str, Any] = field(default_factory=dict)  # per-model results that never change (the layer table)

    @contextmanager
    def borrow(self) -> Iterator[nn.Module]:
        model = self.replicas.get()
        try:
            yield model
        finally:
            self.replicas.put(model)


class ModelCache:
    """The ``capacity`` most recently used models, each loaded once (concurrent first requests wait for
    one load rather than loading twice)."""

    def __init__(self, capacity: int = 4, replicas: int = 2, engine: str = "torch") -> None:
        self.capacity, self.replicas, self.engine = capacity, replicas, engine
        self._loaded: OrderedDict[str, Loaded] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, entry: ModelEntry) -> Loaded:
        with self._lock:
            if entry.id in self._loaded:
                self._loaded.move_to_end(entry.id)
                return self._loaded[entry.id]
            gate = self._loading.setdefault(entry.id, threading.Lock())
        with gate:
            with self._lock:
                if entry.id in self._loaded:
                    return self._loaded[entry.id]
            loaded = self._load(entry)
            with self._lock:
                self._loaded[entry.id] = loaded
                while len(self._loaded) > self.capacity:
                    self._loaded.popitem(last=False)
                self._loading.pop(entry.id, None)
            return loaded

    def loaded_ids(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def _load(self, entry: ModelEntry) -> Loaded:
        from ..inference import load_trained
        from ..train.runtime import amp_dtype

        try:
            model, record = load_trained(entry.source, "cpu")  # the listed weight name or checkpoint, nothing else
        except (ValueError, OSError) as exc:  # CheckpointError, WeightsError: changed or damaged since listing
            reason = str(exc).splitlines()[0].replace(entry.source, entry.label)  # no server paths in answers
            raise ApiError(409, f"{entry.label} can no longer be loaded ({reason}); "
                                "GET /api/models lists what is there now") from None  # fmt: skip
        replicas: queue.SimpleQueue = queue.SimpleQueue()
        replicas.put(model)
        for _ in range(self.replicas - 1):
            replicas.put(copy.deepcopy(model))
        loaded = Loaded(entry, record, replicas, amp_dtype(record.amp, torch.device("cpu")))
        if self.engine == "onnxruntime":  # exported once (cached on disk), one intra-op thread per worker
            from ..inference import _check_engine, onnxruntime_model

            _check_engine("onnxruntime", "cpu")
            loaded.fast = onnxruntime_model(entry.source, model, record, threads=1)
        return loaded
