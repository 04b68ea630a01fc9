"""hash: digest files while the ring reads ahead, as sha256sum/b2sum do.

The uring engine reads ahead into the slots of a registered arena (several
positional ``read_fixed`` requests in flight for regular files, one at a
time at the current position for streams) while hashlib digests each filled
slot through a zero-copy memoryview; hashlib releases the GIL on large
updates, so the kernel (an io-wq worker, with IOSQE_ASYNC) fills the next
slot on another core meanwhile. Several files are spread over worker
threads, each with its own ring made inside that thread (SINGLE_ISSUER
rings belong to their creator) and its own Stats; results come back in
argument order. The sync engine is a plain ``readv`` loop with the same
block size.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import stat
import time
TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import Any, Callable, Generator, List, Optional, Sequence

from .records import record
from . import fdio
from .readahead import K_READ, KIND_MASK, ReadAhead, ring_with_arena
from .ring import FileRef, Ring
from .stats import Stats

#: larger than cat's and cp's 128 KiB: each read costs the digesting thread
#: ~15 us of Python and task work however large it is, and a digest is
#: slow enough that fewer, larger reads never leave it waiting
#: (bench/README.md, "Hash reads of 1 MiB")
DEFAULT_BLOCK_SIZE = 1 << 20
DEFAULT_QUEUE_DEPTH = 4
DEFAULT_ALGORITHM = "sha256"
FAST_EXTRA_HINT = "pip install 'uringtools[fast]'"
#: files this large go to the digest threads when there are several: a
#: 256 KiB digest takes ~0.7 ms, handing its result over ~30 us
THREAD_MIN_BYTES = 256 << 10


class MissingExtra(ValueError):
    """The algorithm needs a package from the ``fast`` extra."""


class Algorithm(record("Algorithm", "name tag bits module variable",  # type: ignore[misc]
                           defaults=("", False))):
    """A digest algorithm: its name, BSD tag (as --tag prints it), default
    digest length in bits (the only one but for BLAKE2), module ("" for
    hashlib, else the extra's module), variable (BLAKE2: -l chooses the
    length)."""

    __slots__ = ()

    def new(self, bits: Optional[int] = None) -> Any:
        """A fresh hash object (``bits`` only for BLAKE2).

        Raises:
            MissingExtra: the algorithm's module is not installed.
        """
        bits = bits or self.bits
        if self.variable:
            ctor = hashlib.blake2b if self.name == "blake2b" else hashlib.blake2s
            return ctor(digest_size=bits // 8)
        if not self.module:
            return hashlib.new(self.name)
        try:
            module = __import__(self.module)
        except ImportError:
            raise MissingExtra(
                f"{self.name} needs the '{self.module}' package: "
                f"{FAST_EXTRA_HINT}") from None
        if self.name == "blake3":
            return module.blake3()
        return {"xxh64": module.xxh64, "xxh3": module.xxh3_64,
                "xxh128": module.xxh3_128}[self.name]()

    def tag_for(self, bits: Optional[int] = None) -> str:
        """The --tag name: ``BLAKE2b-256`` for a shortened BLAKE2b, as b2sum."""
        if self.variable and bits and bits != self.bits:
            return f"{self.tag}-{bits}"
        return self.tag


ALGORITHMS = {a.name: a for a in (
    Algorithm("md5", "MD5", 128),
    Algorithm("sha1", "SHA1", 160),
    Algorithm("sha224", "SHA224", 224),
    Algorithm("sha256", "SHA256", 256),
    Algorithm("sha384", "SHA384", 384),
    Algorithm("sha512", "SHA512", 512),
    Algorithm("blake2b", "BLAKE2b", 512, variable=True),
    Algorithm("blake2s", "BLAKE2s", 256, variable=True),
    Algorithm("sha3-256", "SHA3-256", 256),
    Algorithm("sha3-384", "SHA3-384", 384),
    Algorithm("sha3-512", "SHA3-512", 512),
    Algorithm("xxh64", "XXH64", 64, module="xxhash"),
    Algorithm("xxh3", "XXH3", 64, module="xxhash"),
    Algorithm("xxh128", "XXH128", 128, module="xxhash"),
    Algorithm("blake3", "BLAKE3", 256, module="blake3"),
)}


def get_algorithm(name: str, bits: Optional[int] = None) -> Algorithm:
    """Look ``name`` up and check that it can be used with ``bits``.

    Raises:
        ValueError: unknown name, or a length the algorithm does not take.
        MissingExtra: the ``fast`` extra is needed and missing.
    """
    algo = ALGORITHMS.get(name.lower())
    if algo is None:
        raise ValueError(f"unknown algorithm {name!r}")
    if bits is not None and bits != 0:
        if not algo.variable:
            raise ValueError("--length is only supported with "
                             "--algorithm=blake2b or blake2s")
        if bits % 8:
            raise ValueError("length is not a multiple of 8")
        if not 0 < bits <= algo.bits:
            raise ValueError(f"maximum digest length for '{algo.tag}' "
                             f"is {algo.bits} bits")
    algo.new(bits or None)  # fail now, not per file, if the extra is missing
    return algo


class HashResult(record("HashResult", "name digest error size")):  # type: ignore[misc]
    """One operand: name, digest (lower-case hex; None when not read to its
    end), error (the OSError, or None) and size (bytes read)."""

    __slots__ = ()


# -- O_DIRECT ---------------------------------------------------------------

def _open_direct(name: str, stats: Stats) -> int:
    """Open ``name`` with O_DIRECT, or plainly where the filesystem refuses
    it (EINVAL, counted as direct_refused)."""
    flags = os.O_RDONLY | os.O_CLOEXEC
    try:
        return os.open(name, flags | os.O_DIRECT)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    stats.count("direct_refused")
    return os.open(name, flags)


# -- engines ----------------------------------------------------------------

class _Reader:
    """Reads one file to its end into a hash object; one per thread."""

    stats: Stats
    #: read regular files under one block with read(2): set when there are
    #: several files (one file pays the ring's set-up once, many pay per file)
    small_by_syscalls: bool = False
    digest_s: float = 0.0
    digest_bytes: int = 0
    #: open named files with O_DIRECT (--direct)
    direct: bool = False
    #: called with each block's byte count once it is digested
    on_progress: Optional[Callable[[int], None]] = None

    def feed(self, fd: int, st: os.stat_result, h: Any,
             cancelled: Callable[[], bool]) -> int:
        """Hash ``fd`` from its position to EOF; return the byte count.

        Raises:
            OSError: a read failed (the digest must then not be printed).
        """
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _update(self, h: Any, view: memoryview) -> None:
        t0 = time.perf_counter()
        h.update(view)
        self.digest_s += time.perf_counter() - t0
        self.digest_bytes += len(view)
        if self.on_progress is not None:
            self.on_progress(len(view))


class _SyncReader(_Reader):
    """One readv(2), one update, repeat: the baseline.

    The buffer is an anonymous mmap (page aligned), so an O_DIRECT
    descriptor is read directly while offsets stay aligned.
    """

    def __init__(self, block_size: int, stats: Stats) -> None:
        self.stats = stats
        self.bs = block_size
        self.buf = mmap.mmap(-1, block_size)
        self.view = memoryview(self.buf)

    def feed(self, fd: int, st: os.stat_result, h: Any,
             cancelled: Callable[[], bool]) -> int:
        total = 0
        direct = fdio.is_direct(fd)
        if direct and (self.bs % fdio.DIRECT_ALIGN
                       or os.lseek(fd, 0, os.SEEK_CUR) % fdio.DIRECT_ALIGN):
            fdio.drop_direct(fd, self.stats)
            direct = False
        while not cancelled():
            try:
                n = fdio.read_into(fd, self.buf, self.stats)  # type: ignore[arg-type]
            except OSError as exc:
                if not (direct and exc.errno == errno.EINVAL):
                    raise
                self.stats.resubmissions += 1
                fdio.drop_direct(fd, self.stats)   # this filesystem refuses it
                direct = False
                continue
            if n == 0:
                break
            if direct and n % fdio.DIRECT_ALIGN:
                fdio.drop_direct(fd, self.stats)   # the position is unaligned now
                direct = False
            with self.view[:n] as chunk:
                self._update(h, chunk)
            total += n
        return total

    def close(self) -> None:
        self.view.release()
        self.buf.close()


#: Arenas of rings closed with reads in flight: never unmapped.
_ABANDONED: List[object] = []


class _UringReader(_Reader):
    """Read ahead through the ring; digest each slot in file order."""

    def __init__(self, block_size: int, depth: int, stats: Stats,
                 async_reads: bool = True) -> None:
        self.stats = stats
        self.async_reads = async_reads
        self.ring, self.arena = ring_with_arena(depth, block_size, stats, 2)
        try:
            self.table = self.ring.register_file_table(1)
        except BaseException:
            self.ring.close()
            raise
        self.sync = _SyncReader(block_size, stats)
        self.abandoned = False

    def close(self) -> None:
        self.ring.close()   # nothing is in flight: feed() drains or abandons
        self.sync.close()

    def feed(self, fd: int, st: os.stat_result, h: Any,
             cancelled: Callable[[], bool]) -> int:
        if (self.small_by_syscalls and stat.S_ISREG(st.st_mode)
                and 0 < st.st_size < self.arena.slot_size):
            # one block: nothing to read ahead, and the ring's bookkeeping
            # for a file (registering it, four reads queued, reaping) costs
            # ~90 us of Python where read(2) until EOF costs ~2 us
            self.stats.count("files_read_by_syscalls")
            return self._feed_sync(fd, st, h, cancelled)
        ring, arena = self.ring, self.arena
        src = ring.attach_file(fd) if self.table else FileRef(fd, 0, fd, -1)
        # unbounded: read on until a read returns 0. O_DIRECT: the arena is
        # page aligned; offsets and the block size must be too, else the
        # rest goes through the page cache
        ra = ReadAhead(ring, arena, src, st, self.stats, bounded=False,
                       direct=fdio.is_direct(fd), async_reads=self.async_reads)
        try:
            while True:
                queued = ra.fill()
                s, n, nbytes = ra.take()
                if n:
                    if queued:
                        ring.submit()   # start the reads, then hash meanwhile
                    with arena.slot_view(s, nbytes) as chunk:
                        self._update(h, chunk)
                    ra.release(s)
                    continue
                if ra.done or cancelled():
                    break
                if ra.reads == 0:    # cannot happen: never digest a partial file
                    raise OSError(errno.EIO, os.strerror(errno.EIO))
                n = ring.wait(1)
                ud_arr, res_arr = ring.cqe_user_data, ring.cqe_res
                for i in range(n):
                    ud = ud_arr[i]
                    if ud & KIND_MASK == K_READ:
                        ra.complete(ud, res_arr[i])
            if ra.failure:
                raise OSError(ra.failure, os.strerror(ra.failure))
            total = ra.taken
            if total == 0 and not ra.positional and stat.S_ISREG(st.st_mode):
                # A file claiming size 0 that the ring read as empty: some
                # FUSE files answer io_uring with 0 bytes and read(2) with data.
                total = self._feed_sync(fd, st, h, cancelled)
                self.stats.count_syscall("read")  # the read that confirmed EOF
            elif ra.positional:
                # leave the position where we stopped, as read(2) would
                os.lseek(fd, ra.start + total, os.SEEK_SET)
            return total
        except OSError:
            raise
        except BaseException:
            # Ctrl-C, SIGTERM, GeneratorExit: a read may be in flight on a
            # FIFO or terminal nobody writes to, and waiting for it would
            # hang; tear the ring down instead (the kernel cancels it).
            if ring.in_flight:
                self._abandon()
            raise
        finally:
            if not self.abandoned:
                try:
                    # a read re-queued after EAGAIN/EINTR may not be sent
                    # yet: send it now, or it would go out with the next
                    # file's first enter and fill one of its slots with
                    # this file's bytes
                    if ring.room < ring.entries:
                        ring.submit()
                    while ring.in_flight:  # the arena is reused: wait for the kernel
                        ring.wait(1)
                except OSError:
                    pass
                ring.detach_file(src)

    def _feed_sync(self, fd: int, st: os.stat_result, h: Any,
                   cancelled: Callable[[], bool]) -> int:
        """feed() through the sync reader, its digest time counted here."""
        sync = self.sync
        sync.on_progress = self.on_progress
        total = sync.feed(fd, st, h, cancelled)
        self.digest_s += sync.digest_s
        self.digest_bytes += sync.digest_bytes
        sync.digest_s = 0.0
        sync.digest_bytes = 0
        return total

    def _abandon(self) -> None:
        """Close the ring with reads in flight; the arena is never freed."""
        _ABANDONED.append(self.arena)
        self.abandoned = True
        self.ring.close()


def _make_reader(engine: str, block_size: int, depth: int, stats: Stats,
                 async_reads: bool) -> _Reader:
    if engine == "uring":
        return _UringReader(block_size, depth, stats, async_reads)
    if engine == "sync":
        return _SyncReader(block_size, stats)
    raise ValueError(f"unknown engine {engine!r}")


def _regular_size(name: str) -> int:
    """The size of ``name`` if it is a regular file (else, or if it cannot
    be stat'ed, 0: the calling thread then hashes it, or reports why not)."""
    try:
        st = os.stat(name)
    except (OSError, ValueError):
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def _hash_one(reader: _Reader, name: str, algo: Algorithm, bits: Optional[int],
              cancelled: Callable[[], bool]) -> HashResult:
    """Open ``name`` ('-' is stdin), hash it to its end."""
    stats = reader.stats
    owned = name != "-"
    try:
        if owned and reader.direct:
            fd = _open_direct(name, stats)
        else:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC) if owned else 0
    except OSError as exc:
        stats.errors += 1
        return HashResult(name, None, exc, 0)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), name)
        if owned and reader.direct and fdio.is_direct(fd):
            if stat.S_ISREG(st.st_mode):
                stats.count("direct_files")
            else:
                fdio.drop_direct(fd, stats)   # devices, FIFOs: cached reads
        h = algo.new(bits)
        size = reader.feed(fd, st, h, cancelled)
        stats.files += 1
        if cancelled():
            raise InterruptedError(errno.EINTR, os.strerror(errno.EINTR), name)
        hexdigest = h.hexdigest()
        return HashResult(name, hexdigest, None, size)
    except OSError as exc:
        stats.errors += 1
        if exc.filename is None:
            exc.filename = name
        return HashResult(name, None, exc, 0)
    finally:
        if owned:
            os.close(fd)


