"""Small files copied as whole chains on the ring, many files per submit.

Each file is one linked chain, so a batch of files costs one
``io_uring_enter`` instead of about seven system calls per file::

    openat(src) -> openat(temporary, O_CREAT|O_EXCL) -> read -> write
                -> renameat(temporary, destination)

or, for a fresh file (its directory made by this run, see FileJob), four
requests: the destination itself is created, and there is no rename::

    openat(src) -> openat(destination, O_CREAT|O_EXCL) -> read -> write

Both files are opened straight into slots of the registered file table
(openat_direct: no process descriptors, so ``ulimit -n`` is no limit), and
every request but the last is flagged CQE_SKIP_SUCCESS, so a chain posts
exactly one completion: the last request's on success, or the failing
request's (which cancels the rest, rename included: a file is renamed into
place only when all of it was written). A file whose chain fails for any
reason (a short write included) has its temporary or fresh file removed and
is copied again by the plain engine, which reports
GNU's message (a vanished source, a short read, ENOSPC...).

A directory this run made costs no Python per file (:class:`FreshDir`): one
C call reads and stats its entries, another describes the chains of its
small files, opened relative to the two directories' descriptors, and one
more checks a whole batch's completions. Only the other entries
(directories, large files, symlinks...) come back to the tree walk. These
chains create the file first, flagged IOSQE_ASYNC::

    openat(destination, O_CREAT|O_EXCL) -> openat(src) -> read -> write

A create always goes to an io-wq worker; heading the chain, it takes the
whole chain there, where the other order came back to this thread (task
work) to issue the create. A chain failing after the create (an unreadable
source) has its empty file removed like any other failed chain's.

Two batches are in flight at a time: the kernel runs one while the tree walk
plans the next. The ring is set up without DEFER_TASKRUN, so an io-wq worker
that finishes the O_CREAT open runs the rest of the chain itself, on the other
core, instead of waiting for this thread to enter the kernel.

When both batches are in flight and the older has not finished, this thread
does not wait: it copies the next files of the directory itself, with plain
syscalls in one C call per few files (:meth:`BatchCopier._copy_here`). On
tmpfs no read or write completes inline (tmpfs has no RWF_NOWAIT), so the
ring's whole gain is the io-wq worker copying on the other core; this thread
copying meanwhile makes it two cores against GNU's one (10k x 4 KiB: 1.49x
GNU's wall before, about 1.07x after, bench/README.md). --stats counts those
files (``files_copied_by_syscalls``) and their syscalls.

On tmpfs the chains are not used for new directories at all: a second
thread (:class:`_Helper`, one C call a run of small files, the GIL released)
copies a directory's small files (runs of up to HELPER_RUN) with the same
plain syscalls while this thread copies the next directory, so the two
mostly create in different directories (whose inode locks serialise
creates). There an io-wq worker costs about
13 us of CPU a 4 KiB file against 9 us for plain syscalls (fixed-file
installs contending with this thread on the ring's lock, task work to
free each request), and this thread about 3 us more in submits and task
work: 10k x 4 KiB went from 1.02x-1.07x GNU's wall to 0.75x-0.78x
(bench/README.md). Elsewhere (ext4: page-cache reads complete inline) the
chains stay.

A directory that existed before the run (a FreshDir with ``merge``) is
handled alike, but only names not there yet are chained or copied (one
fstatat each, in C); the others go back to the tree walk.
"""

from __future__ import annotations

import errno
import os
import resource
import struct
import sys
TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional, Set, Tuple

from . import fdio
from ._uring import ffi, lib
from .copy import UMASK, FileCopier, FileJob, quote
from .reflink import CANNOT_CLONE
from .ring import (OP_CLOSE, OP_OPENAT, OP_READ, OP_RENAMEAT, OP_WRITE,
                   PACKED_SQE, SETUP_COOP_TASKRUN, SQE_CQE_SKIP_SUCCESS,
                   SQE_FIXED_FILE, SQE_IO_LINK, Arena, Ring, error)

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
#: files up to this size take the chain path (one read, one write)
SMALL_MAX = 64 << 10
#: files per batch (fewer in flight leaves more for this thread to copy
#: itself: 32 x 2 measured best, bench/README.md)
BATCH_FILES = 32
#: batches in flight (each with its region of the arena and the file table:
#: two table slots per file)
FLYING = 2
#: bytes of buffer per batch (the arena holds two)
BATCH_BYTES = 1 << 20
#: files copied in this thread per C call while the ring is full
HERE_FILES = 8
#: files per ut_copy_fresh call when cloning, and the size limit then (none)
CLONE_FILES = 64
CLONE_MAX = 1 << 62
#: on tmpfs a second thread copies whole runs of a new directory's small
#: files with plain syscalls (see _Helper) instead of the ring's chains
HELPER = True
#: statfs f_type of the filesystems where the helper replaces the chains
_TMPFS_MAGIC = 0x01021994
#: runs handed to it and not yet collected, at most
HELPER_DEPTH = 2
#: files the walk's thread copies per C call between looks at the helper
HELPER_HERE = 16
#: files in a run handed to the helper, at most: a large directory is
#: shared between the two threads (whole, its files would all be the
#: helper's while this thread waits)
HELPER_RUN = 128
_ALIGN = 4096

