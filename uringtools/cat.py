"""cat: copy inputs to an output descriptor, in order, as GNU cat does.

The uring engine reads ahead into the slots of a registered arena (several
positional reads in flight for regular files, one at a time for streams),
and writes to the output strictly in order with one write in flight,
coalescing adjacent full slots into one write. The sync engine is a plain
read/write loop with the same block size.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import (Any, Callable, Collection, List, Optional, Sequence,
                        Tuple)

from .records import record
from . import fdio
from .catfmt import CatFormat, CatFormatter
from .ring import (OP_POLL_ADD, OP_WRITE, OP_WRITE_FIXED, SETUP_COOP_TASKRUN,
                   SQE_IO_LINK, FileRef, error)
from .errors import WriteError
from .readahead import (K_CALLER, K_POLL, K_READ, KIND_MASK, ReadAhead,
                        ring_with_arena)
from .splicing import CHAIN_PAIRS, VIA_PIPE, SpliceCopier, splice_mode
from .stats import Stats

DEFAULT_BLOCK_SIZE = 128 * 1024
DEFAULT_QUEUE_DEPTH = 4

POLLOUT = 0x004

if TYPE_CHECKING:
    #: Called with (operand name, reason) for each input that fails.
    ErrorHandler = Callable[[str, str], None]




class _Input(record("_Input", "name fd st owned direct",  # type: ignore[misc]
                        defaults=(False,))):
    """An open operand: name, fd, its fstat, whether we close it, and
    whether it was opened with O_DIRECT."""

    __slots__ = ()


def _leads_to_closed_fd(name: str, closed_fds: Collection[int]) -> bool:
    """Does ``name`` lead to /proc/PID/fd/N (/dev/stdin, /dev/fd/2 ...) for
    one of our std fds that was closed at start-up, whose place the caller
    filled with /dev/null? Symbolic links of the last component are
    followed as open(2) would, up to its limit."""
    import re

    own_fd_dir = re.compile(r"/proc/%d(?:/task/\d+)?/fd\Z" % os.getpid())
    path = name
    for _ in range(40):
        head, tail = os.path.split(path)
        head = os.path.realpath(head or ".")
        if (tail.isdigit() and int(tail) in closed_fds
                and own_fd_dir.match(head)):
            return True
        try:
            path = os.path.join(head, os.readlink(os.path.join(head, tail)))
        except OSError:
            return False
    return False


def _open_input(name: str, out_st: Optional[os.stat_result],
                direct: bool = False, stats: Optional[Stats] = None,
                stdin_closed: bool = False,
                closed_fds: Collection[int] = ()) -> _Input:
    """Open an operand ('-' is stdin) and run GNU cat's checks on it.

    With ``direct``, a named file is opened O_DIRECT when its filesystem
    allows (tmpfs answers EINVAL: counted in stats.extra["direct_refused"]).
    A name that leads to one of ``closed_fds`` fails with ENOENT, as it
    did before the caller filled the fd in.
    """
    if name == "-":
        if stdin_closed:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF), name)
        fd, owned = 0, False
        direct = False
    else:
        if closed_fds and _leads_to_closed_fd(name, closed_fds):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT),
                                    name)
        flags = os.O_RDONLY | os.O_CLOEXEC
        fd = -1
        if direct:
            try:
                fd = os.open(name, flags | os.O_DIRECT)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                direct = False
                if stats is not None:
                    stats.count("direct_refused")
        if fd < 0:
            fd = os.open(name, flags)
        owned = True
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), name)
        if (out_st is not None and stat.S_ISREG(out_st.st_mode)
                and st.st_dev == out_st.st_dev and st.st_ino == out_st.st_ino
                and os.lseek(fd, 0, os.SEEK_CUR) < st.st_size):
            raise _InputIsOutput(name)
    except BaseException:
        if owned:
            os.close(fd)
        raise
    return _Input(name, fd, st, owned, direct)


class _InputIsOutput(Exception):
    """GNU: 'input file is output file'."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def cat_files(names: Sequence[str], out_fd: int = 1, *, engine: str = "uring",
              block_size: int = DEFAULT_BLOCK_SIZE,
              queue_depth: int = DEFAULT_QUEUE_DEPTH,
              fmt: Optional[CatFormat] = None, stats: Optional[Stats] = None,
              on_error: Optional[ErrorHandler] = None,
              splice: bool = True, direct: bool = False,
              stdin_closed: bool = False,
              closed_fds: Collection[int] = ()) -> bool:
    """Concatenate ``names`` ('-' is stdin) onto ``out_fd``, like GNU cat.

    Args:
        names: operands, in order.
        out_fd: where the bytes go: a file (from its current offset, honouring
            O_APPEND), a pipe (blocking or not), a terminal, a device.
        engine: "uring" or "sync".
        block_size: bytes per read request.
        queue_depth: reads in flight per regular file (arena slots).
        fmt: GNU cat's -b/-E/-n/-s/-T/-v transformations.
        stats: counters to fill.
        on_error: called with (name, reason) for each operand that fails.
        splice: with the uring engine and no formatting, move regular files
            into pipes, /dev/null and files with zero-copy splice requests
            instead of read_fixed/write_fixed through the arena.
        direct: read named regular files with O_DIRECT into the aligned
            arena, bypassing the page cache (uring engine; an unaligned tail
            and filesystems that refuse O_DIRECT fall back to cached reads,
            counted in stats.extra).
        stdin_closed: the caller found fd 0 closed: each '-' operand fails
            with EBADF, in its turn, as in GNU cat.
        closed_fds: the std fds the caller found closed and filled with
            /dev/null: a name that leads to one of them (/dev/stdin,
            /dev/fd/2, /proc/self/fd/0) fails with ENOENT, as in GNU cat.

    Returns:
        True when every operand was copied.

    Raises:
        WriteError: the output could not be written (EPIPE, ENOSPC, EBADF...).
        UringUnavailable: engine "uring" and io_uring cannot be set up.
    """
    if block_size < 1 or queue_depth < 1:
        raise ValueError("block size and queue depth must be positive")
    stats = stats if stats is not None else Stats()
    stats.engine = engine
    stats.block_size = block_size
    stats.queue_depth = queue_depth
    try:
        out_st = os.fstat(out_fd)
    except OSError as exc:
        raise WriteError(exc.errno, exc.strerror) from None
    fdio.enlarge_pipe(out_fd, out_st)
    formatter = CatFormatter(fmt) if fmt is not None and fmt.active else None
    report: ErrorHandler = on_error or (lambda name, reason: None)

    copier: _Copier
    if engine == "uring":
        copier = _UringCopier(out_fd, block_size, queue_depth, stats, formatter,
                              splice_mode(out_fd, out_st)
                              if splice and formatter is None else None)
        # one file pays the ring's set-up once; many small ones pay per file
        copier.small_by_syscalls = len(names) > 1
    elif engine == "sync":
        copier = _SyncCopier(out_fd, block_size, stats, formatter)
    else:
        raise ValueError(f"unknown engine {engine!r}")
    ok = True
    stats.start()
    try:
        for name in names:
            try:
                inp = _open_input(name, out_st, direct,
                                  stats, stdin_closed, closed_fds)
            except _InputIsOutput:
                report(name, "input file is output file")
                ok = False
                continue
            except OSError as exc:
                report(name, _reason(exc))
                ok = False
                continue
            stats.files += 1
            try:
                failure = copier.copy(inp)
            finally:
                if inp.owned:
                    os.close(inp.fd)
            if failure is not None:
                report(name, failure)
                ok = False
        tail = formatter.flush() if formatter is not None else b""
        if tail:
            try:
                fdio.write_all(out_fd, memoryview(tail), stats)
            except OSError as exc:
                raise WriteError(exc.errno, exc.strerror) from None
    finally:
        copier.close()
        stats.stop()
    if not ok:
        stats.errors += 1
    return ok


