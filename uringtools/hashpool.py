"""The worker threads of :func:`uringtools.hashing.hash_files` for several
files: each with its own ring, taking operands from a shared cursor;
imported only when there are workers to start."""

from __future__ import annotations

import threading
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, List, Optional, Sequence

from .hashing import Algorithm, HashResult, _hash_one, _make_reader, _Reader
from .stats import Stats


class Worker(threading.Thread):
    """Hashes the operands it takes from the shared cursor, with its own ring."""

    def __init__(self, pool: "Pool") -> None:
        super().__init__(daemon=True, name="uring-hash-worker")
        self.pool = pool
        self.stats = Stats(command="hash")
        self.reader: Optional[_Reader] = None
        self.setup_error: Optional[BaseException] = None
        self.ready = threading.Event()
        self.digest_s = 0.0
        self.digest_bytes = 0

    def run(self) -> None:
        pool = self.pool
        try:
            self.reader = _make_reader(pool.engine, pool.block_size,
                                       pool.depth, self.stats, pool.async_reads)
            self.reader.direct = pool.direct
            self.reader.on_progress = pool.on_progress
            self.reader.small_by_syscalls = True   # a pool: several files
        except BaseException as exc:  # UringUnavailable, MemoryError, ...
            self.setup_error = exc
            self.ready.set()
            return
        self.ready.set()
        if not pool.go.wait() or pool.cancel.is_set():
            self._finish()
            return
        try:
            while not pool.cancel.is_set():
                index = pool.take()
                if index is None:
                    break
                bits = pool.lengths[index] if pool.lengths else pool.bits
                result = _hash_one(self.reader, pool.names[index], pool.algo,
                                   bits, pool.cancel.is_set)
                pool.put(index, result)
        except BaseException as exc:  # keep the main flow from waiting forever
            pool.fail(exc)
        finally:
            self._finish()

    def _finish(self) -> None:
        if self.reader is not None:
            self.digest_s = self.reader.digest_s
            self.digest_bytes = self.reader.digest_bytes
            self.reader.close()


class Pool:
    """The shared state of the worker threads: a cursor and the results."""

    def __init__(self, names: Sequence[str], jobs: List[int], algo: Algorithm,
                 bits: Optional[int],
                 lengths: Optional[Sequence[Optional[int]]], engine: str, block_size: int, depth: int,
                 async_reads: bool) -> None:
        self.names = names
        self.algo, self.bits, self.lengths = algo, bits, lengths
        self.engine, self.block_size, self.depth = engine, block_size, depth
        self.async_reads = async_reads
        self.direct = False
        self.on_progress: Optional[Callable[[int], None]] = None
        self._jobs = iter(jobs)
        self._lock = threading.Lock()
        self.done = threading.Condition(self._lock)
        self.results: dict = {}
        self.error: Optional[BaseException] = None
        self.go = threading.Event()
        self.cancel = threading.Event()

    def take(self) -> Optional[int]:
        with self._lock:
            return next(self._jobs, None)

    def put(self, index: int, result: HashResult) -> None:
        with self.done:
            self.results[index] = result
            self.done.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self.done:
            self.error = exc
            self.done.notify_all()

    def get(self, index: int) -> HashResult:
        with self.done:
            while index not in self.results:
                if self.error is not None:
                    raise self.error
                self.done.wait(0.5)
            return self.results.pop(index)