_OPEN_SRC = os.O_RDONLY          # no O_CLOEXEC: EINVAL with direct slots
_OPEN_TMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_LINK = SQE_IO_LINK | SQE_CQE_SKIP_SUCCESS
_LINK_FIXED = _LINK | SQE_FIXED_FILE
_AT_FDCWD_U32 = AT_FDCWD & 0xFFFFFFFF
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()
_OPEN_READ_WRITE = struct.Struct(PACKED_SQE + PACKED_SQE[1:] * 3).pack
_RENAME = struct.Struct(PACKED_SQE).pack

#: chain steps, in the low 3 bits of user_data (shared with the C helpers);
#: the rest is the chain: region * files per batch + index in the batch
_S_OPEN_SRC = lib.UT_STEP_OPEN_SRC
_S_OPEN_TMP = lib.UT_STEP_OPEN_DST
_S_READ = lib.UT_STEP_READ
_S_WRITE = lib.UT_STEP_WRITE
_S_RENAME = lib.UT_STEP_RENAME
_S_CLOSE = lib.UT_STEP_CLOSE
_STEP_NAMES = {_S_OPEN_SRC: "openat", _S_OPEN_TMP: "openat", _S_READ: "read",
               _S_WRITE: "write", _S_RENAME: "renameat", _S_CLOSE: "close"}


class FreshDir:
    """A source directory and the directory this run made for its copy.

    Both stay open while chains name files relative to them; the source's
    entries are read and stat'ed in one C call, in GNU's order (by inode).
    :attr:`pos` is the next entry to copy: :meth:`BatchCopier.add_dir`
    moves it past the small regular files it chains, the tree walk past
    the others.

    Raises:
        OSError: a directory cannot be opened or read.
    """

    __slots__ = ("src", "dst", "src_fd", "dst_fd", "follow", "merge",
                 "entries", "count", "pos", "refs", "owner", "announce",
                 "clone", "src_dev")

    def __init__(self, src: str, dst: str, follow: bool,
                 owner: "BatchCopier", merge: bool = False) -> None:
        #: the paths, each ending in "/"
        self.src = src if src.endswith("/") else src + "/"
        self.dst = dst if dst.endswith("/") else dst + "/"
        self.follow = follow
        #: ``dst`` existed before the run: only names not there yet are
        #: chained (checked in C), the others go through the tree walk
        self.merge = merge
        self.src_fd = os.open(src, _OPEN_DIR)
        try:
            self.dst_fd = os.open(dst, _OPEN_DIR | os.O_NOFOLLOW)
        except BaseException:
            os.close(self.src_fd)
            raise
        out = ffi.new("struct ut_dir **")
        res = lib.ut_dir_read(self.src_fd, 0 if follow else AT_SYMLINK_NOFOLLOW,
                              out)
        if res < 0:
            os.close(self.src_fd)
            os.close(self.dst_fd)
            raise error(res, src)
        self.entries = ffi.gc(out[0], lib.ut_dir_free)
        self.count: int = self.entries.count
        self.pos = 0
        #: the tree walk's hold plus one per batch segment that names it
        self.refs = 1
        self.owner = owner
        owner.open_dirs += 1
        #: called with (self, first entry, count) as entries are chained,
        #: for -v lines and a progress total; None: nothing per file
        self.announce: Optional[Callable[["FreshDir", int, int], None]] = None
        #: --reflink: its regular files are cloned (FICLONE, in C), not
        #: chained, while the filesystem lets them
        self.clone = False
        #: the source directory's device, known when ``clone`` is set
        self.src_dev = -1

    def name(self, i: int) -> str:
        e = self.entries.ents[i]
        return os.fsdecode(ffi.unpack(self.entries.names + e.name, e.name_len))

    def size(self, i: int) -> int:
        """Entry ``i``'s size as its stat in the C read saw it."""
        return int(self.entries.ents[i].size)

    def release(self) -> None:
        """Drop one hold; the last closes both directories."""
        self.refs -= 1
        if self.refs == 0:
            os.close(self.src_fd)
            os.close(self.dst_fd)
            self.entries = None
            self.owner.open_dirs -= 1


def _aim(f: Any, d: FreshDir, clone: bool, keep_holes: bool) -> None:
    """Point the ut_fresh ``f`` at ``d``'s directories, to copy its small
    files (holes kept only if ``keep_holes``) or (--reflink) to clone its
    regular files of any size, holes and all."""
    f.src_dirfd = d.src_fd
    f.dst_dirfd = d.dst_fd
    f.open_src = _OPEN_SRC if d.follow else _OPEN_SRC | os.O_NOFOLLOW
    f.clone = clone
    f.small_max = CLONE_MAX if clone else SMALL_MAX
    f.keep_holes = clone or keep_holes