class _Copier:
    def copy(self, inp: _Input) -> Optional[str]:
        """Copy one input; return a reason if reading it failed."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class _SyncCopier(_Copier):
    """One read(2), one write(2), repeat: the baseline.

    The buffer is an anonymous mmap (page aligned), so an O_DIRECT
    descriptor is read directly while offsets stay aligned.
    """

    def __init__(self, out_fd: int, block_size: int, stats: Stats,
                 formatter: Optional[CatFormatter]) -> None:
        self.out_fd = out_fd
        self.block_size = block_size
        self.buf = mmap.mmap(-1, block_size)
        self.view = memoryview(self.buf)
        self.stats = stats
        self.formatter = formatter

    def copy(self, inp: _Input) -> Optional[str]:
        direct = inp.direct
        if direct:
            if (self.block_size % fdio.DIRECT_ALIGN
                    or os.lseek(inp.fd, 0, os.SEEK_CUR) % fdio.DIRECT_ALIGN):
                fdio.drop_direct(inp.fd, self.stats)
                direct = False
            else:
                self.stats.count("direct_files")
        return self.copy_rest(inp.fd, direct=direct)

    def copy_rest(self, fd: int, first: bytes = b"",
                  direct: bool = False) -> Optional[str]:
        """Write ``first``, then copy ``fd`` from its position to EOF
        (``direct``: ``fd`` is O_DIRECT and at an aligned offset)."""
        if first:
            self._emit(memoryview(first))
        while True:
            try:
                n = fdio.read_into(fd, self.buf, self.stats)  # type: ignore[arg-type]
            except OSError as exc:
                if not (direct and exc.errno == errno.EINVAL):
                    return _reason(exc)
                self.stats.resubmissions += 1
                fdio.drop_direct(fd, self.stats)   # this filesystem refuses it
                direct = False
                continue
            if n == 0:
                return None
            if direct and n % fdio.DIRECT_ALIGN:
                fdio.drop_direct(fd, self.stats)   # the position is unaligned now
                direct = False
            self._emit(self.view[:n])

    def _emit(self, data: memoryview) -> None:
        if self.formatter is not None:
            data = memoryview(self.formatter.feed(bytes(data)))
        try:
            fdio.write_all(self.out_fd, data, self.stats)
        except OSError as exc:
            raise WriteError(exc.errno, exc.strerror) from None


def _regular_output(fd: int) -> bool:
    """Is ``fd`` a regular file written at its position (not O_APPEND)?"""
    try:
        st = os.fstat(fd)
        return (stat.S_ISREG(st.st_mode)
                and not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND)
    except OSError:
        return False


#: Memory that abandoned rings may still read or write: never freed.
_ABANDONED: List[object] = []

#: user_data kind of our writes (the reads' and polls' are ReadAhead's)
_K_WRITE = K_CALLER


class _UringCopier(_Copier):
    """Read ahead through the ring, write in order through the ring."""

    #: copy regular files under one block with read(2) and write(2)
    small_by_syscalls = False

    def __init__(self, out_fd: int, block_size: int, depth: int, stats: Stats,
                 formatter: Optional[CatFormatter],
                 splice: Optional[str] = None) -> None:
        self.stats = stats
        self.block_size = block_size
        self.formatter = formatter
        if splice == VIA_PIPE:
            # chains of splice pairs: the whole chain in one submit, on a
            # ring without DEFER_TASKRUN (splicing.py)
            self.ring, self.arena = ring_with_arena(
                depth, block_size, stats, 2 * CHAIN_PAIRS,
                setup_flags=(SETUP_COOP_TASKRUN, 0))
        else:
            # extra: room for the write, its poll and splices
            self.ring, self.arena = ring_with_arena(depth, block_size, stats, 4)
        self.fixed = self.ring.buffers_registered
        try:
            if self.ring.register_file_table(2):
                self.out = self.ring.attach_file(out_fd)
            else:
                self.out = FileRef(out_fd, 0, out_fd, -1)
            self.splicer = (SpliceCopier(self.ring, self.out, splice, stats)
                            if splice else None)
            # A regular output (not O_APPEND) is watched for short writes:
            # see _fix_position.
            self.out_positional = _regular_output(out_fd)
        except BaseException:
            self.ring.close()
            raise
        self.sync = _SyncCopier(out_fd, block_size, stats, formatter)

    def close(self) -> None:
        if self.splicer is not None:
            self.splicer.close()
        self.ring.close()

    def _note_path(self, path: str) -> None:
        """Record which data path carried a file (shown by --stats)."""
        paths = self.stats.extra.get("data_path", "")
        if path not in paths.split(" + "):
            self.stats.extra["data_path"] = f"{paths} + {path}" if paths else path

    def _splice(self, inp: _Input) -> Optional[str]:
        """Copy a regular file with splice requests (no copy through us)."""
        assert self.splicer is not None
        src = self.ring.attach_file(inp.fd)
        start = os.lseek(inp.fd, 0, os.SEEK_CUR)
        self._note_path(self.splicer.mode)
        try:
            failure, delivered = self.splicer.copy(src, start, inp.st.st_size)
        except BaseException:
            # requests may still be in flight: let the ring go with them
            _ABANDONED.append(self.splicer)
            self.splicer = None
            self.ring.close()
            raise
        if not inp.owned:
            os.lseek(inp.fd, start + delivered, os.SEEK_SET)
        self.ring.detach_file(src)
        return failure

    # -- one input --------------------------------------------------------

    def copy(self, inp: _Input) -> Optional[str]:
        if (self.small_by_syscalls and stat.S_ISREG(inp.st.st_mode)
                and 0 < inp.st.st_size < self.block_size):
            # one block: the ring's work for a file (registering it, its
            # requests and their reaping, a splice's trip through io-wq)
            # costs ~60 us, read(2) and write(2) a few
            self._note_path("read/write (small files)")
            self.stats.count("files_copied_by_syscalls")
            return self.sync.copy(inp)
        if (self.splicer is not None and fdio.is_positional(inp.st)
                and not inp.direct):
            return self._splice(inp)
        ring, stats, arena = self.ring, self.stats, self.arena
        self._note_path("read_fixed/write_fixed" if self.fixed else "read/write")
        src = ring.attach_file(inp.fd)
        if inp.direct:
            stats.count("direct_files")
        # bounded: up to the size fstat gave, then one read there to see EOF
        # or growth, as read(2) would
        ra = ReadAhead(ring, arena, src, inp.st, stats, bounded=True,
                       direct=inp.direct)
        write_op = OP_WRITE_FIXED if self.fixed else OP_WRITE
        formatter = self.formatter
        # the write in flight: its slots, next address, bytes left, and data
        w_first = w_count = 0
        w_addr = w_left = 0
        w_busy = False
        w_keep: Optional[Tuple[Any, int]] = None

        # where our next byte lands in a regular output, if nobody else
        # writes to it meanwhile
        out_pos = (os.lseek(self.out.fd, 0, os.SEEK_CUR)
                   if self.out_positional else -1)

        def prep_write() -> None:
            # offset -1: the shared file position, as write(2) uses it
            ring.prep(OP_WRITE if w_keep is not None else write_op,
                      self.out.target, w_addr, w_left, -1, _K_WRITE,
                      flags=self.out.sqe_flags)

        try:
            while True:
                ra.fill()
                # hand the oldest filled slots to the writer
                while not w_busy:
                    first, count, nbytes = ra.take(formatter is None)
                    if not count:
                        break
                    if formatter is not None:
                        data = formatter.feed(
                            bytes(arena.slot_view(first, nbytes)))
                        ra.release(first)
                        if not data:
                            continue
                        w_keep = self._cbuf(data)
                        w_addr, w_left = w_keep[1], len(data)
                        w_count = 0
                    else:
                        w_first, w_count = first, count
                        w_addr, w_left = arena.addr(first), nbytes
                        w_keep = None
                    prep_write()
                    w_busy = True
                if ra.done and not w_busy and ra.reads == 0:
                    break
                n = ring.wait(1)
                ud_arr, res_arr = ring.cqe_user_data, ring.cqe_res
                for i in range(n):
                    ud, res = ud_arr[i], res_arr[i]
                    kind = ud & KIND_MASK
                    if kind == K_READ:
                        ra.complete(ud, res)
                    elif kind == _K_WRITE:
                        if res >= 0:
                            stats.bytes_written += res
                        if 0 < res < w_left and out_pos >= 0:
                            self._fix_position(out_pos, res)
                        if res > 0 and out_pos >= 0:
                            out_pos += res
                        if res == w_left:
                            ra.release(w_first, w_count)
                            w_count = 0
                            w_keep = None
                            w_busy = False
                        elif res > 0:
                            stats.short_writes += 1
                            stats.resubmissions += 1
                            w_addr += res
                            w_left -= res
                            prep_write()
                        elif res in (-errno.EAGAIN, -errno.EINTR,
                                     -errno.ECANCELED, 0):
                            stats.resubmissions += 1
                            if res == -errno.EAGAIN:
                                out = self.out
                                ring.prep(OP_POLL_ADD, out.target, 0, 0, 0,
                                          K_POLL, op_flags=POLLOUT,
                                          flags=out.sqe_flags | SQE_IO_LINK)
                            prep_write()
                        else:
                            raise WriteError.of(error(res))
                    # K_POLL: the linked request that follows does the work
            failure = os.strerror(ra.failure) if ra.failure else None
            if failure is None and ra.taken == 0 and not ra.positional \
                    and stat.S_ISREG(inp.st.st_mode):
                # A file claiming size 0 that the ring read as empty: some
                # FUSE files answer io_uring with 0 bytes and read(2) with data.
                return self._confirm_empty(inp.fd)
            if ra.positional and not inp.owned:
                # leave a shared stdin where we stopped, as read(2) would
                os.lseek(inp.fd, ra.start + ra.taken, os.SEEK_SET)
            return failure
        finally:
            if ra.reads or w_busy:
                # Only an exception (Ctrl-C, SIGTERM, a write error) leaves
                # requests in flight. Waiting for them could block forever (a
                # read from a FIFO nobody writes to): abandon the ring instead.
                self._abandon(w_keep)
            else:
                ring.detach_file(src)

    def _fix_position(self, before: int, written: int) -> None:
        """After a short write at the file position: make sure it moved.

        A write that comes up short because the disk filled up leaves the
        position where the write began (seen on 6.18 tmpfs): the rest would
        then overwrite the bytes just written and "succeed" instead of
        meeting ENOSPC. If the position is still where our write began,
        move it past the bytes written; if another process moved it, leave
        it (writes at the shared position, as write(2)).
        """
        fd = self.out.fd
        if os.lseek(fd, 0, os.SEEK_CUR) == before:
            os.lseek(fd, before + written, os.SEEK_SET)
            self.stats.count("position_fixups")

    def _confirm_empty(self, fd: int) -> Optional[str]:
        try:
            first = os.read(fd, self.block_size)
        except OSError as exc:
            return _reason(exc)
        self.stats.count_syscall("read")
        if not first:
            return None
        self.stats.bytes_read += len(first)
        return self.sync.copy_rest(fd, first)

    @staticmethod
    def _cbuf(data: bytes) -> Tuple[Any, int]:
        from ._uring import ffi
        cdata = ffi.from_buffer(data)
        return (cdata, int(ffi.cast("uintptr_t", cdata)))

    def _abandon(self, keep: Optional[object]) -> None:
        """Close the ring with requests still in flight (after an exception).

        The kernel cancels them on its own time, so the memory they point
        into (the arena, a formatted write buffer) stays referenced until the
        process exits; this copier cannot be used again.
        """
        _ABANDONED.append((self.arena, keep))
        self.ring.close()