def hash_files(names: Sequence[str], algorithm: str = DEFAULT_ALGORITHM, *,
               bits: Optional[int] = None, engine: str = "uring",
               block_size: int = DEFAULT_BLOCK_SIZE,
               queue_depth: int = DEFAULT_QUEUE_DEPTH,
               threads: Optional[int] = None, async_reads: bool = True,
               stats: Optional[Stats] = None,
               lengths: Optional[Sequence[Optional[int]]] = None,
               direct: bool = False,
               on_progress: Optional[Callable[[int], None]] = None,
               ) -> Generator[HashResult, None, None]:
    """Digest ``names`` ('-' is stdin); yield the results in argument order.

    Every ring is set up (and io_uring refusal raised) before the first
    result is yielded. A result carries a digest only for a file read to its
    end; otherwise its error (FileNotFoundError, IsADirectoryError, ...).

    Args:
        names: operands, in order.
        algorithm: a key of ALGORITHMS.
        bits: digest length for BLAKE2 (None: the full length).
        lengths: a BLAKE2 digest length per name (check files), overriding bits.
        engine: "uring" or "sync".
        block_size: bytes per read request.
        queue_depth: reads in flight per regular file (arena slots per ring).
        threads: most worker threads (default os.cpu_count()); they take
            the regular files of THREAD_MIN_BYTES and more when there are
            at least two of them, the calling thread the rest (stdin, small
            files). 1: the calling thread hashes everything.
        async_reads: set IOSQE_ASYNC on positional reads (the kernel copies
            on another core while we hash).
        direct: open named files with O_DIRECT, so their bytes land in
            the page-aligned buffers without filling the page cache;
            unaligned tails, block sizes that are not multiples of 4096 and
            filesystems that refuse O_DIRECT fall back to cached reads
            (``direct_files`` / ``direct_fallbacks`` / ``direct_refused`` in
            ``stats.extra``).
        on_progress: called with the byte count of each block as it is
            digested (bytes read, never an estimate), from the worker
            threads as well as the calling one, so it must be thread-safe.
        stats: counters to fill; worker Stats are merged into it at the end,
            with ``digest_threads``, ``digest_bytes`` and
            ``digest_bytes_per_s`` in ``stats.extra``.

    Raises:
        UringUnavailable: engine "uring" and io_uring cannot be set up.
        MissingExtra, ValueError: bad algorithm, length or engine.
    """
    if block_size < 1 or queue_depth < 1:
        raise ValueError("block size and queue depth must be positive")
    algo = get_algorithm(algorithm, bits)
    stats = stats if stats is not None else Stats()
    stats.command = stats.command or "hash"
    stats.engine = engine
    stats.block_size = block_size
    stats.queue_depth = queue_depth
    if threads is None:
        threads = os.cpu_count() or 1
    # several large files share the digest threads; the calling thread
    # hashes stdin and the small files (handing a result across threads
    # costs more than digesting a small file)
    jobs: List[int] = []
    if threads > 1 and sum(name != "-" for name in names) > 1:
        jobs = [i for i, name in enumerate(names)
                if name != "-" and _regular_size(name) >= THREAD_MIN_BYTES]
    nworkers = min(len(jobs), threads) if len(jobs) > 1 else 0
    pooled = frozenset(jobs) if nworkers else frozenset()
    main_reader: Optional[_Reader] = None
    workers: List[Any] = []      # hashpool.Worker
    pool: Optional[Any] = None   # hashpool.Pool
    stats.start()
    abandon = False
    try:
        if len(pooled) < len(names):
            main_reader = _make_reader(engine, block_size, queue_depth, stats,
                                       async_reads)
            main_reader.small_by_syscalls = len(names) > 1
            main_reader.direct = direct
            main_reader.on_progress = on_progress
        if nworkers:
            # threads only for several files: threading (with functools and
            # collections) costs ~10 ms of start-up
            from .hashpool import Pool, Worker
            pool = Pool(names, jobs, algo, bits, lengths, engine, block_size,
                         queue_depth, async_reads)
            pool.direct = direct
            pool.on_progress = on_progress
            for _ in range(nworkers):
                worker = Worker(pool)
                workers.append(worker)
                worker.start()
            for worker in workers:
                worker.ready.wait()
            for worker in workers:
                if worker.setup_error is not None:
                    raise worker.setup_error
            pool.go.set()
        never = lambda: False  # noqa: E731
        for index, name in enumerate(names):
            if pool is not None and index in pooled:
                yield pool.get(index)
            else:
                assert main_reader is not None
                yield _hash_one(main_reader, name, algo,
                                lengths[index] if lengths else bits, never)
    except OSError:
        raise
    except BaseException:
        # Ctrl-C, SIGTERM, the consumer stopping: a worker may be blocked
        # reading a FIFO nobody writes to. Do not wait for the workers (they
        # are daemon threads and stop at their next cancel check).
        abandon = True
        raise
    finally:
        if pool is not None:
            pool.cancel.set()
            pool.go.set()
            if abandon:
                workers = []
            for worker in workers:
                worker.join()
        digest_s = 0.0
        digest_bytes = 0
        if main_reader is not None:
            main_reader.close()
            digest_s += main_reader.digest_s
            digest_bytes += main_reader.digest_bytes
        for worker in workers:
            stats.merge(worker.stats)  # extra counters (faults_injected) too
            digest_s += worker.digest_s
            digest_bytes += worker.digest_bytes
            stats.registered_files += worker.stats.registered_files
            if worker.reader is not None and main_reader is None:
                _copy_setup(worker.stats, stats)
        stats.stop()
        stats.extra["digest_threads"] = (len(workers)
                                         + (main_reader is not None))
        stats.extra["digest_bytes"] = digest_bytes
        stats.extra["digest_seconds"] = round(digest_s, 6)
        if digest_s > 0:
            stats.extra["digest_bytes_per_s"] = round(digest_bytes / digest_s)
        stats.extra["async_reads"] = bool(async_reads and engine == "uring")
        stats.extra["algorithm"] = algo.name


def probe(engine: str) -> None:
    """Raise UringUnavailable now if engine "uring" cannot set a ring up."""
    if engine == "uring":
        Ring(8).close()


def _copy_setup(src: Stats, dst: Stats) -> None:
    """Ring set-up facts from a worker's Stats (the main flow had no ring)."""
    dst.setup_flags = list(src.setup_flags)
    dst.registered_buffers = src.registered_buffers
    dst.registered_buffers_note = src.registered_buffers_note
    dst.registered_files_note = src.registered_files_note