class _Helper:
    """A thread copying runs of small files of directories this run made,
    with plain syscalls in one C call a run (the GIL is released for it):
    while it copies one directory, the walk's thread copies the next. Each
    file is whole or removed (ut_copy_fresh); the first it cannot copy ends
    the run, and the walk's thread copies it again to say why."""

    def __init__(self, keep_holes: bool) -> None:
        import _queue
        import _thread

        self.keep_holes = keep_holes

        self.todo: Any = _queue.SimpleQueue()
        self.done: Any = _queue.SimpleQueue()
        self.empty = _queue.Empty
        #: runs handed over and not collected
        self.pending = 0
        self.fresh = self._new_fresh()
        self.buf = ffi.new("char[]", SMALL_MAX)
        self.calls = ffi.new("struct ut_sync_calls *")
        #: the walk's thread's, for what the helper left (its own ``fresh``
        #: belongs to the run being walked)
        self.fresh_rest = self._new_fresh()
        _thread.start_new_thread(self._run, ())

    def _new_fresh(self) -> Any:
        """A ut_fresh for new directories' small files (no fstatat)."""
        f = ffi.new("struct ut_fresh *")
        f.open_dst = _OPEN_TMP
        f.umask = UMASK
        f.small_max = SMALL_MAX
        f.keep_holes = self.keep_holes
        f.check_dst = 0
        return f

    def _run(self) -> None:
        f, buf, calls = self.fresh, self.buf, self.calls
        todo, done = self.todo, self.done
        while True:
            job = todo.get()
            if job is None:
                done.put(None)
                return
            d, start, count, clone = job
            try:
                _aim(f, d, clone, self.keep_holes)
                f.bytes = 0
                n = lib.ut_copy_fresh(d.entries, start, f, count, buf, calls)
                res = (d, start, count, n, int(f.bytes),
                       (calls.openat, calls.read, calls.write, calls.close,
                        calls.unlink, calls.ioctl), clone)
                calls.openat = calls.read = calls.write = calls.close = \
                    calls.unlink = calls.ioctl = 0
            except BaseException:   # pragma: no cover - a bug: copy again
                res = (d, start, count, 0, 0, (0, 0, 0, 0, 0, 0), clone)
            done.put(res)

    def stop(self) -> None:
        """End the thread once its runs are done (after an error or a
        signal, those not collected are dropped: their files are whole)."""
        self.todo.put(None)
        while True:
            res = self.done.get()
            if res is None:
                return
            res[0].release()


class _Batch:
    """Files whose chains were submitted together."""

    __slots__ = ("region", "count", "jobs", "paths", "dirs", "dir_files",
                 "dir_bytes", "keep", "retried")

    def __init__(self, region: int) -> None:
        self.region = region             # which region of arena and table
        self.count = 0                   # chains: index in the batch
        #: FileJob chains: (index, job, temporary or fresh target, buffer)
        self.jobs: List[Tuple[int, FileJob, str, int]] = []
        self.paths: List[str] = []       # src, tmp, dst per FileJob chain
        #: FreshDir chains: (first index, directory, first entry, count)
        self.dirs: List[Tuple[int, FreshDir, int, int]] = []
        self.dir_files = 0
        self.dir_bytes = 0
        self.keep: object = None         # the path bytes the kernel reads
        #: failed chains already cleaned up and copied again
        self.retried: Set[int] = set()


