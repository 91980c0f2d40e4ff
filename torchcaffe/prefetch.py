"""Batches made ahead in a background thread, handed out in order.

One producer thread calls `make_batch()` over and over and keeps up to
`depth` results queued, so reading and decoding overlap the net's compute
without changing the order (one producer, a FIFO queue). An exception in
the producer reaches the consumer at the batch where it happened. The
thread stops once the Prefetcher is garbage-collected or closed; it must
not hold the object that owns the Prefetcher (pass a callable of another
object), or that owner is never collected.
"""
from __future__ import annotations

import queue
import threading
import weakref
from typing import Any, Callable

_POLL_S = 0.1


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _produce(make_batch: Callable[[], Any], ready: queue.Queue, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            item = make_batch()
        except BaseException as exc:  # handed to the consumer, raised there
            item = _Failure(exc)
        while not stop.is_set():
            try:
                ready.put(item, timeout=_POLL_S)
                break
            except queue.Full:
                continue
        if isinstance(item, _Failure):
            return


class Prefetcher:
    def __init__(self, make_batch: Callable[[], Any], depth: int, name: str):
        self._make_batch = make_batch
        self._ready: queue.Queue | None = None
        self._failure: BaseException | None = None
        if depth > 0:
            self._ready = queue.Queue(maxsize=depth)
            stop = threading.Event()
            thread = threading.Thread(target=_produce, args=(make_batch, self._ready, stop),
                                      name=f"prefetch {name}", daemon=True)
            thread.start()
            self._thread = thread
            self._close = weakref.finalize(self, stop.set)

    def next(self) -> Any:
        if self._ready is None:
            return self._make_batch()
        if self._failure is not None:
            raise self._failure  # the producer has stopped at this batch
        item = self._ready.get()
        if isinstance(item, _Failure):
            self._failure = item.exc
            raise item.exc
        return item

    def close(self, wait: bool = False) -> None:
        """Stop the producer; with `wait`, also wait until it has finished the
        batch it is making, so that nothing touches its source any more."""
        if self._ready is not None:
            self._close()
            if wait:
                self._thread.join()