class BatchCopier:
    """Copies small new files as ring chains; see the module docstring.

    Args:
        files: opens, names and cleans up temporaries; reports errors.
        fallback: copies one job the plain way (after a chain failed).
        max_files: files per batch; fewer under a low RLIMIT_NOFILE.

    The ring is set up by :meth:`ready` on first use; if that is refused
    (memory, RLIMIT_NOFILE), every file is left to the plain engine.
    """

    def __init__(self, files: FileCopier, fallback: Callable[[FileJob], None],
                 max_files: int = BATCH_FILES) -> None:
        self.files = files
        self.stats = files.stats
        self.fallback = fallback
        opts = files.options
        self.enabled = not (opts.preserve or opts.fsync
                            or opts.sparse == "always")
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY:
            # the table size is checked against RLIMIT_NOFILE
            max_files = min(max_files, soft // (2 * FLYING))
        #: FreshDirs open at once (two descriptors each)
        self.dirs_max = 64 if soft == resource.RLIM_INFINITY else \
            max(0, min(64, (soft - 16) // 8))   # 16 for everything else
        self.open_dirs = 0
        self.enabled = self.enabled and max_files >= 1
        self.max_files = max_files
        self.euid, self.egid = os.geteuid(), os.getegid()
        self.ring: Optional[Ring] = None
        self.batch: Optional[_Batch] = None   # being filled
        self.used = 0                           # its buffer bytes
        self.flying: List[_Batch] = []          # submitted, oldest first
        self.closes = 0                         # CLOSEs in flight
        self.region_files = [0] * FLYING        # most files a region held
        self.workers = 1                        # io-wq cap (set in ready)
        self.helper: Optional[_Helper] = None    # made by add_dir

    def ready(self) -> bool:
        """Set the ring up on first use; False (noted in stats) if refused."""
        if self.ring is not None:
            return True
        if not self.enabled:
            return False
        max_files = self.max_files
        entries = 16
        while entries < 6 * max_files:
            entries *= 2
        stats = self.stats
        try:
            # no DEFER_TASKRUN: the io-wq worker carries a chain to its end;
            # COOP_TASKRUN: what it leaves for this thread (freeing requests,
            # posting completions) waits for our next enter instead of
            # interrupting the tree walk with an IPI each time (tmpfs, 10k
            # files: 254 ms instead of 292). The --stats lines describe the
            # main ring, this one goes in extra.
            ring = Ring(entries, stats=stats, describe=False,
                        setup_flags=(SETUP_COOP_TASKRUN, 0))
        except OSError as exc:
            self._refused(exc)
            return False
        # this thread copies files too while the ring is full (_copy_here):
        # one worker per other core; more only take turns on the locks of
        # the ring and of the directory they create in. Asked again before
        # each batch (launch): the splicer sets its own cap on this thread's
        # workers
        self.workers = max(1, (os.cpu_count() or 2) - 1)
        ring.limit_workers(self.workers)
        try:
            # plain buffers: pinning them costs more than small
            # files gain from fixed ones
            self.arena = Arena(FLYING, BATCH_BYTES)
            if not ring.register_file_table(2 * FLYING * max_files):
                raise OSError(errno.EMFILE, "no registered file table")
        except OSError as exc:
            ring.close()
            self._refused(exc)
            return False
        chains = FLYING * max_files
        # each chain's last CQE, and what it is on success
        self.res_tab = ffi.new("int32_t[]", chains)
        self.step_tab = ffi.new("uint8_t[]", chains)
        self._no_report = b"\xff" * max_files   # a step no chain has
        self.want_res = ffi.new("int32_t[]", chains)
        self.want_step = ffi.new("uint8_t[]", chains)
        self.left = ffi.new("unsigned[]", FLYING)   # chains without a CQE
        self.failed = ffi.new("uint32_t[]", max_files)
        self.scratch = ffi.new("struct ut_sqe[]", 4 * max_files)
        self.fresh = ffi.new("struct ut_fresh *")
        self.here_buf = ffi.new("char[]", SMALL_MAX)
        self.here_calls = ffi.new("struct ut_sync_calls *")
        stats.extra["chains"] = (
            f"{max_files} files x {FLYING} batches, "
            f"table of {2 * FLYING * max_files}")
        self.ring = ring
        self.stats.extra["chain_batches"] = 0
        return True

    def _refused(self, exc: OSError) -> None:
        self.enabled = False
        self.stats.extra["chains"] = f"off: {exc.strerror or exc}"

    # -- planning -------------------------------------------------------------

    def takes(self, job: FileJob) -> bool:
        """Whether ``job`` can be copied as one chain."""
        if not self.enabled or job.in_place:
            return False
        st = job.src_st
        size = st.st_size
        if size > SMALL_MAX or not fdio.is_positional(st):
            return False     # size 0 too: it may be a /proc-like file
        if size and st.st_blocks * 512 < size and self.files.options.sparse != "never":
            return False     # holes: the plain engine looks for them
        if job.mode & 0o777 & ~UMASK != job.mode:
            return False     # needs an fchmod after the open
        if self.files.may_clone(st, job.src, job.target):
            return False     # --reflink: one ioctl, in FileCopier.open
        old = job.old_st
        if old is not None and (old.st_uid, old.st_gid) != (self.euid, self.egid):
            return False     # needs an fchown
        return True

    def _current(self, need: int) -> _Batch:
        """The batch being filled, launching it first if it has no room for
        one more file of ``need`` buffer bytes."""
        batch = self.batch
        if batch is not None and (batch.count == self.max_files
                                  or self.used + need > BATCH_BYTES):
            self.launch()
            batch = None
        if batch is None:
            if len(self.flying) == FLYING:
                self._complete(self.flying[0])
            region = (self.flying[-1].region + 1) % FLYING if self.flying else 0
            batch = self.batch = _Batch(region)
            self.used = 0
            # no chain of the region has reported: a CQE reaped but never
            # routed (a signal between the two) then reads as a failure, and
            # the clean-up removes that file rather than trust a stale row
            ffi.memmove(self.step_tab + region * self.max_files,
                        self._no_report, self.max_files)
            self.left[region] = 0
        return batch

    def add(self, job: FileJob) -> None:
        """Plan ``job`` into the current batch (submitting when it is full)."""
        size = job.src_st.st_size
        need = (size + _ALIGN - 1) & -_ALIGN
        batch = self._current(need)
        if job.fresh:
            tmp = job.target
        else:
            files = self.files
            head, sep, tail = job.target.rpartition("/")
            files._serial += 1
            tmp = f"{head}{sep}.{tail[:180]}.ucp-{files._tag}{files._serial:x}"
        i = batch.count
        chain = batch.region * self.max_files + i
        if job.fresh:
            self.want_res[chain], self.want_step[chain] = size, _S_WRITE
        else:
            self.want_res[chain], self.want_step[chain] = 0, _S_RENAME
        batch.jobs.append((i, job, tmp,
                           self.arena.addr(batch.region) + self.used))
        batch.paths += (job.src, tmp, job.target)
        batch.count = i + 1
        self.left[batch.region] += 1
        self.used += need

    def open_dir(self, src: str, dst: str, follow: bool,
                 merge: bool = False) -> Optional[FreshDir]:
        """A :class:`FreshDir` for ``src`` copied into ``dst`` (made by this
        run, or ``merge``: one that existed), or None: the walk copies it
        entry by entry (too many directories open, or one cannot be
        opened; the walk says why)."""
        if not self.ready():
            return None
        if self.open_dirs >= self.dirs_max:
            self.drain()    # finished batches release their directories
            if self.open_dirs >= self.dirs_max:
                return None  # a deep tree: its ancestors hold the rest
        try:
            fresh = FreshDir(src, dst, follow, self, merge)
        except OSError:
            return None
        self.stats.count("dirs_read_in_c")
        return fresh

    def add_dir(self, d: FreshDir) -> None:
        """Chain the small regular files of ``d`` from ``d.pos`` on, up to
        the first other entry (submitting each batch that fills)."""
        f = self.fresh
        keep_holes = self.files.options.sparse == "never"
        _aim(f, d, False, keep_holes)
        f.open_dst = _OPEN_TMP
        f.umask = UMASK
        f.check_dst = d.merge
        if d.clone and not d.merge and self.files.cloner.proven(d.src_dev):
            # clones shared between the two threads, as tmpfs copies are
            _aim(f, d, True, keep_holes)
            try:
                self._add_dir_split(d, f, clone=True)
            finally:
                _aim(f, d, False, keep_holes)
            return
        if d.clone and self._clone_here(d):
            return
        if not d.merge and self._helper_pays(d):
            self._add_dir_split(d, f)
            return
        per = self.max_files
        while d.pos < d.count:
            if (self.batch is None and len(self.flying) == FLYING
                    and self._oldest_running() and self._copy_here(d)):
                continue
            batch = self._current(0)
            region, i = batch.region, batch.count
            chain = region * per + i
            base = self.arena.addr(region)
            f.buf = base + self.used
            f.buf_end = base + BATCH_BYTES
            f.slot = 2 * chain
            f.room = per - i
            f.user_data = chain << 3
            f.want_res = self.want_res + chain
            f.want_step = self.want_step + chain
            f.bytes = 0
            n = lib.ut_chain_fresh(d.entries, d.pos, f, self.scratch)
            self._count_checks(f)
            if n:
                ring = self.ring
                assert ring is not None
                ring.queue_descs(self.scratch, 4 * n, 3 * n)
                self.left[region] += n
                if d.announce is not None:
                    d.announce(d, d.pos, n)
                batch.dirs.append((i, d, d.pos, n))
                d.refs += 1
                batch.count = i + n
                batch.dir_files += n
                batch.dir_bytes += f.bytes
                self.used = f.buf - base
                d.pos += n
            if f.stop != lib.UT_STOP_FULL or (n == 0 and i == 0):
                return
            self.launch()

    def _helper_pays(self, d: FreshDir) -> bool:
        """Whether the helper thread copies the small files of ``d`` (a new
        directory): on tmpfs, where no read, write or create of a chain
        completes inline (tmpfs has no RWF_NOWAIT), so an io-wq worker runs
        every request, at about 13 us of CPU a 4 KiB file against 9 us for
        plain syscalls, plus this thread's task work (bench/README.md)."""
        # one fstatfs a directory (a cache by device would cost an fstat)
        return HELPER and lib.ut_fd_fs_type(d.dst_fd) == _TMPFS_MAGIC

    def _add_dir_split(self, d: FreshDir, f: object, clone: bool = False) -> None:
        """The small files of ``d`` from ``d.pos`` on, up to the first other
        entry: handed to the helper thread (runs of up to HELPER_RUN) when
        it has room, otherwise copied here a few at a time, looking again
        between. ``clone``: its regular files of any size, cloned."""
        h = self.helper
        if h is None:
            h = self.helper = _Helper(self.files.options.sparse == "never")
        while d.pos < d.count:
            if h.pending:
                self._collect(False)
            if h.pending < HELPER_DEPTH:
                n = lib.ut_small_run(d.entries, d.pos, f, HELPER_RUN)
                if n:
                    if d.announce is not None:
                        d.announce(d, d.pos, n)
                    d.refs += 1
                    h.pending += 1
                    h.todo.put((d, d.pos, n, clone))
                    d.pos += n
                if n < HELPER_RUN:
                    return    # the walk takes the entry at d.pos
                continue
            f.bytes = 0  # type: ignore[attr-defined]
            n = lib.ut_copy_fresh(d.entries, d.pos, f, HELPER_HERE,
                                  self.here_buf, self.here_calls)
            if n:
                if d.announce is not None:
                    d.announce(d, d.pos, n)
                d.pos += n
            self._count_here(n, int(f.bytes), self.here_calls, clone)  # type: ignore[attr-defined]
            stop = f.stop  # type: ignore[attr-defined]
            if stop == lib.UT_STOP_FAILED:
                if d.announce is not None:
                    d.announce(d, d.pos, 1)
                d.pos += 1
                self._copy_again(d, d.pos - 1)
            elif stop != lib.UT_STOP_END or n < HELPER_HERE:
                return    # the walk takes the entry at d.pos

    def _collect(self, block: bool) -> None:
        """Finish the helper's runs that are done (all of them if
        ``block``): count them, copy again what it could not."""
        h = self.helper
        assert h is not None
        while h.pending:
            try:
                res = h.done.get() if block else h.done.get_nowait()
            except h.empty:
                return
            h.pending -= 1
            d, start, count, n, done, calls, clone = res
            try:
                self._count_here(n, done, calls, clone)
                if n < count:
                    self._copy_again(d, start + n)
                    self._copy_rest(d, start + n + 1, start + count, clone)
            finally:
                d.release()

    def _copy_rest(self, d: FreshDir, pos: int, end: int,
                   clone: bool = False) -> None:
        """Copy (or clone) entries ``pos`` .. ``end`` - 1 of ``d`` (small
        files, announced) here, after the helper stopped short of them."""
        h = self.helper
        assert h is not None
        f = h.fresh_rest
        _aim(f, d, clone, h.keep_holes)
        while pos < end:
            f.bytes = 0
            n = lib.ut_copy_fresh(d.entries, pos, f, end - pos,
                                  self.here_buf, self.here_calls)
            self._count_here(n, int(f.bytes), self.here_calls, clone)
            pos += n
            if pos < end:
                self._copy_again(d, pos)
                pos += 1

    def _copy_again(self, d: FreshDir, entry: int) -> None:
        """Entry ``entry`` of ``d``, which a plain C copy could not make
        whole (and removed): copied by the plain engine, which says why."""
        self.stats.count("chain_failed_syscall_copy")
        job = self._job(d, d.name(entry))
        if job is not None:
            self.fallback(job)

    def _count_here(self, n: int, done: int, calls: object,
                    cloned: bool = False) -> None:
        """Stats and progress for ``n`` files (``done`` bytes) copied (or
        ``cloned``) with plain syscalls (``calls``: their counts, a
        ut_sync_calls or a tuple in its order), which are then cleared.
        ``n`` may be 0: the calls of a copy that failed count too."""
        stats = self.stats
        if n:
            stats.files += n
            if cloned:
                stats.count("files_cloned", n)
            else:
                stats.bytes_read += done
                stats.bytes_written += done
                stats.count("files_copied_by_syscalls", n)
        names = ("openat", "read", "write", "close", "unlink", "ioctl")
        if isinstance(calls, tuple):
            for name, count in zip(names, calls):
                if count:
                    stats.count_syscall(name, count)
        else:
            for name in names:
                count = getattr(calls, name)
                if count:
                    stats.count_syscall(name, count)
                    setattr(calls, name, 0)
        if done:
            self.files.progress(done)

    def _oldest_running(self) -> bool:
        """Whether the oldest batch still has chains in flight (a new batch
        would wait for it), after routing the completions already posted."""
        ring = self.ring
        assert ring is not None   # batches are flying
        n = ring.reap()
        if n:
            self.closes -= lib.ut_route_chains(
                ring.cqe_user_data, ring.cqe_res, n, self.max_files,
                self.res_tab, self.step_tab, self.left)
        return self.left[self.flying[0].region] > 0

    def _copy_here(self, d: FreshDir) -> bool:
        """While the workers run the batches in flight, copy the next few
        small files of ``d`` in this thread (plain syscalls, in C) rather
        than wait. False if none was copied: the chains take over."""
        f = self.fresh
        f.bytes = 0
        n = lib.ut_copy_fresh(d.entries, d.pos, f, HERE_FILES, self.here_buf,
                              self.here_calls)
        self._took_here(d, n, False)
        return n > 0

    def _clone_here(self, d: FreshDir) -> bool:
        """--reflink: clone the regular files of ``d`` from ``d.pos`` on in
        this thread (FICLONE, in C; no bytes move, any size), up to the
        first other entry, or one whose clone failed: the walk copies that
        one (and says why it could not). False, with ``d.clone`` off, if
        the filesystem answered that it cannot clone: chain the rest."""
        f = self.fresh
        keep_holes = self.files.options.sparse == "never"
        _aim(f, d, True, keep_holes)
        made = 0
        try:
            while d.pos < d.count:
                f.bytes = 0
                n = lib.ut_copy_fresh(d.entries, d.pos, f, CLONE_FILES,
                                      self.here_buf, self.here_calls)
                self._took_here(d, n, True)
                made += n
                if f.stop != lib.UT_STOP_END:
                    break
        finally:
            stop, err = f.stop, f.err
            _aim(f, d, False, keep_holes)
        if stop == lib.UT_STOP_FAILED and err in CANNOT_CLONE:
            self.files.cloner.cannot(d.src_dev)
            d.clone = False
            return False
        if made:
            self.files.cloner.prove(d.src_dev)
        return True

    def _took_here(self, d: FreshDir, n: int, cloned: bool) -> None:
        """Count the ``n`` files ut_copy_fresh copied (or cloned) from
        ``d.pos`` on, and move past them."""
        f = self.fresh
        self._count_checks(f)
        if n:
            if d.announce is not None:
                d.announce(d, d.pos, n)
            d.pos += n
        self._count_here(n, int(f.bytes), self.here_calls, cloned)

    def _count_checks(self, f: object) -> None:
        """Move the fstatat count of a merged directory's C calls to stats."""
        checks = f.dst_checks  # type: ignore[attr-defined]
        if checks:
            self.stats.count_syscall("newfstatat", checks)
            f.dst_checks = 0  # type: ignore[attr-defined]

    def launch(self) -> None:
        """Queue the current batch's chains and submit them (one enter)."""
        batch = self.batch
        if batch is None:
            return
        self.batch = None
        if batch.count == 0:
            return
        ring = self.ring
        assert ring is not None
        ring.limit_workers(self.workers)
        if batch.jobs:
            self._queue_jobs(batch, ring)
        r = batch.region
        self.region_files[r] = max(self.region_files[r], batch.count)
        # flying first: a signal raised as the enter returns must leave
        # the batch where _abandon looks for it
        self.flying.append(batch)
        ring.submit()
        self.stats.extra["chain_batches"] += 1

    def _queue_jobs(self, batch: _Batch, ring: Ring) -> None:
        """Describe the FileJob chains of ``batch`` (by path)."""
        blob = bytearray(("\0".join(batch.paths) + "\0").encode(
            _FS_ENCODING, _FS_ERRORS))
        lens = [n + 1 for n in map(len, blob.split(b"\0"))]
        cdata = ffi.from_buffer(blob)
        batch.keep = (blob, cdata)
        addr = int(ffi.cast("uintptr_t", cdata))
        region_base = batch.region * self.max_files
        self.files.temps.update(tmp for _, _, tmp, _ in batch.jobs)
        sqes: List[bytes] = []
        k = 0
        renames = 0
        for i, job, _, buf in batch.jobs:
            size = job.src_st.st_size
            fresh = job.fresh
            chain = region_base + i
            slot = 2 * chain
            ud = chain << 3
            a_src = addr
            a_tmp = a_src + lens[k]
            a_dst = a_tmp + lens[k + 1]
            addr = a_dst + lens[k + 2]
            k += 3
            sqes.append(_OPEN_READ_WRITE(
                OP_OPENAT, _LINK, 0, AT_FDCWD, 0, _OPEN_SRC, a_src, 0, 0,
                slot + 1, 0, ud | _S_OPEN_SRC,
                OP_OPENAT, _LINK, 0, AT_FDCWD, job.mode & 0o777, _OPEN_TMP,
                a_dst if fresh else a_tmp, 0, 0, slot + 2, 0, ud | _S_OPEN_TMP,
                OP_READ, _LINK_FIXED, 0, slot, size, 0, buf, 0, 0, 0, 0,
                ud | _S_READ,
                OP_WRITE, SQE_FIXED_FILE if fresh else _LINK_FIXED, 0,
                slot + 1, size, 0, buf, 0, 0, 0, 0, ud | _S_WRITE))
            if not fresh:
                renames += 1
                sqes.append(_RENAME(
                    OP_RENAMEAT, 0, 0, AT_FDCWD, _AT_FDCWD_U32, 0, a_tmp,
                    a_dst, 0, 0, 0, ud | _S_RENAME))
        chains = len(batch.jobs)
        # every request but each chain's last is CQE_SKIP_SUCCESS
        ring.queue_packed(b"".join(sqes), 4 * chains + renames,
                          3 * chains + renames)

    # -- completion -------------------------------------------------------------

    def _reap(self, wait_nr: int) -> None:
        """One enter waiting for ``wait_nr`` completions; route them all."""
        ring = self.ring
        assert ring is not None   # reaping: batches are in flight
        n = ring.wait(min(wait_nr, ring.in_flight))
        self.closes -= lib.ut_route_chains(
            ring.cqe_user_data, ring.cqe_res, n, self.max_files,
            self.res_tab, self.step_tab, self.left)

    def _failures(self, batch: _Batch) -> List[int]:
        """Indexes of the chains of a completed ``batch`` that failed."""
        base = batch.region * self.max_files
        nf = lib.ut_chains_failed(self.res_tab + base, self.step_tab + base,
                                  self.want_res + base, self.want_step + base,
                                  batch.count, self.failed)
        return list(self.failed[0:nf]) if nf else []

    def _complete(self, batch: _Batch) -> None:
        """Wait for every chain of ``batch``; finish its files in order."""
        region = batch.region
        while self.left[region]:
            self._reap(self.left[region])
        failed = self._failures(batch)
        files, stats = self.files, self.stats
        temps = files.temps
        bad = set(failed)
        done = 0
        for i, job, tmp, _ in batch.jobs:
            if i not in bad:
                temps.discard(tmp)
                done += job.src_st.st_size
                stats.files += 1
        dir_files, dir_bytes = batch.dir_files, batch.dir_bytes
        if failed:
            base = region * self.max_files
            for i in failed:
                for first, _, _, n in batch.dirs:
                    if first <= i < first + n:
                        dir_files -= 1
                        dir_bytes -= self.want_res[base + i]
        stats.files += dir_files
        done += dir_bytes
        stats.bytes_read += done
        stats.bytes_written += done
        files.progress(done)
        batch.keep = None
        if failed:
            self._retry(batch, failed)
        self.flying.remove(batch)
        for _, d, _, _ in batch.dirs:
            d.release()
        batch.dirs = []

    def _owner(self, batch: _Batch, i: int) -> Tuple[Optional[FileJob], str,
                                                      Optional[FreshDir], int]:
        """What chain ``i`` of ``batch`` copies: (job, its temporary, None,
        0), or (None, "", the directory, the entry)."""
        for first, d, entry, n in batch.dirs:
            if first <= i < first + n:
                return None, "", d, entry + i - first
        for k, job, tmp, _ in batch.jobs:
            if k == i:
                return job, tmp, None, 0
        raise LookupError(i)  # pragma: no cover

    def _retry(self, batch: _Batch, failed: List[int]) -> None:
        """Close the failed chains' slots, drop their temporaries, copy again."""
        ring, files = self.ring, self.files
        assert ring is not None   # the batch completed on it
        base = batch.region * self.max_files
        for i in failed:
            for slot in (2 * (base + i), 2 * (base + i) + 1):
                if ring.room < 1:
                    ring.submit()
                ring.prep(OP_CLOSE, 0, 0, 0, 0, _S_CLOSE, file_index=slot + 1)
                self.closes += 1
        while self.closes:
            self._reap(1)
        for i in failed:
            step = self.step_tab[base + i]
            self.stats.count(f"chain_failed_{_STEP_NAMES[step]}")
            job, tmp, d, entry = self._owner(batch, i)
            if d is not None:
                name = d.name(entry)
                if step != _S_OPEN_TMP:   # created first: remove it
                    try:
                        os.unlink(name, dir_fd=d.dst_fd)
                    except OSError:
                        pass
                job = self._job(d, name)
                if job is None:
                    batch.retried.add(i)
                    continue
            else:
                assert job is not None
                # the temporary exists once its open succeeded
                if step > _S_OPEN_TMP:
                    try:
                        os.unlink(tmp)
                    except OSError:
                        pass
                files.temps.discard(tmp)
            self.fallback(job)
            batch.retried.add(i)   # a signal from here on: _abandon skips it

    def _job(self, d: FreshDir, name: str) -> Optional[FileJob]:
        """The FileJob for entry ``name`` of ``d`` (its chain failed)."""
        src, dst = d.src + name, d.dst + name
        try:
            st = os.stat(src) if d.follow else os.lstat(src)
        except OSError as exc:
            self.files.fail(f"cannot stat {quote(src)}: "
                            f"{exc.strerror or os.strerror(exc.errno or 0)}")
            return None
        if d.merge:
            # a name that was free when chained: a temporary renamed there
            return FileJob(src, dst, dst, st, None,
                           st.st_mode & 0o777 & ~UMASK)
        return FileJob.fresh_file(src, dst, st)

    def drain(self) -> None:
        """Submit what is planned and finish every batch, in order."""
        if self.helper is not None and self.helper.pending:
            self._collect(True)
        self.launch()
        while self.flying:
            self._complete(self.flying[0])

    def _abandon(self, ring: Ring) -> None:
        """After an error or a signal: wait for every chain submitted, keep
        the files that were completed, remove the rest from the directories
        this run made (temporaries and fresh FileJob files are in
        ``files.temps``, removed by the caller's clean-up)."""
        batches = list(self.flying)
        if self.batch is not None:   # chains queued and maybe submitted
            batches.append(self.batch)
            self.batch = None
        ring.submit()                # so every queued chain reports
        while ring.in_flight:
            n = ring.wait(1)
            lib.ut_route_chains(ring.cqe_user_data, ring.cqe_res, n,
                                self.max_files, self.res_tab, self.step_tab,
                                self.left)
        for batch in batches:
            failed = self._failures(batch) if batch.dirs else []
            for i in failed:
                if i in batch.retried:
                    continue   # its file was copied again in full
                _, _, d, entry = self._owner(batch, i)
                if d is not None and \
                        self.step_tab[batch.region * self.max_files + i] != _S_OPEN_TMP:
                    try:
                        os.unlink(d.name(entry), dir_fd=d.dst_fd)
                    except OSError:
                        pass
            for _, d, _, _ in batch.dirs:
                d.release()
            batch.dirs = []
        self.flying = []

    def close(self) -> None:
        """Finish what is in flight, close every slot, close the ring.

        After an error or a signal the chains in flight are still waited
        for: a torn-down ring could create a file after the clean-up
        removed the ones it knew of.
        """
        helper, self.helper = self.helper, None
        if helper is not None:
            # its runs are whole files or nothing: wait for the one running
            helper.stop()
        ring = self.ring
        if ring is None:
            return
        self.ring = None
        self.enabled = False
        try:
            self._abandon(ring)
            for r in range(FLYING):
                base = r * 2 * self.max_files
                for slot in range(base, base + 2 * self.region_files[r]):
                    if ring.room < 1:
                        ring.submit()
                    ring.prep(OP_CLOSE, 0, 0, 0, 0, _S_CLOSE,
                              file_index=slot + 1)
            ring.submit()
            while ring.in_flight:
                ring.wait(1)
        finally:
            ring.close()
